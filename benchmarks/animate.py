"""Benchmark: seconds per frame of `explorer animate` against the seed article's way.

In: a synthetic OUT folder (tests/synthetic.py) with --images points and --checkpoints
checkpoints, written once to a temporary folder and not timed.
Out: printed median seconds per frame (wall clock, and CPU of this process plus its worker
processes; ffmpeg's own CPU is not counted) for each way of making the same 1280x720 GIF,
and the ratio seed / explorer.

The seed's way, as its notebook does it: for every checkpoint build a new matplotlib figure
(one scatter per class, one subplot per outlier image, the loss curve), save it as a PNG, then
read every PNG back with imageio and write the GIF. Both ways are timed end to end, reading
OUT included, and write their GIF with imageio's pillow plugin.

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
import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from synthetic import write_synthetic_out  # noqa: E402

from explorer.animate import animate  # noqa: E402

SIZE = (1280, 720)
FPS = 4
TOP = 8


def seed_way(out: Path, gif: Path) -> int:
    """The seed article's animation: a new figure per checkpoint, PNGs, then a GIF. -> frames."""
    timeline = datasets.load_from_disk(str(out / "timeline")).to_pandas()
    default = datasets.load_from_disk(str(out / "default"))
    names = default.features["label"].names
    labels = default.with_format("numpy")["label"]
    log = datasets.load_from_disk(str(out / "training_log")).to_pandas()
    pngs = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (step, frame) in enumerate(timeline.groupby("step")):
            fig = plt.figure(figsize=(SIZE[0] / 100, SIZE[1] / 100), dpi=100)
            grid = fig.add_gridspec(5, 6)
            ax = fig.add_subplot(grid[:, :4])
            frame_labels = labels[frame["row"].to_numpy()]
            for code, name in enumerate(names):
                mine = frame[frame_labels == code]
                ax.scatter(mine["pca_x"], mine["pca_y"], s=2, label=name)
            ax.legend(loc="upper right")
            ax.set_title(f"step {step}")
            top = frame.nsmallest(TOP, "outlier_score")
            for k, row in enumerate(top.itertuples()):
                thumb = fig.add_subplot(grid[k // 2, 4 + k % 2])
                thumb.imshow(default[int(row.row)]["image"])
                thumb.set_title(f"{k + 1}. {names[labels[row.row]]} {row.outlier_score:.2f}")
                thumb.axis("off")
            loss = fig.add_subplot(grid[4, 4:])
            loss.plot(log["step"], log["loss"])
            loss.axvline(step, color="red")
            png = Path(folder) / f"{i:04d}.png"
            fig.savefig(png)
            plt.close(fig)
            pngs.append(png)
        imageio.mimsave(gif, [imageio.imread(p) for p in pngs], duration=1000 / FPS, loop=0)
    return len(pngs)


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
