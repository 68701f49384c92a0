"""The film of the embeddings during fine-tuning, written as a GIF or an MP4.

In: an OUT folder of `explorer build --run` (read by `explorer.film.load_film`). Out: a .gif or
.mp4 file, one frame per checkpoint plus optional in-between frames, each drawn by
`explorer.draw.FrameRenderer`: the 2-D map of all images coloured by class, a ranked
leaderboard with thumbnails (the checkpoint's outliers, label issues or most moved images), and
a curve (the training loss, or accuracy or k-NN accuracy per checkpoint).

`animate` is the entry point. `frames` draws the frames in worker processes, each holding one
renderer, and yields them in order; the GIF writer gives each a palette (`gif_frame`) and
Pillow writes the file; the MP4 writer streams them into ffmpeg. The file is written under a
temporary name and renamed into place once complete (`explorer.files.written_in_place`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image

from explorer.draw import FrameRenderer
from explorer.errors import ExplorerError
from explorer.files import written_in_place
from explorer.film import (
    LEADERBOARDS,
    MAX_TOP_OUTLIERS,
    PANELS,
    PROJECTIONS,
    Film,
    load_film,
)

__all__ = [
    "FORMATS",
    "LEADERBOARDS",
    "MAX_TOP_OUTLIERS",
    "PANELS",
    "PROJECTIONS",
    "animate",
    "frames",
    "gif_frame",
]

FORMATS = (".gif", ".mp4")
MIN_SIZE = (480, 270)


def animate(
    out: str | Path,
    path: str | Path,
    projection: str = "pca",
    fps: float = 4,
    size: tuple[int, int] = (1280, 720),
    top_outliers: int = 8,
    tween: int = 0,
    progress: bool = True,
    workers: int | None = None,
    *,
    panel: str = "loss",
    leaderboard: str = "outliers",
) -> Path:
    """Render the film of the embeddings during fine-tuning to `path` (.gif or .mp4); return it.

    In: `out`, an OUT folder of `explorer build --run`; `projection` 'pca' or 'umap' (the
    timeline's columns); `fps` frames per second; `size` (width, height) in pixels (an MP4's
    sides are rounded up to a multiple of 16); `top_outliers` places on the leaderboard;
    `tween` interpolated frames between consecutive checkpoints; `progress` a tqdm bar;
    `workers` drawing processes besides this one, which writes the file (default: one per
    CPU but one, none on two CPUs or fewer; 0 draws everything here); `panel` the curve under
    the leaderboard, one of PANELS: "loss" (OUT/training_log), "accuracy" or "knn-accuracy"
    (per checkpoint, from OUT/checkpoints); `leaderboard` what it ranks per checkpoint, one of
    LEADERBOARDS: "outliers" (lowest outlier_score), "label-issues" (lowest label_quality, the
    probability of the given label) or "moved" (highest movement since the previous
    checkpoint; the first checkpoint's board is empty, nothing having moved yet).

    Frame count = checkpoints + (checkpoints - 1) * tween: the film starts on the first
    checkpoint and ends on the last (see `Film.frame`). A GIF loops forever, each frame
    shown 1000 / fps ms. The same OUT and arguments give the same bytes.

    Raises ExplorerError for a suffix other than .gif/.mp4, a missing timeline (run
    `explorer build --run`), a panel or leaderboard whose data OUT lacks, or an argument out
    of range. The file appears only when complete.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ExplorerError(
            f"cannot write {path.name!r}: the animation must be a .gif or .mp4 file"
        )
    if not fps > 0:
        raise ExplorerError(f"fps must be above 0, not {fps}")
    frame_size = _frame_size(size, suffix)
    film = load_film(
        out,
        projection=projection,
        top_outliers=top_outliers,
        tween=tween,
        panel=panel,
        leaderboard=leaderboard,
    )

    from tqdm import tqdm

    write = _write_gif if suffix == ".gif" else _write_mp4
    with (
        written_in_place(path, folder=False) as partial,
        tqdm(total=film.n_frames, unit="frame", desc="animate", disable=not progress) as bar,
        closing(frames(film, frame_size, workers)) as drawn,
    ):
        write(partial, _counted(drawn, bar), fps)
    return path


def _frame_size(size: Sequence[int], suffix: str) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ExplorerError(
            f"size must be at least {MIN_SIZE[0]}x{MIN_SIZE[1]}, not {width}x{height}"
        )
    if suffix == ".mp4":
        # H.264 players want both sides a multiple of 16: round up rather than let ffmpeg rescale.
        width, height = -(-width // 16) * 16, -(-height // 16) * 16
    return width, height


def _counted(items: Iterable[np.ndarray], bar) -> Iterator[np.ndarray]:
    """`items`, ticking the progress bar as each one is written."""
    for item in items:
        yield item
        bar.update()


# --- Drawing in worker processes --------------------------------------------------------------

_RENDERER: FrameRenderer | None = None  # the one renderer of a worker process


def _start_worker(renderer: FrameRenderer | None, film: Film, size: tuple[int, int]) -> None:
    global _RENDERER
    _RENDERER = renderer or FrameRenderer(film, size)


def _render_in_worker(index: int) -> np.ndarray:
    assert _RENDERER is not None
    return _RENDERER.render(index)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _default_workers() -> int:
    """One drawing process per CPU but one; none on two CPUs or fewer, where shipping each
    frame's pixels back costs more than the second CPU saves (measured on 2 CPUs, 17 frames
    of 10,000 points: 25 ms a frame drawn here, 32 ms with one worker, 43 ms with two)."""
    cpus = _cpus()
    return cpus - 1 if cpus > 2 else 0


def frames(film: Film, size: tuple[int, int], workers: int | None = None) -> Iterator[np.ndarray]:
    """Yield every frame of `film` in order as a (height, width, 3) uint8 array.

    Frame 0 is drawn here; the rest by `workers` processes while this one writes (default:
    `_default_workers()`; 0 draws everything here). At most two frames per worker are in
    flight, so memory stays flat however long the film. The pixels do not depend on
    `workers`.
    """
    renderer = FrameRenderer(film, size)
    first = renderer.render(0)  # also loads the fonts and draws the static background, once
    workers = min(_default_workers() if workers is None else workers, film.n_frames - 1)
    if workers <= 0:
        yield first
        for index in range(1, film.n_frames):
            yield renderer.render(index)
        return
    # Forked workers inherit that renderer, figure and background ready to go; spawned ones
    # (macOS, Windows) get the Film pickled once and build their own.
    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    initargs = (renderer if fork else None, film, size)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=initargs
    ) as pool:
        pending: deque[Future] = deque()
        submitted = 1
        try:
            while submitted < film.n_frames and len(pending) < 2 * workers:
                pending.append(pool.submit(_render_in_worker, submitted))
                submitted += 1
            yield first
            while pending:
                pixels = pending.popleft().result()
                if submitted < film.n_frames:
                    pending.append(pool.submit(_render_in_worker, submitted))
                    submitted += 1
                yield pixels
        finally:
            for future in pending:
                future.cancel()


# --- Writing ---------------------------------------------------------------------------------


def _write_gif(path: Path, frames: Iterator[np.ndarray], fps: float) -> None:
    """A GIF of `frames` at `path`, looping forever, each frame shown 1000 / fps ms.

    Each frame gets its palette as it arrives, while the workers draw the next. Pillow pulls
    the frames one by one but holds every (palette) frame until the last, then writes the
    file: it merges identical consecutive frames and encodes each as a change to the previous.
    """
    palettes = (gif_frame(pixels) for pixels in frames)
    first = next(palettes)
    first.save(path, save_all=True, append_images=palettes, duration=1000 / fps, loop=0)


def _write_mp4(path: Path, frames: Iterator[np.ndarray], fps: float) -> None:
    """An H.264 MP4 of `frames` at `path`, streamed into ffmpeg as they arrive."""
    import imageio.v2 as imageio_v2

    with imageio_v2.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        quality=8,
        pixelformat="yuv420p",
        macro_block_size=16,
        ffmpeg_log_level="error",
    ) as writer:
        for pixels in frames:
            writer.append_data(pixels)


def gif_frame(pixels: np.ndarray) -> Image.Image:
    """An RGB frame (height, width, 3) uint8 as a palette image of at most 256 colours.

    The palette is Pillow's median cut over every fourth pixel each way: a sixteenth of the
    work, and these frames are large flat areas, so the sample has the same colours. Every
    pixel then takes its nearest palette colour, exactly (Pillow's own mapping rounds colours
    to a coarse grid first, turning white into 252 grey): pandas.factorize finds each distinct
    colour once, so the search runs over a few thousand colours, not every pixel. White, the
    background and most of a frame, is set aside first, so factorize hashes only the rest.
    """
    import pandas as pd

    sample = Image.fromarray(np.ascontiguousarray(pixels[::4, ::4]))
    palette = np.asarray(sample.quantize(256).getpalette(), np.float32).reshape(-1, 3)
    channels = pixels.astype(np.uint32)
    packed = ((channels[..., 0] << 16) | (channels[..., 1] << 8) | channels[..., 2]).ravel()
    white = packed == 0xFFFFFF
    codes, colours = pd.factorize(packed[~white])
    colours = np.append(colours, 0xFFFFFF).astype(np.uint32)
    colour_of = np.full(packed.shape, len(colours) - 1)  # white: the last colour
    colour_of[~white] = codes
    rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    # Squared distance less |colour|^2 (the same for every palette entry); float32 is exact
    # on these integers (all below 2^24).
    distance = (palette**2).sum(axis=1) - 2 * rgb.astype(np.float32) @ palette.T
    nearest = distance.argmin(axis=1).astype(np.uint8)
    image = Image.fromarray(nearest[colour_of].reshape(pixels.shape[:2]))
    image.putpalette(palette.astype(np.uint8).ravel().tolist())  # "L" becomes "P"
    return image
