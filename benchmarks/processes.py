"""`explorer build --run` with 1 process against N processes (Accelerate), on the same run.

Makes a run of K checkpoints of a small ViT (random weights: the cost is the same as trained
ones), then times the whole build (one `explorer build` command, start-up included) with the
embedding caches cleared before each repeat, alternating 1 and N processes (the next repeat in
reverse order). Prints medians over --repeats and the ratio; adds them, with every sample, to
benchmarks/results/processes.json under the configuration's name.

    python benchmarks/processes.py [--dataset fashion-mnist] [--limit 3000] [--checkpoints 4]
        [--processes 2] [--repeats 3] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from random_run import make_run  # noqa: E402
from worker import whole_process  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def timed_build(
    run: Path, out: Path, dataset: str, limit: int, processes: int, dtype: str = "float32"
):
    """One whole build, its caches cleared first: a `worker.Whole`."""
    for cache in run.glob("*/explorer-cache"):
        shutil.rmtree(cache)
    command = [sys.executable, "-m", "explorer", "build", "--run", str(run), "--dataset",
               dataset, "--limit", str(limit), "--out", str(out), "--overwrite", "--quiet",
               "--timeline-umap", "off", "--dtype", dtype]  # fmt: skip
    if processes > 1:
        command += ["--processes", str(processes)]
    return whole_process(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=3000, help="images (default: %(default)s)")
    parser.add_argument("--checkpoints", type=int, default=4, help="(default: %(default)s)")
    parser.add_argument("--processes", type=int, default=2, help="N (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument(
        "--dtype", default="float32", help="explorer build --dtype (default: %(default)s)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "processes.json",
        help="JSON file to add the result to (default: benchmarks/results/processes.json)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "run", args.checkpoints, classes=10)
        measured: dict[int, list] = {1: [], args.processes: []}
        for r in range(args.repeats):
            for processes in list(measured) if r % 2 == 0 else list(reversed(measured)):
                whole = timed_build(
                    run, Path(folder) / "out", args.dataset, args.limit, processes, args.dtype
                )
                measured[processes].append(whole)
                print(f"  {processes} process(es): {whole.seconds:.1f} s", file=sys.stderr)
        timings = json.loads((Path(folder) / "out" / "run.json").read_text())["timings"]
    seconds = {p: [w.seconds for w in samples] for p, samples in measured.items()}
    images = args.limit * args.checkpoints
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": args.dataset, "images": args.limit, "checkpoints": args.checkpoints,
        "model": "ViT 6x192, 32 px", "repeats": args.repeats, "dtype": args.dtype,
        "median_seconds": {str(p): round(statistics.median(s), 2) for p, s in seconds.items()},
        "samples_seconds": {str(p): [round(x, 2) for x in s] for p, s in seconds.items()},
        "outside_load": round(max(w.others for s in measured.values() for w in s), 2),
        "last_run_stage_timings": timings,
    }  # fmt: skip
    one, many = statistics.median(seconds[1]), statistics.median(seconds[args.processes])
    print(f"{images} image embeddings ({args.checkpoints} checkpoints x {args.limit} images)")
    print(f"1 process:  {one:7.1f} s  {images / one:7.0f} images/s end to end")
    print(f"{args.processes} processes: {many:7.1f} s  {images / many:7.0f} images/s end to end")
    print(f"ratio 1/{args.processes}: {one / many:.2f}")
    # One entry per configuration, so that runs with other sizes sit side by side.
    path = args.results
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved = saved if "median_seconds" not in saved else {}  # the old one-run layout
    key = f"{args.checkpoints} checkpoints x {args.limit} images, {args.processes} processes"
    saved[key] = result
    path.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
