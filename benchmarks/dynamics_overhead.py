"""What do the training-dynamics metrics add to a `build --run`? Seconds, against the build.

Two measurements, for 10,000 images and 25 checkpoints:

1. The metrics alone: `explorer.trajectory.Trajectory` fed 25 checkpoints of 10,000 x 192
   embeddings (their k-NN graph made beforehand, as the build's geometry makes it anyway) and
   10-class probabilities, then asked for OUT/default's columns and OUT/checkpoints: median of
   3 repeats.
2. A whole `build --run` of a run's 25 checkpoints on 10,000 Fashion-MNIST training images,
   embeddings computed afresh (the run's checkpoints are copied without their caches): the
   "training dynamics" stage of run.json's timings against the sum of all stages.

    nice -n 10 python benchmarks/dynamics_overhead.py --run /tmp/label-errors/fashion-uniform/run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from explorer import build, neighbors
from explorer.embed import Embedded, ModelFacts
from explorer.geometry import KNN_K, Geometry
from explorer.runs import Checkpoint
from explorer.trajectory import Trajectory

RESULTS = Path(__file__).parent / "results"
N, D, CLASSES, CHECKPOINTS = 10_000, 192, 10, 25


def metrics_seconds(seed: int = 0) -> float:
    """Seconds the trajectory takes for CHECKPOINTS checkpoints of N x D embeddings."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, N)
    centres = rng.normal(size=(CLASSES, D))
    inputs = []
    for c in range(CHECKPOINTS):  # classes drift apart as training goes on
        vectors = (c / CHECKPOINTS * centres[labels] + rng.normal(size=(N, D))).astype(np.float32)
        indices, distances = neighbors.exact_knn(vectors, KNN_K)
        logits = 3 * c / CHECKPOINTS * np.eye(CLASSES)[labels] + rng.normal(size=(N, CLASSES))
        probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        facts = ModelFacts("synthetic", "vit", "cls", D, {k: str(k) for k in range(CLASSES)})
        shape = Geometry(indices, distances, rng.uniform(0.1, 1, N).astype(np.float32), None, None)
        inputs.append((Checkpoint(c * 40, Path(f"checkpoint-{c * 40}")), Embedded(
            vectors, probabilities.astype(np.float32), facts), shape))  # fmt: skip
    names = [str(k) for k in range(CLASSES)]
    log = {"step": list(range(1, 1001)), "loss": [1.0] * 1000}
    started = time.perf_counter()
    trajectory = Trajectory(labels, names, log)
    for checkpoint, embedded, shape in inputs:
        trajectory.add(checkpoint, embedded, shape, shape.outlier_score < 0.2)
    trajectory.image_columns()
    trajectory.checkpoint_table()
    return time.perf_counter() - started


def build_timings(run: Path, dataset: str, limit: int | None) -> dict[str, float]:
    """run.json's stage timings of a build of `run` without its caches."""
    with tempfile.TemporaryDirectory(prefix="dynamics-overhead-") as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("explorer-cache"))
        out = Path(tmp) / "out"
        build(dataset, run=copy, split="train", limit=limit, out=out)
        return json.loads((out / "run.json").read_text())["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run of 25 checkpoints")
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, help="images of the split (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="(default: %(default)s)")
    args = parser.parse_args()
    alone = [metrics_seconds(seed) for seed in range(args.repeats)]
    timings = build_timings(args.run, args.dataset, args.limit)
    total = sum(timings.values())
    result = {
        "metrics_alone_seconds": alone,
        "metrics_alone_median": statistics.median(alone),
        "build_total_seconds": total,
        "build_training_dynamics_seconds": timings.get("training dynamics", 0.0),
        "build_timings": timings,
    }
    result["share_of_build_in_build"] = result["build_training_dynamics_seconds"] / total
    result["share_of_build_alone"] = result["metrics_alone_median"] / total
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dynamics_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
