"""The run folder the benchmarks build from: K random ViT checkpoints and a loss log.

`make_run(folder, checkpoints)` writes what `explorer finetune` would: `checkpoint-<step>/`
folders (config, weights, image processor, trainer_state.json) every STEPS_PER_CHECKPOINT
steps, and `log.csv`. The weights are random: embedding them costs what trained ones do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# A 6-layer, 192-wide ViT at 32 px in 4 px patches: 64 tokens, ViT-Tiny's width.
VIT = dict(
    image_size=32,
    patch_size=4,
    num_channels=3,
    hidden_size=192,
    num_hidden_layers=6,
    num_attention_heads=3,
    intermediate_size=768,
)
STEPS_PER_CHECKPOINT = 50


def make_run(
    folder: Path,
    checkpoints: int,
    classes: int | None = None,
    seed: int = 0,
    vit: dict | None = None,
) -> Path:
    """Write the run folder `folder` with `checkpoints` checkpoints; return it.

    classes: None for backbones without a head (ViTModel), else ViTForImageClassification with
    that many classes (then build also computes predictions and label quality).
    vit: the ViTConfig settings (default VIT); its image_size is the processor's size too.
    """
    vit = VIT if vit is None else vit
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

    folder.mkdir(parents=True)
    last_step = STEPS_PER_CHECKPOINT * (checkpoints - 1)
    config = ViTConfig(**vit, **({} if classes is None else {"num_labels": classes}))
    architecture = ViTModel if classes is None else ViTForImageClassification
    for i in range(checkpoints):
        step = STEPS_PER_CHECKPOINT * i
        torch.manual_seed(seed + i)
        path = folder / f"checkpoint-{step}"
        architecture(config).save_pretrained(path)
        size = vit["image_size"]
        ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(path)
        epoch = step / max(last_step, 1)
        (path / "trainer_state.json").write_text(json.dumps({"epoch": epoch, "global_step": step}))
    rows = ["step,epoch,loss,learning_rate,eval_loss,eval_accuracy"]
    for step in range(10, last_step + 1, 10):
        rows.append(
            f"{step},{step / max(last_step, 1):.4f},{2.3 * np.exp(-step / 80) + 0.3:.4f},5e-05,,"
        )
    (folder / "log.csv").write_text("\n".join(rows) + "\n")
    return folder
