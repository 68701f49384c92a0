"""Do the outlier scores find what a person would call an outlier? AUROC on planted outliers.

Takes digits' test split and plants images a person would flag: Fashion-MNIST images (another
domain; when Debian's dataset-fashion-mnist is installed), uniform noise, and upside-down
digits. Builds with the first and the last checkpoint of a run (default: the demo's) and
prints the AUROC of each score at ranking the planted images lowest, per kind of outlier,
beside cleanlab's default (`OutOfDistribution().fit_score`) on the raw embeddings and on raw
pixels.

    python benchmarks/planted_outliers.py [--run explorer-demo/run] [--per-kind 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import datasets
import numpy as np
from cleanlab.outlier import OutOfDistribution
from PIL import Image, ImageOps
from sklearn.metrics import roc_auc_score

from explorer import build, data
from explorer.runs import list_checkpoints

RESULTS = Path(__file__).parent / "results"


def planted_dataset(per_kind: int, seed: int = 0) -> tuple[datasets.Dataset, np.ndarray]:
    """digits test + planted images; returns (dataset, kind per row: "" for the originals)."""
    rng = np.random.default_rng(seed)
    digits = data.load("digits", split="test")
    images = list(digits["image"])
    labels = list(digits["label"])
    kinds = [""] * len(images)
    fashion = data.read_fashion_mnist().get("test")
    if fashion is not None:
        for row in rng.choice(len(fashion[0]), per_kind, replace=False):
            images.append(Image.fromarray(fashion[0][int(row)]))
            kinds.append("fashion-mnist")
    for _ in range(per_kind):
        images.append(Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)))
        kinds.append("noise")
    for row in rng.choice(len(digits), per_kind, replace=False):
        images.append(ImageOps.flip(digits[int(row)]["image"]))
        kinds.append("upside-down")
    labels += list(rng.integers(0, 10, len(images) - len(labels)))
    features = datasets.Features({"image": datasets.Image(), "label": digits.features["label"]})
    table = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    return table, np.array(kinds)


def auroc(is_planted: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(is_planted, -score))  # low score = outlier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("explorer-demo/run"))
    parser.add_argument("--per-kind", type=int, default=20)
    args = parser.parse_args()
    checkpoints = list_checkpoints(args.run)
    table, kinds = planted_dataset(args.per_kind)
    with tempfile.TemporaryDirectory() as folder:
        table.save_to_disk(f"{folder}/planted")
        enriched = build(
            f"{folder}/planted",
            foundation=checkpoints[0].path,
            finetuned=checkpoints[-1].path,
            out=f"{folder}/out",
            progress=False,
        )
    pixels = np.stack(
        [np.asarray(image.convert("L").resize((8, 8))).ravel() for image in enriched["image"]]
    ).astype(np.float32)
    scores = {
        "outlier_score_ft": np.array(enriched["outlier_score_ft"]),
        "outlier_score_found": np.array(enriched["outlier_score_found"]),
        "cleanlab default, raw fine-tuned embeddings": OutOfDistribution().fit_score(
            features=np.array(enriched["embedding_ft"], dtype=np.float32)
        ),
        "cleanlab default, raw pixels": OutOfDistribution().fit_score(features=pixels),
    }
    results = {"run": str(args.run), "images": len(kinds), "per_kind": args.per_kind}
    kind_names = sorted(set(kinds) - {""})
    header = f"{'score':46s} {'all':>6s} " + " ".join(f"{k:>13s}" for k in kind_names)
    print(header)
    for name, score in scores.items():
        row = {"all": auroc(kinds != "", score)}
        for kind in kind_names:
            keep = (kinds == "") | (kinds == kind)
            row[kind] = auroc(kinds[keep] == kind, score[keep])
        results[name] = row
        print(f"{name:46s} {row['all']:6.3f} " + " ".join(f"{row[k]:13.3f}" for k in kind_names))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "planted_outliers.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
