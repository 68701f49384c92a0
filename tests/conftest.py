"""Shared fixtures: tiny image models built from configs and saved like Hub checkpoints.

Nothing is downloaded: each model is `SomeConfig(...)` + `save_pretrained(folder)` with its
image processor beside it, and loads through the same `from_pretrained(folder)` path as a Hub id.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("SPOTLIGHT_OPT_OUT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DIGIT_NAMES = [str(i) for i in range(10)]


def tiny_model(kind: str, folder: Path, num_labels: int | None = None, seed: int = 0) -> Path:
    """Save a tiny `kind` model (vit, deit, beit, swin, convnext, resnet) with its processor.

    With `num_labels`, the model has an image-classification head labelled "0".."N-1".
    """
    import transformers as tf

    torch.manual_seed(seed)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "image_size": 32, "patch_size": 8}  # fmt: skip
    configs = {
        "vit": (tf.ViTConfig, small, tf.ViTImageProcessor, {"size": {"height": 32, "width": 32}}),
        "deit": (tf.DeiTConfig, small, tf.DeiTImageProcessor,
                 {"size": {"height": 36, "width": 36}, "crop_size": {"height": 32, "width": 32}}),
        "beit": (tf.BeitConfig, {**small, "use_mean_pooling": True}, tf.BeitImageProcessor,
                 {"size": {"height": 32, "width": 32}, "do_center_crop": False}),
        "swin": (tf.SwinConfig, {"image_size": 32, "patch_size": 4, "embed_dim": 16,
                                 "depths": [1, 1], "num_heads": [2, 2], "window_size": 4},
                 tf.ViTImageProcessor, {"size": {"height": 32, "width": 32}}),
        "convnext": (tf.ConvNextConfig, {"hidden_sizes": [8, 16], "depths": [1, 1],
                                         "num_stages": 2, "image_size": 32},
                     tf.ConvNextImageProcessor, {"size": {"shortest_edge": 32}}),
        "resnet": (tf.ResNetConfig, {"embedding_size": 8, "hidden_sizes": [8, 16],
                                     "depths": [1, 1], "layer_type": "basic"},
                   tf.ConvNextImageProcessor, {"size": {"shortest_edge": 32}}),
    }  # fmt: skip
    config_class, config_kwargs, processor_class, processor_kwargs = configs[kind]
    if num_labels:
        config_kwargs = {**config_kwargs, "num_labels": num_labels,
                         "id2label": {i: str(i) for i in range(num_labels)},
                         "label2id": {str(i): i for i in range(num_labels)}}  # fmt: skip
    config = config_class(**config_kwargs)
    prefix = config_class.__name__.removesuffix("Config")
    model = getattr(tf, f"{prefix}ForImageClassification" if num_labels else f"{prefix}Model")(
        config
    )
    model.save_pretrained(folder)
    processor_class(**processor_kwargs).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A ViT foundation (no head) and a fine-tuned ViT with a 10-class head."""
    root = tmp_path_factory.mktemp("models")
    return {
        "foundation": tiny_model("vit", root / "foundation", seed=0),
        "finetuned": tiny_model("vit", root / "finetuned", num_labels=10, seed=1),
    }
