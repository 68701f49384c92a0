"""Does the review find what was planted? Outliers, near-duplicates and leaks on Fashion-MNIST.

A model is fine-tuned on Fashion-MNIST train with `explorer finetune` (tiny-vit from scratch,
`--epochs 2`, every training image; the untouched checkpoint-0 is the foundation view, random
weights, since nothing can be downloaded here; with `--model tiny-vit-28-simclr` it is a
foundation pretrained here without labels, `simclr.py`, and fine-tuned from;
`tiny-vit-28-simclr-large`, `-xl` and `-xxl` are larger ones, pretrained the same way). Then, per
planting, a sample of Fashion-MNIST test gets planted into it, each kind *as a cluster* of
`--per-kind` images:

- outliers: another dataset (scikit-learn's digits, upscaled), uniform noise, corrupted images
  (black and white blocks pasted over), inverted images; the second planting holds out blocks
  and adds blurred and upside-down images instead, and uses another seed and other test images;
  the third holds out all of those, with patches of photos (another dataset), washed-out
  (low-contrast), rotated and pixelated images: kinds added after explorer's scores were
  designed, to see whether they hold on what they were not made for;
- near-duplicates: test images copied pixel for pixel, and copied with a mild edit (JPEG at
  quality 90, 5 % brighter, 5 % less contrast or a little Gaussian noise: edits the threshold's
  calibration never saw);
- leaks: training images copied into the test split, pixel for pixel or with a mild edit.

`explorer build --run RUN` then scores the planted split against the run's training data (the
default reference; `--reference-limit 60000` takes all of it, which leak detection needs: a
leaked image is found only if the reference holds it). Reported side by side: the seeds'
self-referential score (cleanlab `fit_score` within the set) for each view, each view against
the reference (`outlier_score_found`, `outlier_score_ft`, `outlier_score_pixels`) and the
combined `outlier_score`:
AUROC and recall at K (K = the number planted) per kind and overall; `is_outlier`'s recall and
false-positive rate; duplicates and leaks found (precision and recall, over images), against
the planted copies and against those with Fashion-MNIST's own (`duplicate_report`).

`--cost` also measures what the reference costs in build time: whole `explorer build --run`
processes on `--cost-images` test images, with the default reference against
`--reference none`, `--repeats` times each, taking turns, with the embeddings cached on both
sides (a first build of each fills the caches).

    python benchmarks/planted_outliers.py [--model tiny-vit|tiny-vit-28|tiny-vit-28-simclr|
        tiny-vit-28-simclr-large|tiny-vit-28-simclr-xl|tiny-vit-28-simclr-xxl] [--run RUN] [--cost]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import simclr
import torch
from cleanlab.outlier import OutOfDistribution
from PIL import Image, ImageEnhance, ImageFilter
from sklearn.datasets import load_digits, load_sample_images
from sklearn.metrics import roc_auc_score

from explorer import build, data, output
from explorer.finetune import SCRATCH_LR, tiny_vit

RESULTS = Path(__file__).parent / "results"
COPIES = Path(__file__).parent / "fashion_mnist_copies.json"  # leaks in the data, judged by eye
OUTLIER_KINDS = {  # planting -> outlier kinds; B holds out blocks and brings two new kinds
    "A": ("digits", "noise", "blocks", "inverted"),
    "B": ("digits", "noise", "inverted", "blur", "upside-down"),
    # C: kinds none of explorer's scores was designed or checked on (added with the pixel view)
    "C": ("photo patches", "low contrast", "rotated", "pixelated"),
}
SEEDS = {"A": 0, "B": 1, "C": 2}
# model -> simclr.SIZES' name of the foundation it is fine-tuned from (pretrained by simclr.py)
FOUNDATIONS = {
    "tiny-vit-28-simclr": "small",
    "tiny-vit-28-simclr-large": "large",
    "tiny-vit-28-simclr-xl": "xl",
    "tiny-vit-28-simclr-xxl": "xxl",
}
MILD_EDITS = ("jpeg90", "brighter", "contrast", "noise")


# ---------------------------------------------------------------------------------------------
# Planting
# ---------------------------------------------------------------------------------------------


def outlier_images(kind: str, count: int, rng, spare: np.ndarray) -> list[np.ndarray]:
    """`count` 28x28 uint8 images of one outlier kind; `spare`: test images not in the sample."""
    if kind == "digits":
        digits = load_digits().images
        rows = rng.choice(len(digits), count, replace=False)
        return [_resized(np.round(digits[r] * 255 / 16).astype(np.uint8)) for r in rows]
    if kind == "noise":
        return [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(count)]
    if kind == "photo patches":  # another dataset: 112 px crops of scikit-learn's two photos
        photos = [np.asarray(Image.fromarray(p).convert("L")) for p in load_sample_images().images]
        out = []
        for _ in range(count):
            photo = photos[rng.integers(len(photos))]
            y, x = rng.integers(0, photo.shape[0] - 112), rng.integers(0, photo.shape[1] - 112)
            out.append(_resized(photo[y : y + 112, x : x + 112]))
        return out
    originals = spare[rng.choice(len(spare), count, replace=False)]
    if kind == "inverted":
        return [255 - image for image in originals]
    if kind == "low contrast":  # washed out: 0..255 squeezed into 96..160
        return [(96 + image.astype(np.uint16) * 64 // 255).astype(np.uint8) for image in originals]
    if kind == "rotated":
        return [np.rot90(image).copy() for image in originals]
    if kind == "pixelated":  # 7 x 7 blocks, scaled back up without smoothing
        small = [Image.fromarray(image).resize((7, 7), Image.BOX) for image in originals]
        return [np.asarray(image.resize((28, 28), Image.NEAREST)) for image in small]
    if kind == "upside-down":
        return [image[::-1].copy() for image in originals]
    if kind == "blur":
        blurred = ImageFilter.GaussianBlur(2)
        return [np.asarray(Image.fromarray(image).filter(blurred)) for image in originals]
    if kind == "blocks":
        out = []
        for image in originals:
            image = image.copy()
            for _ in range(3):
                h, w = rng.integers(6, 13, 2)
                y, x = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
                image[y : y + h, x : x + w] = rng.choice([0, 255])
            out.append(image)
        return out
    raise ValueError(kind)


def mild_edit(image: np.ndarray, edit: str, rng) -> np.ndarray:
    """A near-duplicate as people make them, but none of the calibration's own edits."""
    pil = Image.fromarray(image)
    if edit == "jpeg90":
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=90)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))
    if edit == "brighter":
        return np.asarray(ImageEnhance.Brightness(pil).enhance(1.05))
    if edit == "contrast":
        return np.asarray(ImageEnhance.Contrast(pil).enhance(0.95))
    noisy = image.astype(np.float64) + rng.normal(0, 3, image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _resized(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((28, 28), Image.BILINEAR))


def plant(planting: str, n_test: int, per_kind: int) -> tuple[datasets.Dataset, dict]:
    """A sample of Fashion-MNIST test with the planted images appended. Returns the dataset
    and the truth: kind per row ("" for the sample), duplicate pairs, leaked rows, and the
    sample's rows in Fashion-MNIST test."""
    rng = np.random.default_rng(SEEDS[planting])
    fashion = data.read_fashion_mnist()
    test_images, test_labels = fashion["test"]
    train_images, train_labels = fashion["train"]
    sample = rng.choice(len(test_images), n_test, replace=False)
    spare = np.setdiff1d(np.arange(len(test_images)), sample)
    images = list(test_images[sample])
    labels = list(test_labels[sample])
    kinds = [""] * n_test
    for kind in OUTLIER_KINDS[planting]:
        images += outlier_images(kind, per_kind, rng, test_images[spare])
        labels += list(rng.integers(0, 10, per_kind))
        kinds += [kind] * per_kind
    pairs = []  # (original row, copy row)
    for position, row in enumerate(rng.choice(n_test, per_kind, replace=False)):
        near = position >= per_kind // 2
        edit = MILD_EDITS[position % len(MILD_EDITS)]
        images.append(mild_edit(images[row], edit, rng) if near else images[row].copy())
        labels.append(labels[row])
        kinds.append("near-duplicate" if near else "exact duplicate")
        pairs.append((int(row), len(images) - 1))
    leaked = []  # (row, training row)
    for position, row in enumerate(rng.choice(len(train_images), per_kind, replace=False)):
        near = position >= per_kind // 2
        edit = MILD_EDITS[position % len(MILD_EDITS)]
        image = train_images[row]
        images.append(mild_edit(image, edit, rng) if near else image.copy())
        labels.append(int(train_labels[row]))
        kinds.append("near leak" if near else "exact leak")
        leaked.append((len(images) - 1, int(row)))
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=data.FASHION_MNIST_CLASSES)}
    )
    table = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image) for image in images], "label": [int(y) for y in labels]},
        features=features,
    )
    truth = {"kinds": np.array(kinds), "pairs": pairs, "leaked": leaked, "test_rows": sample}
    return table, truth


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def ranking(is_planted: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUROC of ranking the planted lowest, and recall at K = the number planted."""
    k = int(is_planted.sum())
    lowest = np.argsort(score, kind="stable")[:k]
    return {
        "auroc": float(roc_auc_score(is_planted, -score)),
        f"recall_at_{k}": float(is_planted[lowest].mean()),
    }


def outlier_report(table: datasets.Dataset, kinds: np.ndarray, planting: str) -> dict:
    found = np.array(table["embedding_foundation"], dtype=np.float64)
    ft = np.array(table["embedding_ft"], dtype=np.float64)
    scores = {
        "seed: within the set, fine-tuned": OutOfDistribution().fit_score(features=ft),
        "within the set, foundation": OutOfDistribution().fit_score(features=found),
        "outlier_score_found (vs reference)": np.array(table["outlier_score_found"]),
        "outlier_score_ft (vs reference)": np.array(table["outlier_score_ft"]),
        "outlier_score_pixels (vs reference)": np.array(table["outlier_score_pixels"]),
        "outlier_score (combined)": np.array(table["outlier_score"]),
    }
    is_outlier_kind = np.isin(kinds, OUTLIER_KINDS[planting])
    report = {}
    for name, score in scores.items():
        row = {"all": ranking(is_outlier_kind, score)}
        for kind in OUTLIER_KINDS[planting]:
            keep = ~is_outlier_kind | (kinds == kind)
            row[kind] = ranking(kinds[keep] == kind, score[keep])
        report[name] = row
    flagged = np.array(table["is_outlier"])
    report["is_outlier"] = {
        "recall": float(flagged[is_outlier_kind].mean()),
        "recall_per_kind": {k: float(flagged[kinds == k].mean()) for k in OUTLIER_KINDS[planting]},
        "flagged_among_the_rest": float(flagged[~is_outlier_kind].mean()),
        "precision": float(is_outlier_kind[flagged].mean()) if flagged.any() else None,
    }
    return report


def duplicate_report(table: datasets.Dataset, truth: dict) -> dict:
    """Duplicates and leaks found, against two truths.

    `planted`: the planted copies only. `planted and natural`: also the copies Fashion-MNIST
    holds of its own among the sampled test images (of each other, or of training images),
    known two ways, neither of them explorer's embeddings or thresholds: by pixels, an image
    whose nearest image (brute force over all of the training split, or over the other
    reviewed images) is no farther by `_difference` than the planted near-copies are from
    their originals; and by eye, the test images `fashion_mnist_copies.json` lists. Each truth
    gets precision and recall (a planted duplicate of a natural copy counts as a leak too);
    what was found beyond the planted is listed with its `_difference` for a reader to judge.
    """
    group = np.array(table["duplicate_group"])
    leak = np.array(table["is_leak"])
    nearest = np.array(table["nn_reference_id"])
    pixels = np.stack([np.asarray(image.convert("L"), np.float64) for image in table["image"]])
    training = data.read_fashion_mnist()["train"][0].astype(np.float64)
    planted = np.zeros(len(group), bool)
    for original, copy in truth["pairs"]:
        planted[[original, copy]] = True
    leaked = np.zeros(len(group), bool)
    leaked[[row for row, _ in truth["leaked"]]] = True
    together = [group[o] >= 0 and group[o] == group[c] for o, c in truth["pairs"]]
    # What "a copy" means here: as close as the planted near-copies are to their originals.
    limit = max(
        [_difference(pixels[c], pixels[o]) for o, c in truth["pairs"]]
        + [_difference(pixels[r], training[t]) for r, t in truth["leaked"]]
    )
    sampled = np.zeros(len(group), bool)
    sampled[: len(truth["test_rows"])] = True
    natural_duplicates = (_nearest_difference(pixels, pixels, own=True) <= limit) & sampled
    listed = [copy["test"] for copy in json.loads(COPIES.read_text())["copies"]]
    by_eye = np.zeros(len(group), bool)
    by_eye[: len(truth["test_rows"])] = np.isin(truth["test_rows"], listed)
    natural_leaks = ((_nearest_difference(pixels, training) <= limit) & sampled) | by_eye
    for original, copy in truth["pairs"]:  # a planted copy of a natural leak leaks too
        natural_leaks[copy] |= natural_leaks[original]
    extra_duplicates = np.flatnonzero((group >= 0) & ~planted)
    same_group = [
        np.flatnonzero((group == group[r]) & (np.arange(len(group)) != r)) for r in extra_duplicates
    ]
    extra_leaks = np.flatnonzero(leak & ~leaked)
    return {
        "copy_limit_grey_levels": round(float(limit), 2),  # by `_difference`
        "duplicates": _precision_recall(planted, group >= 0)
        | {
            "pairs_grouped_together": float(np.mean(together)),
            "natural": int((natural_duplicates & ~planted).sum()),
            "planted_and_natural": _precision_recall(planted | natural_duplicates, group >= 0),
            "unplanted_found_pixel_difference": [
                round(float(min(_difference(pixels[r], pixels[o]) for o in others)), 2)
                for r, others in zip(extra_duplicates, same_group, strict=True)
            ],
        },
        "leaks": _precision_recall(leaked, leak)
        | {
            "nn_reference_id_right": float(np.mean([nearest[r] == t for r, t in truth["leaked"]])),
            "natural": int((natural_leaks & ~leaked).sum()),
            "natural_by_eye": int(by_eye.sum()),
            "planted_and_natural": _precision_recall(leaked | natural_leaks, leak),
            "unplanted_found_pixel_difference": [
                round(float(_difference(pixels[r], training[nearest[r]])), 2) for r in extra_leaks
            ],
        },
    }


def _difference(image: np.ndarray, other: np.ndarray) -> float:
    """How far apart two (H, W) images are as copies, in grey levels: after shifting `other`
    by at most a pixel and mapping its grey levels linearly (least squares), the 99th
    percentile of the pixels' absolute differences, at the best shift. The planted mild edits
    stay at about 11; two photos of similar trousers differ by 20 to 100 around their edges,
    while a re-encoded copy one pixel off is 0 to 5 once aligned."""
    return float(min(_aligned(image[None], other[None], shift)[0] for shift in SHIFTS))


SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _aligned(images: np.ndarray, others: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """`_difference` of each image (N, H, W) to the same row of `others` at one shift."""
    dy, dx = shift
    height, width = images.shape[1:]
    target = images[:, 1:-1, 1:-1].reshape(len(images), -1).astype(np.float64)
    moved = others[:, 1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
    moved = moved.reshape(len(others), -1).astype(np.float64)
    centred = moved - moved.mean(axis=1, keepdims=True)
    slope = (centred * target).sum(axis=1) / np.maximum((centred**2).sum(axis=1), 1e-12)
    fitted = target.mean(axis=1, keepdims=True) + slope[:, None] * centred
    return np.quantile(np.abs(target - fitted), 0.99, axis=1)


def _nearest_difference(images: np.ndarray, others: np.ndarray, own: bool = False) -> np.ndarray:
    """Each image's `_difference` to its nearest copy among `others` (brute force: at each of
    the 9 shifts, the nearest by Euclidean distance; `own`: others is images, leave-one-out)."""
    height, width = images.shape[1:]
    flat = torch.as_tensor(images[:, 1:-1, 1:-1].reshape(len(images), -1), dtype=torch.float32)
    best = np.full(len(images), np.inf)
    for dy, dx in SHIFTS:
        moved = others[:, 1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
        base = torch.as_tensor(moved.reshape(len(others), -1), dtype=torch.float32)
        nearest = []
        for start in range(0, len(flat), 1024):
            distances = torch.cdist(flat[start : start + 1024], base)
            if own:
                rows = torch.arange(start, min(start + 1024, len(flat)))
                distances[rows - start, rows] = float("inf")
            nearest.append(distances.argmin(dim=1))
        found = others[torch.cat(nearest).numpy()]
        best = np.minimum(best, _aligned(images, found, (dy, dx)))
    return best


def _precision_recall(truth: np.ndarray, found: np.ndarray) -> dict:
    hits = int((truth & found).sum())
    return {
        "planted": int(truth.sum()),
        "found": int(found.sum()),
        "precision": hits / max(int(found.sum()), 1),
        "recall": hits / max(int(truth.sum()), 1),
    }


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def finetune_run(folder: Path, model: str, epochs: int) -> Path:
    """`explorer finetune` of `model` on all of Fashion-MNIST train: checkpoint-0 and the last.

    tiny-vit is explorer's own (16 px, 4 px patches); tiny-vit-28 is the same network at
    Fashion-MNIST's 28 px in 7 px patches (as many tokens), saved to a folder and trained from
    scratch at tiny-vit's learning rate; tiny-vit-28-simclr is tiny-vit-28 pretrained first,
    without labels, by `simclr.py`, so that checkpoint-0 is a foundation model rather than
    random weights; tiny-vit-28-simclr-large, -xl and -xxl the same with larger networks
    (`simclr.SIZES`).
    """
    run = folder / f"run-{model}"
    if (run / "explorer-run.json").exists():
        return run
    given = model
    if model == "tiny-vit-28":
        network, processor = tiny_vit(data.FASHION_MNIST_CLASSES, image_size=28, patch_size=7)
        given = str(folder / model)
        network.save_pretrained(given)
        processor.save_pretrained(given)
    if model in FOUNDATIONS:
        given = str(simclr.pretrain(folder / model, FOUNDATIONS[model]))
    subprocess.run(
        [sys.executable, "-m", "explorer", "finetune", "--dataset", "fashion-mnist",
         "--split", "train", "--model", given, "--out", str(run), "--epochs", str(epochs),
         "--lr", str(SCRATCH_LR), "--save-steps", "1000000", "--quiet"],
        check=True,
    )  # fmt: skip
    return run


def evaluate(planting: str, run: Path, args, folder: Path) -> dict:
    table, truth = plant(planting, args.test, args.per_kind)
    table.save_to_disk(str(folder / f"planted-{planting}"))
    out = folder / f"out-{run.name}-{planting}"
    start = time.perf_counter()
    if args.reuse and output.is_output(out):  # scored again as built before
        enriched = output.read(out).default
    else:
        enriched = build(
            str(folder / f"planted-{planting}"), run=run, out=out,
            reference_limit=args.reference_limit, overwrite=True, progress=False,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    record = json.loads((out / "run.json").read_text())
    if args.reuse:
        seconds = sum(record["timings"].values())  # the build's own, not the reading
    return {
        "images": enriched.num_rows,
        "kinds": {k: int((truth["kinds"] == k).sum()) for k in sorted(set(truth["kinds"]) - {""})},
        "build_seconds": round(seconds, 1),
        "reference": record["reference"],
        "review": record["review"],
        "outliers": outlier_report(enriched, truth["kinds"], planting),
        **duplicate_report(enriched, truth),
    }


def cost(run: Path, args, folder: Path) -> dict:
    """Seconds of whole `explorer build --run` processes with and without the reference."""
    command = [sys.executable, "-m", "explorer", "build", "--run", str(run), "--dataset",
               "fashion-mnist", "--limit", str(args.cost_images), "--overwrite",
               "--quiet"]  # fmt: skip
    sides = {
        "reference (default)": [],
        "reference none": ["--reference", "none"],
    }
    times: dict[str, list[float]] = {side: [] for side in sides}
    for extra in sides.values():  # fill the caches of both sides first
        subprocess.run([*command, "--out", str(folder / "cost"), *extra], check=True)
    for _ in range(args.repeats):
        for side, extra in sides.items():
            start = time.perf_counter()
            subprocess.run([*command, "--out", str(folder / "cost"), *extra], check=True)
            times[side].append(round(time.perf_counter() - start, 1))
    medians = {side: statistics.median(seconds) for side, seconds in times.items()}
    return {
        "images": args.cost_images,
        "embeddings": "cached on both sides",
        "seconds": times,
        "median_seconds": medians,
        "extra": medians["reference (default)"] / medians["reference none"] - 1,
    }


def _print(planting: str, result: dict) -> None:
    outliers = result["outliers"]
    kinds = OUTLIER_KINDS[planting]
    print(f"\nplanting {planting}: {result['images']} images, {result['kinds']}")
    print(f"{'score':38s} {'all':>13s} " + " ".join(f"{k:>13s}" for k in kinds))
    for name, row in outliers.items():
        if name == "is_outlier":
            continue
        cells = []
        for part in ("all", *kinds):
            auroc, recall = row[part].values()
            cells.append(f"{auroc:.3f}/{recall:.2f}")
        print(f"{name:38s} " + " ".join(f"{cell:>13s}" for cell in cells))
    print("is_outlier:", outliers["is_outlier"])
    print("duplicates:", result["duplicates"])
    print("leaks:", result["leaks"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=["tiny-vit", "tiny-vit-28", *FOUNDATIONS],
        default="tiny-vit",
        help="what `explorer finetune` trains (default: tiny-vit)",
    )
    parser.add_argument("--run", type=Path, help="a finetune run on fashion-mnist (default: made)")
    parser.add_argument("--epochs", type=int, default=2, help="of the run made (default: 2)")
    parser.add_argument("--test", type=int, default=3000, help="test images per planting")
    parser.add_argument("--per-kind", type=int, default=40, help="images per planted kind")
    parser.add_argument("--reference-limit", type=int, default=60000, help="(default: all)")
    parser.add_argument("--plantings", default="ABC", help="which plantings (default: ABC)")
    parser.add_argument("--cost", action="store_true", help="also measure the reference's cost")
    parser.add_argument("--cost-images", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--reuse", action="store_true", help="score the OUT folders already in --keep again"
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="planted-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "planted_outliers.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results = results if "models" in results else {"models": {}}  # an older layout: replaced
    try:
        run = args.run or finetune_run(folder, args.model, args.epochs)
        accuracy = _accuracy(run)
        model = results["models"].setdefault(args.model, {"plantings": {}})
        model["setup"] = {
            "run": str(run), "epochs": args.epochs, "test_accuracy_on_sample": accuracy,
            "test_images": args.test, "per_kind": args.per_kind,
            "reference_limit": args.reference_limit,
            "foundation": _foundation(args.model),
        }  # fmt: skip
        for planting in args.plantings:
            model["plantings"][planting] = evaluate(planting, run, args, folder)
            _print(planting, model["plantings"][planting])
        if args.cost:
            model["cost"] = cost(run, args, folder)
            print("\ncost:", model["cost"])
        RESULTS.mkdir(exist_ok=True)
        latest = json.loads(path.read_text()) if path.exists() else {}  # another run's since
        if "models" in latest:
            results["models"] = {**latest["models"], args.model: model}
        path.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def _foundation(model: str) -> str:
    """What the run's checkpoint-0 is, for the results."""
    if model not in FOUNDATIONS:
        return "checkpoint-0: untouched (random weights)"
    hidden, layers = simclr.SIZES[FOUNDATIONS[model]]
    return (
        f"checkpoint-0: pretrained by SimCLR without labels (simclr.py), {hidden} wide, "
        f"{layers} layers"
    )


def _accuracy(run: Path) -> float:
    """The last checkpoint's accuracy on 2,000 Fashion-MNIST test images (a stratified sample)."""
    from explorer import embed
    from explorer.runs import list_checkpoints

    last = list_checkpoints(run)[-1].path
    images = data.load("fashion-mnist", split="test", limit=2000)
    preprocessing = embed.Preprocessing.from_model(str(last))
    pixels = embed.prepare_pixels(images, preprocessing, progress=False)
    embedded = embed.embed_model(str(last), pixels, preprocessing, progress=False)
    return float((embedded.probabilities.argmax(1) == np.array(images["label"])).mean())


if __name__ == "__main__":
    main()
