"""How long `explorer.show` takes to open a 10,000-row enriched dataset in Spotlight.

Writes an OUT folder with the schema of `explorer build` (checked against
tests/synthetic.py's `write_synthetic_out`): 32x32 PNG images, two 768-dim float32
embedding columns, scores, neighbours, projections, a 3-checkpoint timeline. Columns are
made with numpy and pyarrow at once rather than row by row, so writing takes seconds.
Then it opens the dataset `--runs` times on a free port and prints the median time of
`show()` (it returns once the server has loaded the table) and of the first
`GET api/table/` (what the page asks for first), plus the server's memory.

    .venv/bin/python benchmarks/spotlight_open.py [--rows 10000] [--runs 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/synthetic.py: the schema to match

from synthetic import CLASS_NAMES, write_synthetic_out  # noqa: E402

from explorer.spotlight import show  # noqa: E402

os.environ.setdefault("SPOTLIGHT_OPT_OUT", "true")


def png_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> list[bytes]:
    """One PNG per label: noise tinted by class (what tests/synthetic.py draws, larger)."""
    pixels = rng.integers(0, 60, size=(len(labels), size, size, 3), dtype=np.uint8)
    pixels[np.arange(len(labels)), :, :, labels % 3] += 120
    encoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def image_column(png: list[bytes]) -> pa.StructArray:
    """The arrow layout of a `datasets.Image` column: {bytes, path}."""
    return pa.StructArray.from_arrays(
        [pa.array(png, pa.binary()), pa.array([None] * len(png), pa.string())],
        ["bytes", "path"],
    )


def write_out(
    out: Path, reference: Path, rows: int, dim: int, size: int, steps=(0, 10, 20)
) -> Path:
    """Write OUT/default, OUT/timeline, OUT/training_log and OUT/run.json for `rows` images,
    with the features of `reference` (a small OUT of tests/synthetic.py, `dim`-long
    embeddings). Returns `out`."""
    rng = np.random.default_rng(0)
    n_classes = len(CLASS_NAMES)
    label = (np.arange(rows) % n_classes).astype(np.int64)
    png = png_images(label, size, rng)
    nn_id = (np.arange(rows) + 1) % rows
    pred = np.where(rng.uniform(size=rows) < 0.8, label, (label + 1) % n_classes)
    nn_distance = rng.uniform(0, 0.5, rows).astype(np.float32)

    def floats(low: float = -3, high: float = 3) -> np.ndarray:
        return rng.uniform(low, high, rows).astype(np.float32)

    def embedding() -> pa.FixedSizeListArray:
        flat = rng.standard_normal(rows * dim, dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)

    columns = {
        "image": image_column(png),
        "label": label,
        "label_str": np.array(CLASS_NAMES)[label].tolist(),
        "embedding_foundation": embedding(),
        "embedding_ft": embedding(),
        "outlier_score_found": floats(0.05, 1),
        "outlier_score_ft": floats(0.05, 1),
        "nn_id": nn_id.astype(np.int64),
        "nn_image": image_column([png[i] for i in nn_id]),
        "nn_distance": nn_distance,
        "nn_flag": nn_distance < 0.3,
        **{
            f"{method}_{model}_{axis}": floats()
            for method in ("umap", "pca")
            for model in ("found", "ft")
            for axis in ("x", "y")
        },
        "pred_label": pred.astype(np.int64),
        "pred_prob": floats(0.3, 1),
        "label_quality": floats(0, 1),
        "is_label_issue": pred != label,
    }
    features = datasets.load_from_disk(str(reference / "default")).features
    assert set(columns) == set(features), "the benchmark's columns drifted from the pipeline's"
    _dataset(pa.table({name: columns[name] for name in features}), features).save_to_disk(
        str(out / "default")
    )

    k = len(steps)
    row = np.tile(np.arange(rows), k)
    step = np.repeat(np.asarray(steps, dtype=np.int64), rows)
    timeline = {
        "row": row,
        "step": step,
        "epoch": (step / 20).astype(np.float32),
        **{name: rng.normal(size=rows * k).astype(np.float32) for name in ("pca_x", "pca_y")},
        **{name: rng.normal(size=rows * k).astype(np.float32) for name in ("umap_x", "umap_y")},
        "outlier_score": rng.uniform(0.05, 1, rows * k).astype(np.float32),
        "nn_id": (row + 1) % rows,
        "nn_distance": rng.uniform(0, 0.5, rows * k).astype(np.float32),
        "pred_label": np.tile(label, k),
    }
    features = datasets.load_from_disk(str(reference / "timeline")).features
    _dataset(pa.table(timeline), features).save_to_disk(str(out / "timeline"))
    datasets.load_from_disk(str(reference / "training_log")).save_to_disk(str(out / "training_log"))
    run = json.loads((reference / "run.json").read_text())
    run["dataset"]["num_rows"] = rows
    (out / "run.json").write_text(json.dumps(run, indent=2))
    return out


def _dataset(table: pa.Table, features: datasets.Features) -> datasets.Dataset:
    """A Dataset of `table` with exactly `features` (ClassLabels, Images), no row-wise copy."""
    dataset = datasets.Dataset(
        table.cast(features.arrow_schema), info=datasets.DatasetInfo(features=features)
    )
    assert dataset.features == features, "the benchmark's schema drifted from the pipeline's"
    return dataset


def server_rss_mib(viewer) -> float | None:
    """Resident memory of the server process (Spotlight internals; None if unavailable)."""
    process = getattr(getattr(viewer, "_server", None), "process", None)
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (AttributeError, OSError):
        return None
    return None


def measure(out: Path, args: argparse.Namespace) -> None:
    """Open `out` `args.runs` times; print each run and the medians."""
    size_mib = sum(f.stat().st_size for f in (out / "default").rglob("*") if f.is_file()) / 2**20

    opens, tables, memory = [], [], []
    for run in range(args.runs):
        start = time.perf_counter()
        viewer = show(out)
        opened = time.perf_counter() - start
        with urllib.request.urlopen(f"{viewer.url}api/table/", timeout=300) as response:
            n_columns = len(json.load(response)["columns"])
        table = time.perf_counter() - start - opened
        memory.append(server_rss_mib(viewer))
        viewer.close()
        opens.append(opened)
        tables.append(table)
        print(f"run {run + 1}: show() {opened:.2f} s, then GET api/table/ {table:.2f} s")
    rss = [m for m in memory if m is not None]
    print(
        f"spotlight_open: rows={args.rows} dim={args.dim} image={args.size}px "
        f"columns={n_columns} dataset={size_mib:.0f} MiB runs={args.runs} "
        f"median show()={statistics.median(opens):.2f} s "
        f"median api/table={statistics.median(tables):.2f} s"
        + (f" server RSS={statistics.median(rss):.0f} MiB" if rss else "")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="keep the OUT folder here (default: temp)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="explorer-bench-") as scratch:
        out = args.out or Path(scratch) / "out"
        if not (out / "default").is_dir():
            start = time.perf_counter()
            reference = write_synthetic_out(Path(scratch) / "reference", n_images=8, dim=args.dim)
            write_out(out, reference, args.rows, args.dim, args.size)
            print(f"wrote {args.rows} rows to {out} in {time.perf_counter() - start:.1f} s")
        measure(out, args)


if __name__ == "__main__":
    main()
