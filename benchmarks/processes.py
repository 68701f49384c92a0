"""`explorer build --run` with 1 process against N processes (Accelerate), on the same run.

Makes a run of K checkpoints of a small ViT (random weights: the cost is the same as trained
ones), then times the whole build and its embedding throughput with the embedding caches
cleared before each repeat, alternating 1 and N processes. Prints medians and the ratio.

    python benchmarks/processes.py [--dataset fashion-mnist] [--limit 5000] [--checkpoints 6]
        [--processes 2] [--repeats 2] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from random_run import make_run  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def timed_build(
    run: Path, out: Path, dataset: str, limit: int, processes: int, dtype: str = "float32"
) -> float:
    for cache in run.glob("*/explorer-cache"):
        shutil.rmtree(cache)
    command = [sys.executable, "-m", "explorer", "build", "--run", str(run), "--dataset",
               dataset, "--limit", str(limit), "--out", str(out), "--overwrite", "--quiet",
               "--timeline-umap", "off", "--dtype", dtype]  # fmt: skip
    if processes > 1:
        command += ["--processes", str(processes)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--limit", type=int, default=5000)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="explorer build --dtype")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "run", args.checkpoints, classes=10)
        seconds: dict[int, list[float]] = {1: [], args.processes: []}
        for _ in range(args.repeats):
            for processes in seconds:
                seconds[processes].append(
                    timed_build(
                        run, Path(folder) / "out", args.dataset, args.limit, processes, args.dtype
                    )
                )
        timings = json.loads((Path(folder) / "out" / "run.json").read_text())["timings"]
    images = args.limit * args.checkpoints
    result = {
        "dataset": args.dataset, "images": args.limit, "checkpoints": args.checkpoints,
        "model": "ViT 6x192, 32 px", "repeats": args.repeats, "dtype": args.dtype,
        "median_seconds": {str(p): statistics.median(s) for p, s in seconds.items()},
        "last_run_stage_timings": timings,
    }  # fmt: skip
    one, many = statistics.median(seconds[1]), statistics.median(seconds[args.processes])
    print(f"{images} image embeddings ({args.checkpoints} checkpoints x {args.limit} images)")
    print(f"1 process:  {one:7.1f} s  {images / one:7.0f} images/s end to end")
    print(f"{args.processes} processes: {many:7.1f} s  {images / many:7.0f} images/s end to end")
    print(f"ratio 1/{args.processes}: {one / many:.2f}")
    # One entry per configuration, so that runs with other sizes sit side by side.
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "processes.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved = saved if "median_seconds" not in saved else {}  # the old one-run layout
    key = f"{args.checkpoints} checkpoints x {args.limit} images, {args.processes} processes"
    saved[key] = result
    path.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
