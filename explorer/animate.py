"""The film of the embeddings during fine-tuning: one frame per checkpoint, as a GIF or an MP4.

In: an OUT folder written by `explorer build --run` — OUT/timeline (one row per image per
checkpoint: 2-D positions and outlier scores), OUT/default (the images and their labels),
OUT/training_log (the loss curve; optional) and OUT/run.json (names for the subtitle; optional).
Out: a .gif or .mp4 file, one frame per checkpoint plus optional in-between frames.

Every frame shows the 2-D map of all images coloured by class (axes fixed for the whole film),
the checkpoint's most outlying images as a ranked leaderboard with thumbnails (ringed and
numbered on the map too), and the training-loss curve with the current step marked.

The file reads top to bottom in three parts:

1. Data: `load_film` reads OUT once into plain numpy arrays (a `Film`); `leaderboard` ranks one
   checkpoint's outliers; `Film.frame` says what frame i shows. Pure, and what the tests check.
2. Drawing: `FrameRenderer` builds one matplotlib figure (Agg, no pyplot) and, for each frame,
   moves its artists and returns the pixels as an RGB array. Layout is in pixels.
3. Writing: `animate` renders frames in worker processes, each holding one renderer, and streams
   them in order into imageio's writer (pillow for GIF, ffmpeg for MP4).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator, StrMethodFormatter
from matplotlib.transforms import IdentityTransform
from PIL import Image

from explorer.errors import ExplorerError

FORMATS = (".gif", ".mp4")
PROJECTIONS = ("pca", "umap")
MAX_TOP_OUTLIERS = 20
MIN_SIZE = (480, 270)
POINT_SLICES = 4  # draw-order slices of the shuffled points (see FrameRenderer)
# FreeType's hinting took a seventh of a frame's time; unhinted text looks the same here.
RC = {"text.hinting": "no_hinting"}

# ---------------------------------------------------------------------------------------------
# 1. Data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderboardRow:
    """One place on a checkpoint's outlier leaderboard."""

    rank: int  # 1 = the most outlying image (lowest outlier_score)
    row: int  # index of the image in OUT/default
    score: float  # outlier_score at this checkpoint
    pred: int | None = None  # class predicted at this checkpoint, where the timeline has it


def leaderboard(timeline_at_step: Mapping[str, Any], n: int) -> list[LeaderboardRow]:
    """Rank one checkpoint's images by outlier score and return the `n` most outlying.

    In: the timeline rows of one checkpoint as a mapping of column name to values (a dict of
    arrays, a pandas DataFrame) with `row` and `outlier_score`, and `pred_label` optionally.
    Out: up to `n` rows, lowest score first; ties go to the lower row so the order is stable;
    rows without a finite score are never listed.
    """
    rows = np.asarray(timeline_at_step["row"], dtype=np.int64)
    scores = np.asarray(timeline_at_step["outlier_score"], dtype=np.float64)
    preds = (
        np.asarray(timeline_at_step["pred_label"], dtype=np.int64)
        if "pred_label" in timeline_at_step
        else None
    )
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.lexsort((rows[finite], scores[finite]))][: max(n, 0)]
    return [
        LeaderboardRow(
            rank=rank,
            row=int(rows[i]),
            score=float(scores[i]),
            pred=None if preds is None else int(preds[i]),
        )
        for rank, i in enumerate(order, start=1)
    ]


@dataclass(frozen=True)
class Frame:
    """What frame `index` of a film shows."""

    index: int
    checkpoint: int  # the checkpoint last reached: its step, epoch and leaderboard are shown
    fraction: float  # eased progress from that checkpoint to the next one, in [0, 1)
    step: float  # training step for the loss-curve marker (moves smoothly between checkpoints)
    xy: np.ndarray  # (images, 2) positions on the map, row-aligned with OUT/default
    leaders: tuple[LeaderboardRow, ...]


@dataclass(frozen=True)
class Film:
    """Everything the frames need, read once from OUT: plain numpy, cheap to hand to workers."""

    steps: np.ndarray  # (checkpoints,) training step of each checkpoint, ascending
    epochs: np.ndarray  # (checkpoints,) epoch of each checkpoint
    xy: np.ndarray  # (checkpoints, images, 2) float32; NaN where an image lacks a checkpoint
    boards: tuple[tuple[LeaderboardRow, ...], ...]  # per checkpoint, most outlying first
    labels: np.ndarray | None  # (images,) class codes, -1 = unlabelled; None: no labels at all
    class_names: tuple[str, ...]
    pred_names: tuple[str, ...]  # names of the timeline's pred_label codes
    images: dict[int, np.ndarray]  # RGB uint8 of every row that is on some leaderboard
    loss: np.ndarray  # (k, 2) training log's (step, loss), finite values only; may be empty
    eval_loss: np.ndarray  # (k, 2) (step, eval_loss), finite values only; may be empty
    limits: tuple[float, float, float, float]  # x0, x1, y0, y1 of the map, whole film
    projection: str
    top_outliers: int
    tween: int
    subtitle: str

    @property
    def n_checkpoints(self) -> int:
        return len(self.steps)

    @property
    def n_frames(self) -> int:
        """checkpoints + (checkpoints - 1) * tween: the film starts and ends on a checkpoint."""
        return self.n_checkpoints + (self.n_checkpoints - 1) * self.tween

    def frame(self, index: int) -> Frame:
        """The positions, step and leaderboard of frame `index` (0 <= index < n_frames).

        Frame i * (tween + 1) is checkpoint i; the `tween` frames after it move every point
        along a straight line towards the next checkpoint, easing in and out, while the
        title and leaderboard stay those of checkpoint i until the next one is reached.
        """
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} of a film of {self.n_frames}")
        checkpoint, sub = divmod(index, self.tween + 1)
        t = sub / (self.tween + 1)
        eased = t * t * (3 - 2 * t)  # smoothstep: points slow down into each checkpoint
        if sub == 0:
            xy, step = self.xy[checkpoint], float(self.steps[checkpoint])
        else:
            a, b = self.xy[checkpoint], self.xy[checkpoint + 1]
            xy = a + (b - a) * np.float32(eased)
            s0, s1 = self.steps[checkpoint], self.steps[checkpoint + 1]
            step = float(s0 + (s1 - s0) * eased)
        return Frame(index, checkpoint, eased, step, xy, self.boards[checkpoint])


def _table(path: Path) -> tuple[Any, Any] | None:
    """A saved `datasets.Dataset` and its rows as a pyarrow Table (memory-mapped, nothing decoded).

    None when it holds no rows: datasets saves an empty Dataset without data files and then
    cannot load it back, so that case is read from its state.json instead.
    """
    import datasets

    try:
        empty = json.loads((path / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError):
        empty = False
    if empty:
        return None
    dataset = datasets.load_from_disk(str(path))
    return (dataset, dataset.with_format("arrow")[:]) if len(dataset) else None


def _codes(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class codes and names for a label column that is not a ClassLabel."""
    names, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64), tuple(str(name) for name in names)


def _labels(default, table) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Class code of every image, and the class names, from OUT/default (None: no labels)."""
    import datasets

    features = default.features
    if "label" in features:
        if isinstance(features["label"], datasets.ClassLabel):
            codes = table.column("label").fill_null(-1).to_numpy(zero_copy_only=False)
            return codes.astype(np.int64), tuple(features["label"].names)
        return _codes(table.column("label").to_numpy(zero_copy_only=False))
    if "label_str" in features:
        return _codes(table.column("label_str").to_numpy(zero_copy_only=False))
    return None, ()


def _rgb(image: Any) -> np.ndarray:
    """A decoded image (PIL) as an RGB uint8 array."""
    if not isinstance(image, Image.Image):
        return np.zeros((1, 1, 3), np.uint8)
    return np.asarray(image.convert("RGB"))


def _display_name(text: str) -> str:
    """A local path shortened to its last part; a Hub id (user/name) kept whole."""
    local = text.startswith(("/", ".", "~")) or "\\" in text or Path(text).exists()
    return Path(text).name if local else text


def _subtitle(out: Path, n_images: int, projection: str) -> str:
    """Run, dataset and projection for the frame's subtitle, from OUT/run.json where present."""
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        run = {}
    model = (run.get("models") or {}).get("finetuned") or {}
    dataset = run.get("dataset") or {}
    parts = []
    if run.get("run"):  # a fine-tuning run: its folder says more than the last checkpoint's
        parts.append(f"run {_display_name(str(run['run']))}")
    elif model.get("name"):
        parts.append(_display_name(str(model["name"])))
    if dataset.get("source"):
        split = f" ({dataset['split']})" if dataset.get("split") else ""
        parts.append(f"{_display_name(str(dataset['source']))}{split}")
    parts.append(f"{n_images:,} images")
    parts.append("PCA, aligned across checkpoints" if projection == "pca" else "UMAP")
    return "  ·  ".join(parts)


def _limits(xy: np.ndarray) -> tuple[float, float, float, float]:
    """Map limits that hold every point of every checkpoint, with a small margin."""
    finite = xy[np.isfinite(xy).all(axis=-1)]
    if len(finite) == 0:
        return -1.0, 1.0, -1.0, 1.0
    low, high = finite.min(axis=0).astype(float), finite.max(axis=0).astype(float)
    span = np.where(high - low > 0, high - low, 2.0)
    low, high = low - 0.04 * span, high + 0.04 * span
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def load_film(
    out: str | Path, projection: str = "pca", top_outliers: int = 8, tween: int = 0
) -> Film:
    """Read OUT once into a `Film`: positions, leaderboards, thumbnails' images, loss.

    Raises ExplorerError when OUT has no timeline (a build without `--run`), when the
    timeline lacks the chosen projection, or when an argument is out of range.
    """
    out = Path(out)
    if projection not in PROJECTIONS:
        raise ExplorerError(
            f"projection must be one of {', '.join(PROJECTIONS)}, not {projection!r}"
        )
    if not 1 <= top_outliers <= MAX_TOP_OUTLIERS:
        raise ExplorerError(
            f"top_outliers must be between 1 and {MAX_TOP_OUTLIERS}, not {top_outliers}"
        )
    if tween < 0:
        raise ExplorerError(f"tween must be 0 or more, not {tween}")
    if not (out / "default").is_dir():
        raise ExplorerError(
            f"{out} is not an OUT folder of `explorer build` (no {out / 'default'})"
        )
    if not (out / "timeline").is_dir():
        raise ExplorerError(
            f"{out} has no timeline: animate needs the checkpoints of a fine-tuning run; "
            f"write them with `explorer build --run RUN_FOLDER --out {out}`"
        )

    saved_default, saved_timeline = _table(out / "default"), _table(out / "timeline")
    if saved_default is None or saved_timeline is None:
        empty = out / ("default" if saved_default is None else "timeline")
        raise ExplorerError(f"{empty} is empty: rebuild OUT with `explorer build --run`")
    (default, default_table), (timeline, table) = saved_default, saved_timeline
    x_name, y_name = f"{projection}_x", f"{projection}_y"
    if x_name not in table.column_names or y_name not in table.column_names:
        raise ExplorerError(
            f"{out / 'timeline'} has no {projection.upper()} columns ({x_name}, {y_name})"
        )

    def column(name: str, dtype: Any) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    rows, step_of_row = column("row", np.int64), column("step", np.int64)
    x, y, score = (
        column(x_name, np.float32),
        column(y_name, np.float32),
        column("outlier_score", np.float64),
    )
    if projection == "umap" and not np.isfinite(x).any():
        raise ExplorerError(
            f"{out / 'timeline'} has no UMAP positions: use projection 'pca' or rebuild with "
            "`explorer build --run ... --timeline-umap aligned`"
        )
    n_images = len(default)
    if rows.min() < 0 or rows.max() >= n_images:
        raise ExplorerError(f"{out / 'timeline'} names rows outside OUT/default's {n_images}")

    steps, checkpoint_of_row = np.unique(step_of_row, return_inverse=True)
    epoch_of_row = column("epoch", np.float64) if "epoch" in table.column_names else None
    epochs = np.full(len(steps), np.nan)
    if epoch_of_row is not None:
        epochs[checkpoint_of_row] = epoch_of_row  # every row of a checkpoint has its epoch
    xy = np.full((len(steps), n_images, 2), np.nan, dtype=np.float32)
    xy[checkpoint_of_row, rows, 0] = x
    xy[checkpoint_of_row, rows, 1] = y

    has_pred = "pred_label" in table.column_names
    columns = {"row": rows, "outlier_score": score}
    if has_pred:
        columns["pred_label"] = column("pred_label", np.int64)
    by_checkpoint = np.argsort(checkpoint_of_row, kind="stable")
    ends = np.searchsorted(checkpoint_of_row[by_checkpoint], np.arange(len(steps)), "right")
    boards = [
        tuple(leaderboard({name: values[mine] for name, values in columns.items()}, top_outliers))
        for mine in np.split(by_checkpoint, ends[:-1])
    ]

    labels, class_names = _labels(default, default_table)
    pred_names: tuple[str, ...] = ()
    if has_pred:
        feature = timeline.features["pred_label"]
        pred_names = tuple(getattr(feature, "names", None) or class_names)

    # Decode only the images that ever reach a leaderboard: at most checkpoints x top_outliers.
    wanted = sorted({entry.row for board in boards for entry in board})
    images: dict[int, np.ndarray] = {}
    if "image" in default.features and wanted:
        for row, image in zip(wanted, default.select(wanted)["image"], strict=True):
            images[row] = _rgb(image)

    loss = eval_loss = np.zeros((0, 2))
    if (out / "training_log").is_dir():
        _, log = _table(out / "training_log") or (None, None)
        if log is not None and "step" in log.column_names:
            log_steps = log.column("step").to_numpy(zero_copy_only=False).astype(np.float64)
            curves = []
            for name in ("loss", "eval_loss"):
                values = (
                    log.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                    if name in log.column_names
                    else np.full(len(log_steps), np.nan)
                )
                keep = np.isfinite(values) & np.isfinite(log_steps)
                pairs = np.stack([log_steps[keep], values[keep]], axis=1)
                curves.append(pairs[np.argsort(pairs[:, 0], kind="stable")])
            loss, eval_loss = curves

    return Film(
        steps=steps,
        epochs=epochs,
        xy=xy,
        boards=tuple(boards),
        labels=labels,
        class_names=class_names,
        pred_names=pred_names,
        images=images,
        loss=loss,
        eval_loss=eval_loss,
        limits=_limits(xy),
        projection=projection,
        top_outliers=top_outliers,
        tween=tween,
        subtitle=_subtitle(out, n_images, projection),
    )


# ---------------------------------------------------------------------------------------------
# 2. Drawing
# ---------------------------------------------------------------------------------------------

INK = "#1f2933"  # titles and labels
MUTED = "#6b7785"  # secondary text
FAINT = "#d5dae1"  # frames, future part of the loss curve
BAND = "#f3f5f8"  # zebra rows of the leaderboard
ACCENT = "#2f6fde"  # the loss curve so far
NO_LABEL = "#3d6fb6"  # points of a dataset without labels
UNLABELLED = "#a7b0ba"  # points whose label is -1
THUMB_BACKGROUND = (236, 239, 243)
MAX_LEGEND = 20  # more classes than this get no legend: it would not be readable


def class_colors(n_classes: int) -> np.ndarray:
    """(n_classes, 4) RGBA: a qualitative colormap, the same colour for a class in every frame."""
    if n_classes <= 20:
        table = colormaps["tab10" if n_classes <= 10 else "tab20"].colors[:n_classes]
        return np.c_[np.asarray(table, dtype=float).reshape(-1, 3), np.ones(n_classes)]
    return colormaps["hsv"](np.linspace(0, 1, n_classes, endpoint=False))


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Fit an RGB image into a size x size square, keeping its aspect ratio.

    Small images are enlarged with nearest-neighbour (their pixels stay sharp and honest),
    large ones reduced with Lanczos; the rest of the square is a light grey.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    resized = np.asarray(Image.fromarray(image).resize(new, method))
    square = np.empty((size, size, 3), np.uint8)
    square[:] = THUMB_BACKGROUND
    top, left = (size - new[1]) // 2, (size - new[0]) // 2
    square[top : top + new[1], left : left + new[0]] = resized
    return square


def _short(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _score_text(score: float) -> str:
    return f"{score:.4f}" if score >= 0.001 else f"{score:.1e}"


@dataclass(frozen=True)
class Slot:
    """Where one leaderboard place draws: display pixels, origin bottom left (matplotlib's).

    `thumb` is the exception: (top, left, size) in the rendered array, where the thumbnail's
    pixels are copied. A place too narrow or too short drops the image number, then the label.
    """

    thumb: tuple[int, int, int]
    band: tuple[float, float, float, float]  # x, y, width, height of the zebra stripe
    rank_xy: tuple[float, float]
    swatch_xy: tuple[float, float]  # the class colour dot
    label_xy: tuple[float, float] | None
    detail_xy: tuple[float, float] | None  # image number, predicted class
    score_xy: tuple[float, float]
    score_ha: str  # "right": a score column at the right edge; "left": under the label
    font: float  # points


class FrameRenderer:
    """One figure for one film, built once and redrawn per frame (what each worker holds).

    In: a `Film` and the frame size in pixels. `render(i)` -> (height, width, 3) uint8 RGB.
    All positions are in display pixels (dpi 100, IdentityTransform), so the thumbnails can
    be copied into the rendered array at exact places instead of being resampled by Agg.
    """

    def __init__(self, film: Film, size: tuple[int, int]):
        self.film = film
        self.width, self.height = width, height = size
        s = self.scale = min(width / 1280, height / 720)  # gaps follow the frame size ...
        f = self.font_scale = s if s >= 1 else s**0.5  # ... text shrinks less, to stay legible
        px = IdentityTransform()
        self.figure = figure = Figure(
            figsize=(width / 100, height / 100), dpi=100, facecolor="white"
        )
        self.canvas = FigureCanvasAgg(figure)

        margin = round(20 * s)
        body_top = height - round(84 * f)
        panel_width = round(0.32 * width)
        panel_left = width - margin - panel_width
        n_classes = len(film.class_names) + (
            film.labels is not None and bool((film.labels < 0).any())
        )
        legend_width = round(130 * s) if film.labels is not None and n_classes <= MAX_LEGEND else 0

        # Header: what the film is on the left, where in training we are on the right.
        figure.text(
            margin,
            height - round(36 * f),
            "Embeddings during fine-tuning",
            transform=px,
            fontsize=18 * f,
            fontweight="bold",
            color=INK,
        )
        figure.text(
            margin,
            height - round(60 * f),
            _short(film.subtitle, int(0.62 * width / (8 * f))),  # leave room for the epoch
            transform=px,
            fontsize=10.5 * f,
            color=MUTED,
        )
        self.step_text = figure.text(
            width - margin,
            height - round(36 * f),
            "",
            transform=px,
            fontsize=18 * f,
            fontweight="bold",
            color=INK,
            ha="right",
        )
        self.epoch_text = figure.text(
            width - margin,
            height - round(60 * f),
            "",
            transform=px,
            fontsize=10.5 * f,
            color=MUTED,
            ha="right",
        )

        # The map, with fixed axes for the whole film.
        map_left, map_bottom = margin + round(14 * f), margin + round(14 * f)
        map_right = panel_left - round(36 * f) - legend_width
        ax = self.map_axes = figure.add_axes(
            (
                map_left / width,
                map_bottom / height,
                (map_right - map_left) / width,
                (body_top - map_bottom) / height,
            )
        )
        x0, x1, y0, y1 = film.limits
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xticks([])
        ax.set_yticks([])
        name = "PCA" if film.projection == "pca" else "UMAP"
        ax.set_xlabel(f"{name} 1", fontsize=9 * f, color=MUTED, labelpad=2 * s)
        ax.set_ylabel(f"{name} 2", fontsize=9 * f, color=MUTED, labelpad=2 * s)
        for spine in ax.spines.values():
            spine.set_color(FAINT)
        # The map: the points as markers, one Line2D per colour and per slice of a fixed
        # shuffled order. Agg draws a Line2D's markers by stamping one rasterised marker (a
        # tenth of a per-point PathCollection's time), and the slices keep any one class from
        # always being painted on top of the others.
        n_images = film.xy.shape[1]
        self.point_colors = self._point_colors(n_images)
        # Fewer, larger, more opaque points for small sets; small translucent ones for 10k+.
        alpha = float(np.clip(1.2 - 0.2 * math.log10(max(n_images, 10)), 0.35, 0.9))
        marker_size = float(np.clip(30_000 / n_images, 3, 28)) * s * s  # points squared
        colors, color_of = np.unique(self.point_colors, axis=0, return_inverse=True)
        order = np.random.default_rng(0).permutation(n_images)
        self.point_groups: list[tuple[Line2D, np.ndarray]] = []
        for part in np.array_split(order, POINT_SLICES):
            for k, color in enumerate(colors):
                rows = part[color_of[part] == k]
                if not len(rows):
                    continue
                (line,) = ax.plot([], [], "o", markersize=math.sqrt(marker_size),
                                  markeredgewidth=0, color=(*color[:3], alpha))  # fmt: skip
                self.point_groups.append((line, rows))
        # Outliers of the current checkpoint: an opaque dot with a dark ring, and its rank.
        n_top = min(film.top_outliers, n_images)
        ring = (9 * s) ** 2
        self.rings = ax.scatter(
            np.full(n_top, np.nan),
            np.full(n_top, np.nan),
            s=ring,
            edgecolors=INK,
            linewidths=1.3 * s,
            zorder=3,
        )
        self.ranks = [
            ax.annotate(
                str(rank),
                (0, 0),
                xytext=(5 * s, 4 * s),
                textcoords="offset points",
                fontsize=8.5 * f,
                fontweight="bold",
                color=INK,
                zorder=4,
                visible=False,
                path_effects=[withStroke(linewidth=2.5 * s, foreground="white")],
            )
            for rank in range(1, n_top + 1)
        ]
        self.legend = None
        if legend_width:
            names = list(film.class_names) + (
                ["unlabelled"] if n_classes > len(film.class_names) else []
            )
            colors = list(self.class_rgba) + [UNLABELLED]
            handles = [
                Line2D(
                    [],
                    [],
                    marker="o",
                    linestyle="",
                    markersize=7 * s,
                    markeredgewidth=0,
                    markerfacecolor=color,
                )
                for color in colors[: len(names)]
            ]
            self.legend = figure.legend(
                handles,
                [_short(n, 16) for n in names],
                loc="upper left",
                frameon=False,
                bbox_to_anchor=(map_right + round(10 * s), body_top),
                bbox_transform=px,
                fontsize=9.5 * f,
                handletextpad=0.3,
                labelspacing=0.55 * max(s, 0.6),
                borderaxespad=0,
                borderpad=0,
                title="class",
                title_fontsize=9.5 * f,
                alignment="left",
            )
            self.legend.get_title().set_color(MUTED)

        # The leaderboard: a header, then ranked slots (two columns past ten places).
        loss_height = round(0.24 * height)
        board_top = body_top + round(10 * s)
        board_title = figure.text(
            panel_left,
            board_top - round(14 * f),
            f"Top {n_top} outliers",
            transform=px,
            fontsize=12.5 * f,
            fontweight="bold",
            color=INK,
            va="baseline",
        )
        hint = figure.text(
            panel_left + panel_width,
            board_top - round(14 * f),
            "outlier score (low = odd)",
            transform=px,
            fontsize=8.5 * f,
            color=MUTED,
            ha="right",
            va="baseline",
        )
        renderer = self.canvas.get_renderer()
        if board_title.get_window_extent(renderer).x1 + 8 * s > hint.get_window_extent(renderer).x0:
            hint.remove()  # a narrow panel: the title matters more
        slots_top = board_top - round(26 * f)
        slots_bottom = margin + loss_height + round(46 * f)
        self.slots = self._slots(panel_left, panel_width, slots_top, slots_bottom, n_top)
        self.rank_texts, self.label_texts, self.detail_texts, self.score_texts = [], [], [], []
        self.swatches, self.frames = [], []
        for k, slot in enumerate(self.slots):
            if k % 2 == 0:
                band = Rectangle(slot.band[:2], *slot.band[2:], transform=px, facecolor=BAND)
                figure.add_artist(band).set(edgecolor="none", zorder=0)
            top, left, side = slot.thumb
            frame = Rectangle((left - 1, height - top - side - 1), side + 2, side + 2, transform=px)
            self.frames.append(figure.add_artist(frame))
            frame.set(facecolor="none", edgecolor=FAINT, linewidth=0.72)
            swatch = Circle(slot.swatch_xy, slot.font * 0.3, transform=px, edgecolor="none")
            self.swatches.append(figure.add_artist(swatch))
            text = {"transform": px, "fontsize": slot.font, "color": INK}
            rank = figure.text(*slot.rank_xy, str(k + 1), **text, ha="center", va="center")
            self.rank_texts.append(rank)
            self.rank_texts[-1].set(fontsize=slot.font * 1.2, fontweight="bold")
            self.label_texts.append(
                figure.text(*(slot.label_xy or (0, 0)), "", **text, fontweight="bold")
            )
            self.detail_texts.append(figure.text(*(slot.detail_xy or (0, 0)), "", **text))
            self.detail_texts[-1].set(fontsize=slot.font * 0.82, color=MUTED)
            self.score_texts.append(
                figure.text(*slot.score_xy, "", **text, ha=slot.score_ha, family="monospace")
            )
        self._thumbs: dict[tuple[int, int], np.ndarray] = {}

        # The loss curve: all of it faint, the part already trained in colour, a marker now.
        loss_left = panel_left + round(42 * s)
        loss_axes = self.loss_axes = figure.add_axes(
            (
                loss_left / width,
                (margin + round(18 * f)) / height,
                (panel_left + panel_width - loss_left) / width,
                (loss_height - round(18 * f)) / height,
            )
        )
        self.loss_title = figure.text(
            panel_left,
            margin + loss_height + round(14 * f),
            "training loss",
            transform=px,
            fontsize=12.5 * f,
            fontweight="bold",
            color=INK,
        )
        self.loss_value = figure.text(
            panel_left + panel_width,
            margin + loss_height + round(14 * f),
            "",
            transform=px,
            fontsize=9.5 * f,
            color=MUTED,
            ha="right",
        )
        loss_axes.tick_params(labelsize=8 * f, colors=MUTED, length=3 * s, width=0.6)
        for side in ("top", "right"):
            loss_axes.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            loss_axes.spines[side].set_color(FAINT)
        loss_axes.set_xlabel("step", fontsize=8.5 * f, color=MUTED, labelpad=1)
        loss = film.loss
        last_step = max(float(film.steps[-1]), float(loss[-1, 0]) if len(loss) else 0.0)
        loss_axes.set_xlim(min(0.0, float(film.steps[0])), max(last_step, 1.0))
        if len(loss):
            top_value = float(
                max(loss[:, 1].max(), film.eval_loss[:, 1].max() if len(film.eval_loss) else 0)
            )
            loss_axes.set_ylim(min(0.0, float(loss[:, 1].min())), top_value * 1.08 or 1.0)
            loss_axes.plot(loss[:, 0], loss[:, 1], color=FAINT, linewidth=1.4 * s)
            if len(film.eval_loss):
                loss_axes.plot(
                    film.eval_loss[:, 0],
                    film.eval_loss[:, 1],
                    linestyle="",
                    marker="o",
                    markersize=3 * s,
                    color="#e8833a",
                    label="eval",
                )
                loss_axes.legend(fontsize=8 * f, frameon=False, loc="upper right")
        else:
            loss_axes.set_yticks([])
            loss_axes.text(
                0.5,
                0.5,
                "no training log",
                transform=loss_axes.transAxes,
                ha="center",
                va="center",
                fontsize=9.5 * f,
                color=MUTED,
            )
        (self.loss_done,) = loss_axes.plot([], [], color=ACCENT, linewidth=1.8 * s)
        self.now_line = loss_axes.axvline(0, color=INK, linewidth=0.8 * s, alpha=0.6)
        (self.now_dot,) = loss_axes.plot(
            [],
            [],
            marker="o",
            markersize=5.5 * s,
            color=ACCENT,
            markeredgecolor="white",
            markeredgewidth=1.2 * s,
            clip_on=False,  # the last checkpoint sits on the right edge
        )
        loss_axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        loss_axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))

        # Blitting in two layers. What never changes is drawn once into `_background`; the
        # leaderboard and the checkpoint's epoch are drawn over it once per checkpoint into
        # `_board` (tween frames reuse it); every frame then draws only what moves.
        full = min(len(board) for board in film.boards)  # places every checkpoint fills
        self.per_checkpoint = [
            self.epoch_text,
            *self.frames[full:],
            *self.rank_texts[full:],
            *self.swatches,
            *self.label_texts,
            *self.detail_texts,
            *self.score_texts,
        ]
        self.per_frame = [
            *(line for line, _ in self.point_groups),  # under the rings
            self.rings,
            *self.ranks,
            self.step_text,
            self.loss_done,
            self.now_line,
            self.now_dot,
            self.loss_value,
        ]
        for artist in self.per_checkpoint + self.per_frame:
            artist.set_animated(True)
        self._background = None
        self._board: tuple[int, Any] | None = None  # (checkpoint, its saved pixels)

    @property
    def class_rgba(self) -> np.ndarray:
        return class_colors(len(self.film.class_names))

    def _point_colors(self, n_images: int) -> np.ndarray:
        """(images, 4) RGBA of every point: its class colour, grey when unlabelled."""
        labels = self.film.labels
        if labels is None:
            return np.tile(to_rgba(NO_LABEL), (n_images, 1))
        palette = np.vstack([self.class_rgba, np.array([to_rgba(UNLABELLED)])])
        return palette[np.where(labels >= 0, labels, len(self.film.class_names))].copy()

    def _slots(self, left: int, width: int, top: int, bottom: int, n: int) -> list[Slot]:
        """Pixel layout of `n` leaderboard places between `top` and `bottom` (display pixels)."""
        s = self.scale
        columns = 1 if n <= 10 else 2
        per_column = math.ceil(n / columns)
        gap = round(12 * s)
        column_width = (width - gap * (columns - 1)) // columns
        pitch = (top - bottom) / per_column
        side = max(8, int(min(pitch - 6 * s, column_width * 0.22)))  # thumbnail edge, pixels
        two_lines = pitch >= 30  # else one line of text per place
        wide = column_width >= 300 * s  # room for a score column at the right edge
        font = float(np.clip(pitch * (0.24 if two_lines else 0.4), 5, 11.5 * self.font_scale))
        radius = font * 0.3
        slots = []
        for k in range(n):
            column, place = divmod(k, per_column)
            x = left + column * (column_width + gap)
            y_top = top - place * pitch
            y_mid = y_top - pitch / 2
            thumb_left = x + round(30 * s)
            text_x = thumb_left + side + round(10 * s)
            line1 = y_mid + 2 * s if two_lines else y_mid - font * 0.45
            line2 = y_mid - font * 1.35
            after_swatch = text_x + 2 * radius + 5 * s
            if wide:
                label, detail = (after_swatch, line1), ((text_x, line2) if two_lines else None)
                score, score_ha = (x + column_width - 6 * s, y_mid - font * 0.45), "right"
            elif two_lines:
                label, detail = (after_swatch, line1), None
                score, score_ha = (text_x, line2), "left"
            else:
                label, detail = None, None
                score, score_ha = (after_swatch, line1), "left"
            slots.append(
                Slot(
                    thumb=(self.height - round(y_mid + side / 2), thumb_left, side),
                    band=(x, y_top - pitch, column_width, pitch),
                    rank_xy=(x + 14 * s, y_mid),
                    swatch_xy=(text_x + radius, line1 + font * 0.45),
                    label_xy=label,
                    detail_xy=detail,
                    score_xy=score,
                    score_ha=score_ha,
                    font=font,
                )
            )
        return slots

    def _thumbnail(self, row: int, side: int) -> np.ndarray:
        key = (row, side)
        if key not in self._thumbs:
            image = self.film.images.get(row)
            self._thumbs[key] = (
                thumbnail(image, side)
                if image is not None
                else np.full((side, side, 3), THUMB_BACKGROUND, np.uint8)
            )
        return self._thumbs[key]

    def _slot_texts(self, entry: LeaderboardRow) -> tuple[str, str]:
        """A leaderboard place's two lines: the class, then image number and a wrong prediction."""
        film, number = self.film, f"image #{entry.row:,}"
        if film.labels is None:
            name, label, detail = None, number, ""
        else:
            code = int(film.labels[entry.row])
            name = film.class_names[code] if code >= 0 else "unlabelled"
            label, detail = _short(name, 18), number
        if entry.pred is not None and 0 <= entry.pred < len(film.pred_names):
            predicted = film.pred_names[entry.pred]
            if predicted != name:
                detail += f"{'  ·  ' if detail else ''}predicted {_short(predicted, 14)}"
        return label, detail

    def render(self, index: int) -> np.ndarray:
        """Frame `index` as a (height, width, 3) uint8 RGB array."""
        frame = self.film.frame(index)
        with rc_context(RC):
            if self._background is None:
                self.canvas.draw()
                self._background = self.canvas.copy_from_bbox(self.figure.bbox)
            if self._board is None or self._board[0] != frame.checkpoint:
                self.canvas.restore_region(self._background)
                self._update_board(frame)
                for artist in self.per_checkpoint:
                    self.figure.draw_artist(artist)
                self._board = (frame.checkpoint, self.canvas.copy_from_bbox(self.figure.bbox))
            else:
                self.canvas.restore_region(self._board[1])
            self._update_motion(frame)
            for artist in self.per_frame:
                self.figure.draw_artist(artist)
        pixels = np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
        # Thumbnails go in as exact pixels: sharp, and no per-frame resampling by Agg.
        for slot, entry in zip(self.slots, frame.leaders, strict=False):
            top, left, side = slot.thumb
            pixels[top : top + side, left : left + side] = self._thumbnail(entry.row, side)
        return pixels

    def _update_board(self, frame: Frame) -> None:
        """The leaderboard and epoch of the frame's checkpoint."""
        film, checkpoint = self.film, frame.checkpoint
        epoch = film.epochs[checkpoint]
        where = f"checkpoint {checkpoint + 1} of {film.n_checkpoints}"
        self.epoch_text.set_text(f"epoch {epoch:.2f}  ·  {where}" if np.isfinite(epoch) else where)
        for k, slot in enumerate(self.slots):
            entry = frame.leaders[k] if k < len(frame.leaders) else None
            label, detail = self._slot_texts(entry) if entry else ("", "")
            self.rank_texts[k].set_visible(entry is not None)
            self.score_texts[k].set_text(_score_text(entry.score) if entry else "")
            self.label_texts[k].set_text(label if slot.label_xy else "")
            self.detail_texts[k].set_text(detail if slot.detail_xy else "")
            self.frames[k].set_visible(entry is not None)
            self.swatches[k].set_visible(entry is not None)
            if entry:
                self.swatches[k].set_facecolor(self.point_colors[entry.row])

    def _update_motion(self, frame: Frame) -> None:
        """Everything that moves within a frame: points, outlier rings, step, loss marker."""
        film, checkpoint = self.film, frame.checkpoint
        step = f"step {int(film.steps[checkpoint]):,}"
        if frame.fraction > 0:  # on the way to the next checkpoint
            step += f" → {int(film.steps[checkpoint + 1]):,}"
        self.step_text.set_text(step)

        for line, rows in self.point_groups:
            line.set_data(frame.xy[rows, 0], frame.xy[rows, 1])
        rows = [entry.row for entry in frame.leaders]
        ring_xy = np.full((len(self.ranks), 2), np.nan, np.float32)
        ring_xy[: len(rows)] = frame.xy[rows]
        self.rings.set_offsets(ring_xy)
        ring_colors = np.ones((len(self.ranks), 4))
        ring_colors[: len(rows), :3] = self.point_colors[rows, :3]  # opaque: they stand out
        self.rings.set_facecolor(ring_colors)
        for k, annotation in enumerate(self.ranks):
            visible = k < len(rows) and bool(np.isfinite(ring_xy[k]).all())
            annotation.set_visible(visible)
            if visible:
                annotation.xy = tuple(ring_xy[k])

        loss = film.loss
        if len(loss):
            done = loss[loss[:, 0] <= frame.step]
            inside = loss[0, 0] <= frame.step <= loss[-1, 0]
            now = float(np.interp(frame.step, loss[:, 0], loss[:, 1]))
            if inside:
                done = np.vstack([done, [[frame.step, now]]])
            self.loss_done.set_data(done[:, 0], done[:, 1])
            self.now_dot.set_data([frame.step] if inside else [], [now] if inside else [])
            self.loss_value.set_text(
                f"{now:.3f} at step {int(round(frame.step)):,}" if inside else ""
            )
        self.now_line.set_xdata([frame.step, frame.step])


# ---------------------------------------------------------------------------------------------
# 3. Writing
# ---------------------------------------------------------------------------------------------

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
) -> Path:
    """Render the film of the embeddings during fine-tuning to `path` (.gif or .mp4); return it.

    In: `out`, an OUT folder of `explorer build --run`; `projection` 'pca' or 'umap' (the
    timeline's columns); `fps` frames per second; `size` (width, height) in pixels (an MP4's
    sides are rounded up to a multiple of 16); `top_outliers` places on the leaderboard;
    `tween` interpolated frames between consecutive checkpoints; `progress` a tqdm bar;
    `workers` drawing processes besides this one, which writes the file (default: one per
    CPU but one, none on two CPUs or fewer; 0 draws everything here).

    Frame count = checkpoints + (checkpoints - 1) * tween: the film starts on the first
    checkpoint and ends on the last (see `Film.frame`). A GIF loops forever, each frame
    shown 1000 / fps ms. The same OUT and arguments give the same bytes.

    Raises ExplorerError for a suffix other than .gif/.mp4, a missing timeline (run
    `explorer build --run`) or an argument out of range. The file appears only when complete.
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
    film = load_film(out, projection=projection, top_outliers=top_outliers, tween=tween)

    import imageio.v2 as imageio_v2
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{suffix}")  # renamed once complete
    gif: list[Image.Image] = []
    try:
        if suffix == ".gif":
            writer = contextlib.nullcontext()

            def write(pixels: np.ndarray) -> None:
                # each frame gets its palette as it arrives, while the workers draw the next
                gif.append(gif_frame(pixels))

        else:
            writer = imageio_v2.get_writer(
                partial,
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                quality=8,
                pixelformat="yuv420p",
                macro_block_size=16,
                ffmpeg_log_level="error",
            )
            write = writer.append_data
        with (
            writer,
            tqdm(total=film.n_frames, unit="frame", desc="animate", disable=not progress) as bar,
        ):
            for pixels in frames(film, frame_size, workers):
                write(pixels)
                bar.update()
        if gif:  # Pillow writes a GIF in one go; loop=0 loops forever
            gif[0].save(partial, save_all=True, append_images=gif[1:], duration=1000 / fps, loop=0)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
