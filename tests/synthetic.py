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

# What `write_synthetic_out(findings=True, image_dynamics=True)` plants (rows of OUT/default;
# it needs n_images >= 32). Every other row is unremarkable: outlier_score above 0.5, no
# duplicate, no leak, no label issue, learned, forgotten at most once.
PLANTED_OUTLIERS = {3: 0.2, 17: 0.05, 29: 0.45, 30: 0.4}  # row: outlier_score
PLANTED_LEAKS = {8: 0.01, 21: 0.0}  # row: nn_reference_distance
PLANTED_DUPLICATES = {0: [10, 11], 1: [12, 13, 14]}  # duplicate_group: rows
PLANTED_LABEL_ISSUES = {1: (2, 0.05), 5: (2, 0.01), 2: (3, 0.02)}  # row: (pred, quality)
PLANTED_NEVER_LEARNED = {7: 0.1, 19: 0.05}  # row: confidence (correctness 0)
PLANTED_FORGOTTEN = {4: 3, 9: 2, 15: 2}  # row: forgetting_events


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
    dynamics: bool = False,
    findings: bool = False,
    image_dynamics: bool = False,
) -> Path:
    """Write OUT/default, OUT/timeline, OUT/training_log and OUT/run.json; return `out`.

    `steps=()` writes no timeline and no training log (a two-model build). `dynamics=True`
    adds issue 16's timeline columns and OUT/checkpoints (see `_add_dynamics`).
    `findings=True` adds issue 15's columns of OUT/default (outlier_score, is_outlier,
    duplicates, leaks) and, with labels, makes the label issues exactly PLANTED_LABEL_ISSUES;
    `image_dynamics=True` adds issue 16's (movement and, with labels, the data map and
    forgetting): the PLANTED_* values above (see `_planted`).
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
    if findings or image_dynamics:
        planted = _planted(n_images, label, labels=labels, findings=findings, seed=seed)
        if not image_dynamics:
            planted = {name: value for name, value in planted.items() if name not in _DYNAMICS}
        if not findings:
            planted = {name: value for name, value in planted.items() if name in _DYNAMICS}
        columns.update({name: values for name, (values, _) in planted.items()})
        features.update({name: feature for name, (_, feature) in planted.items()})
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
        if dynamics:
            _add_dynamics(out, rows, timeline_features, steps, labels=labels, seed=seed)
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


_DYNAMICS = (
    "confidence", "variability", "correctness", "region", "forgetting_events", "learned_step",
    "movement",
)  # fmt: skip


def _planted(n: int, label: np.ndarray, *, labels: bool, findings: bool, seed: int) -> dict:
    """{column: (values, feature)} of the PLANTED_* columns, unremarkable values elsewhere
    (the label columns only with `labels`, and overridden only with `findings`). Their own
    random generator, so every other column is the same with or without them."""
    assert n >= 32, "the planted rows need n_images >= 32"
    rng = np.random.default_rng(seed + 2)
    f32, i64 = datasets.Value("float32"), datasets.Value("int64")
    score = rng.uniform(0.55, 1, n).astype(np.float32)
    score[list(PLANTED_OUTLIERS)] = list(PLANTED_OUTLIERS.values())
    group = np.full(n, -1, dtype=np.int64)
    for number, rows in PLANTED_DUPLICATES.items():
        group[rows] = number
    sizes = {number: len(rows) for number, rows in PLANTED_DUPLICATES.items()}
    distance = rng.uniform(0.2, 0.6, n).astype(np.float32)
    distance[list(PLANTED_LEAKS)] = list(PLANTED_LEAKS.values())
    planted = {
        "outlier_score": (score, f32),
        "is_outlier": (score < 0.5, datasets.Value("bool")),
        "duplicate_group": (group, i64),
        "duplicate_count": (np.array([sizes.get(g, 1) - 1 for g in group]), i64),
        "nn_reference_id": (rng.permutation(n), i64),
        "nn_reference_distance": (distance, f32),
        "is_leak": (np.isin(np.arange(n), list(PLANTED_LEAKS)), datasets.Value("bool")),
        "movement": (rng.uniform(0, 1, n).astype(np.float32), f32),
    }
    if not labels:
        return planted
    if findings:  # exactly the planted label issues
        pred, quality = label.copy(), rng.uniform(0.3, 1, n).astype(np.float32)
        for row, (predicted, low) in PLANTED_LABEL_ISSUES.items():
            pred[row], quality[row] = predicted, low
        planted |= {
            "pred_label": (pred, datasets.ClassLabel(names=CLASS_NAMES)),
            "label_quality": (quality, f32),
            "is_label_issue": (pred != label, datasets.Value("bool")),
        }
    correctness = rng.choice([0.5, 0.75, 1.0], n).astype(np.float32)
    confidence = rng.uniform(0.4, 1, n).astype(np.float32)
    correctness[list(PLANTED_NEVER_LEARNED)] = 0
    confidence[list(PLANTED_NEVER_LEARNED)] = list(PLANTED_NEVER_LEARNED.values())
    events = rng.integers(0, 2, n)
    events[list(PLANTED_FORGOTTEN)] = list(PLANTED_FORGOTTEN.values())
    learned = np.where(correctness == 1, 0, 10).astype(np.float32)
    learned[list(PLANTED_NEVER_LEARNED)] = np.nan
    variability = rng.uniform(0, 0.4, n).astype(np.float32)
    region = np.where(variability > 0.25, "ambiguous", np.where(confidence >= 0.5, "easy", "hard"))
    return planted | {
        "confidence": (confidence, f32),
        "variability": (variability, f32),
        "correctness": (correctness, f32),
        "region": (region.tolist(), datasets.Value("string")),
        "forgetting_events": (events, i64),
        "learned_step": (learned, f32),
    }


def _add_dynamics(
    out: Path, rows: list[dict], features: dict, steps: tuple[int, ...], *, labels: bool, seed: int
) -> None:
    """Add the timeline's `movement` (NaN at the first checkpoint; tenths, so many ties) and,
    with labels, `label_quality` to `rows` and `features`, and write OUT/checkpoints with
    known curves: accuracy = linspace(0.25, 0.95) over the checkpoints, knn_accuracy =
    0.9 - 0.4 * 0.5**k (both only with labels). Drawn from their own generator, so every other
    value is that of an OUT without dynamics."""
    rng = np.random.default_rng(seed + 1)
    for entry in rows:
        first = entry["step"] == steps[0]
        entry["movement"] = float("nan") if first else float(rng.integers(0, 11) / 10)
        if labels:
            entry["label_quality"] = float(rng.uniform(0, 1))
    features["movement"] = datasets.Value("float32")
    if labels:
        features["label_quality"] = datasets.Value("float32")

    n, k = len(steps), np.arange(len(steps))
    at_step = [[entry for entry in rows if entry["step"] == step] for step in steps]
    table = {
        "step": np.asarray(steps, dtype=np.int64),
        "epoch": (np.asarray(steps) / 20).astype(np.float32),
        "loss": [2.0 * np.exp(-step / 8) + 0.1 if step else np.nan for step in steps],
        "mean_outlier_score": [np.mean([e["outlier_score"] for e in a]) for a in at_step],
        "outliers": [sum(e["outlier_score"] < 0.1 for e in a) for a in at_step],
        "movement": [np.mean([e["movement"] for e in a]) for a in at_step],
    }
    types = {"step": "int64", "outliers": "int64"}
    if labels:
        table["accuracy"] = np.linspace(0.25, 0.95, n)
        table["per_class_accuracy"] = np.tile(table["accuracy"][:, None], len(CLASS_NAMES))
        table["knn_accuracy"] = 0.9 - 0.4 * 0.5**k
        table["class_separation"] = np.linspace(-0.1, 0.6, n)
        table["label_issues"] = [sum(e["label_quality"] < 0.1 for e in a) for a in at_step]
        types["label_issues"] = "int64"
    checkpoint_features = {
        name: datasets.Value(types.get(name, "float32"))
        if name != "per_class_accuracy"
        else datasets.List(datasets.Value("float32"), length=len(CLASS_NAMES))
        for name in table
    }
    checkpoints = datasets.Dataset.from_dict(
        {name: np.asarray(values).tolist() for name, values in table.items()},
        features=datasets.Features(checkpoint_features),
    )
    checkpoints.save_to_disk(out / "checkpoints")
