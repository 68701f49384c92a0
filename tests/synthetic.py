"""A small enriched OUT folder with the exact schema of `explorer build`, made without models.

Used by tests of the later stages (Spotlight, animation, publishing) so that they run in
seconds; the pipeline's own tests build a real OUT from tiny models.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

CLASS_NAMES = ["zero", "one", "two", "three"]


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    pixels = rng.integers(0, 60, size=(16, 16, 3), dtype=np.uint8)
    pixels[:, :, label % 3] += 120  # each class has its own tint
    return Image.fromarray(pixels)


def write_synthetic_out(
    out: Path,
    n_images: int = 40,
    steps: tuple[int, ...] = (0, 10, 20),
    labels: bool = True,
    dim: int = 8,
    seed: int = 0,
) -> Path:
    """Write OUT/default, OUT/timeline, OUT/training_log and OUT/run.json; return `out`.

    `steps=()` writes no timeline and no training log (a two-model build).
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    n_classes = len(CLASS_NAMES)
    label = np.arange(n_images) % n_classes
    images = [_image(rng, int(y)) for y in label]
    nn_id = (np.arange(n_images) + 1) % n_images
    xy = rng.normal(size=(8, n_images)).astype(np.float32)
    columns = {
        "image": images,
        "embedding_foundation": rng.normal(size=(n_images, dim)).astype(np.float32).tolist(),
        "embedding_ft": rng.normal(size=(n_images, dim)).astype(np.float32).tolist(),
        "outlier_score_found": rng.uniform(0.05, 1, n_images).astype(np.float32),
        "outlier_score_ft": rng.uniform(0.05, 1, n_images).astype(np.float32),
        "nn_id": nn_id,
        "nn_image": [images[i] for i in nn_id],
        "nn_distance": rng.uniform(0, 0.5, n_images).astype(np.float32),
    }
    columns["nn_flag"] = columns["nn_distance"] < 0.3
    for i, name in enumerate(
        ["umap_found_x", "umap_found_y", "umap_ft_x", "umap_ft_y"]
        + ["pca_found_x", "pca_found_y", "pca_ft_x", "pca_ft_y"]
    ):
        columns[name] = xy[i]
    features = {
        "image": datasets.Image(),
        "embedding_foundation": datasets.List(datasets.Value("float32"), length=dim),
        "embedding_ft": datasets.List(datasets.Value("float32"), length=dim),
        "outlier_score_found": datasets.Value("float32"),
        "outlier_score_ft": datasets.Value("float32"),
        "nn_id": datasets.Value("int64"),
        "nn_image": datasets.Image(),
        "nn_distance": datasets.Value("float32"),
        "nn_flag": datasets.Value("bool"),
        **{name: datasets.Value("float32") for name in list(columns)[9:] if name != "nn_flag"},
    }
    if labels:
        class_label = datasets.ClassLabel(names=CLASS_NAMES)
        pred = np.where(rng.uniform(size=n_images) < 0.8, label, (label + 1) % n_classes)
        columns = {
            "image": columns.pop("image"),
            "label": label,
            "label_str": [CLASS_NAMES[y] for y in label],
            **columns,
            "pred_label": pred,
            "pred_prob": rng.uniform(0.3, 1, n_images).astype(np.float32),
            "label_quality": rng.uniform(0, 1, n_images).astype(np.float32),
            "is_label_issue": pred != label,
        }
        features = {
            "image": features.pop("image"),
            "label": class_label,
            "label_str": datasets.Value("string"),
            **features,
            "pred_label": class_label,
            "pred_prob": datasets.Value("float32"),
            "label_quality": datasets.Value("float32"),
            "is_label_issue": datasets.Value("bool"),
        }
    default = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    default.save_to_disk(out / "default")

    checkpoints = []
    if steps:
        rows = []
        for k, step in enumerate(steps):
            spread = 1 + k  # classes drift apart as training goes on
            for row in range(n_images):
                centre = spread * np.array([np.cos(label[row]), np.sin(label[row])])
                x, y = centre + rng.normal(scale=0.3, size=2)
                u, v = centre + rng.normal(scale=0.3, size=2)
                rows.append(
                    {
                        "row": row,
                        "step": step,
                        "epoch": step / 20,
                        "pca_x": x,
                        "pca_y": y,
                        "umap_x": u,
                        "umap_y": v,
                        "outlier_score": float(rng.uniform(0.05, 1)),
                        "nn_id": int((row + 1) % n_images),
                        "nn_distance": float(rng.uniform(0, 0.5)),
                        **({"pred_label": int(label[row])} if labels else {}),
                    }
                )
            checkpoints.append({"name": f"checkpoint-{step}", "step": step, "epoch": step / 20})
        timeline_features = {
            "row": datasets.Value("int64"),
            "step": datasets.Value("int64"),
            "epoch": datasets.Value("float32"),
            **{
                name: datasets.Value("float32")
                for name in ["pca_x", "pca_y", "umap_x", "umap_y", "outlier_score"]
            },
            "nn_id": datasets.Value("int64"),
            "nn_distance": datasets.Value("float32"),
        }
        if labels:
            timeline_features["pred_label"] = datasets.ClassLabel(names=CLASS_NAMES)
        timeline = datasets.Dataset.from_list(rows, features=datasets.Features(timeline_features))
        timeline.save_to_disk(out / "timeline")
        log_steps = np.arange(1, max(steps) + 1)
        log = {
            "step": log_steps,
            "epoch": (log_steps / 20).astype(np.float32),
            "loss": (2.0 * np.exp(-log_steps / 8) + 0.1).astype(np.float32),
            "learning_rate": np.full(len(log_steps), 1e-3, dtype=np.float32),
            "eval_loss": np.full(len(log_steps), np.nan, dtype=np.float32),
            "eval_accuracy": np.full(len(log_steps), np.nan, dtype=np.float32),
        }
        datasets.Dataset.from_dict(log).save_to_disk(out / "training_log")

    run = {
        "explorer_version": "synthetic",
        "dataset": {"source": "synthetic", "split": "test", "num_rows": n_images},
        "models": {
            "foundation": {"name": "synthetic-foundation", "pooling": "cls"},
            "finetuned": {"name": "synthetic-finetuned", "pooling": "cls"},
        },
        "checkpoints": checkpoints,
        "parameters": {"k": 10, "neighbors": "exact", "nn_threshold": 0.3},
        "timings": {},
        "versions": {"datasets": datasets.__version__},
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))
    return out
