"""Benchmark: seconds per frame of `explorer animate` against the seed article's way.

In: a synthetic OUT folder (tests/synthetic.py) with --images points and --checkpoints
checkpoints, written once to a temporary folder and not timed.
Out: printed median seconds per frame (wall clock, and CPU of this process plus its worker
processes; ffmpeg's own CPU is not counted) for each way of making the same 1280x720 GIF,
and the ratio seed / explorer.

The seed's way, as its notebook does it: for every checkpoint build a new matplotlib figure
(one scatter per class, one subplot per outlier image, the loss curve), save it as a PNG, then
read every PNG back with imageio and write the GIF (`seed_recipe.make_frames`, the same code
benchmarks/pipeline.py times). Both ways are timed end to end, reading OUT included.

    .venv/bin/python benchmarks/animate.py [--images 10000] [--checkpoints 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import seed_recipe  # noqa: E402
from synthetic import write_synthetic_out  # noqa: E402

from explorer.animate import animate  # noqa: E402

SIZE = (1280, 720)
FPS = 4
TOP = 8


def seed_way(out: Path, gif: Path) -> int:
    """The seed article's animation (benchmarks/seed_recipe.py `make_frames`) from OUT's tables:
    a new figure per checkpoint, PNGs, then a GIF. Returns the frame count."""
    timeline = datasets.load_from_disk(str(out / "timeline")).to_pandas()
    default = datasets.load_from_disk(str(out / "default"))
    log = datasets.load_from_disk(str(out / "training_log")).to_pandas()
    frames = []
    for step, frame in timeline.groupby("step"):
        frame = frame.sort_values("row")  # row i of a frame is image i
        frames.append(
            (step, frame[["pca_x", "pca_y"]].to_numpy(), frame["outlier_score"].to_numpy())
        )
    return seed_recipe.make_frames(
        frames, default, default.with_format("numpy")["label"], default.features["label"].names,
        (log["step"], log["loss"]), gif, size=SIZE, fps=FPS, top=TOP,
    )  # fmt: skip


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the pool's workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(make: Callable[[], int], repeats: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds per frame over `repeats` runs, after one untimed warm-up."""
    make()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        n = make()
        walls.append((time.perf_counter() - wall) / n)
        cpus.append((cpu_seconds() - cpu) / n)
    return statistics.median(walls), statistics.median(cpus), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        steps = tuple(range(0, 50 * args.checkpoints, 50))
        out = write_synthetic_out(folder / "OUT", n_images=args.images, steps=steps)

        def explorer(workers: int | None = None, tween: int = 0, suffix: str = ".gif"):
            def run() -> int:
                animate(out, folder / f"explorer{suffix}", fps=FPS, size=SIZE, top_outliers=TOP,
                        tween=tween, progress=False, workers=workers)  # fmt: skip
                return args.checkpoints + (args.checkpoints - 1) * tween

            return run

        seed_gif = folder / "seed.gif"
        rows = {
            "seed (figure per frame, PNGs, GIF)": measure(
                lambda: seed_way(out, seed_gif), args.repeats
            ),
            "explorer animate": measure(explorer(), args.repeats),
            "explorer animate, all in 1 process": measure(explorer(workers=0), args.repeats),
            "explorer animate, tween=3": measure(explorer(tween=3), args.repeats),
            "explorer animate, MP4": measure(explorer(suffix=".mp4"), args.repeats),
        }
        load = os.getloadavg()[0]

    print(
        f"\n{args.images:,} points, {args.checkpoints} checkpoints, {SIZE[0]}x{SIZE[1]}, "
        f"median of {args.repeats} runs, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    print(f"{'':38} {'frames':>6} {'wall s/frame':>13} {'CPU s/frame':>12}")
    for name, (wall, cpu, n) in rows.items():
        print(f"{name:38} {n:6d} {wall:13.3f} {cpu:12.3f}")
    seed, ours = rows["seed (figure per frame, PNGs, GIF)"], rows["explorer animate"]
    print(f"\nratio seed / explorer: {seed[0] / ours[0]:.1f}x wall, {seed[1] / ours[1]:.1f}x CPU")


if __name__ == "__main__":
    main()
