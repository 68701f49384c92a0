"""How a frame of the film is drawn: one matplotlib figure, four panels, redrawn per frame.

In: a `Film` (explorer.film) and the frame size in pixels. Out: `FrameRenderer(film,
size).render(i)`, frame i as a (height, width, 3) uint8 RGB array.

The frame is four panels, each a small class built once on the shared figure and updated per
frame: `HeaderPanel` (title, subtitle, step, epoch), `MapPanel` (every image a point coloured
by class, the leaderboard's images ringed, the class legend), `LeaderboardPanel` (the ranked
outliers, label issues or moved images, with thumbnails) and the curve under it: `LossPanel`
(the training loss, the current step marked) or `CheckpointPanel` (accuracy or k-NN accuracy
per checkpoint, the same way). `layout` gives each its `Box` of the frame. `FrameRenderer`
composes them and blits: what never changes is drawn once, the leaderboard once per
checkpoint, and only what moves on every frame.

All positions are display pixels (dpi 100, IdentityTransform), so thumbnails can be copied
into the rendered array at exact places instead of being resampled by Agg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.text import Annotation, Text
from matplotlib.ticker import MaxNLocator, MultipleLocator, StrMethodFormatter
from matplotlib.transforms import IdentityTransform
from PIL import Image

from explorer.film import Film, Frame, LeaderboardRow

INK = "#1f2933"  # titles and labels
MUTED = "#6b7785"  # secondary text
FAINT = "#d5dae1"  # frames, future part of the loss curve
BAND = "#f3f5f8"  # zebra rows of the leaderboard
ACCENT = "#2f6fde"  # the loss curve so far
NO_LABEL = "#3d6fb6"  # points of a dataset without labels
UNLABELLED = "#a7b0ba"  # points whose label is -1
THUMB_BACKGROUND = (236, 239, 243)
MAX_LEGEND = 20  # more classes than this get no legend: it would not be readable
POINT_SLICES = 4  # draw-order slices of the shuffled points (see MapPanel._points)
# FreeType's hinting took a seventh of a frame's time; unhinted text looks the same here.
RC = {"text.hinting": "no_hinting"}


def class_colors(n_classes: int) -> np.ndarray:
    """(n_classes, 4) RGBA: a qualitative colormap, the same colour for a class in every frame."""
    if n_classes <= 20:
        table = colormaps["tab10" if n_classes <= 10 else "tab20"].colors[:n_classes]
        return np.c_[np.asarray(table, dtype=float).reshape(-1, 3), np.ones(n_classes)]
    return colormaps["hsv"](np.linspace(0, 1, n_classes, endpoint=False))


def point_colors(film: Film) -> np.ndarray:
    """(images, 4) RGBA of every image's point: its class colour, grey when unlabelled."""
    n_images = film.xy.shape[1]
    if film.labels is None:
        return np.tile(to_rgba(NO_LABEL), (n_images, 1))
    palette = np.vstack([class_colors(len(film.class_names)), np.array([to_rgba(UNLABELLED)])])
    return palette[np.where(film.labels >= 0, film.labels, len(film.class_names))].copy()


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


# Per leaderboard (explorer.film.LEADERBOARDS): the title's noun, the hint beside the title,
# and each place's number as text. The outlier board keeps its bare score, the hint naming it.
BOARD_TEXTS = {
    "outliers": ("outliers", "outlier score (low = odd)", _score_text),
    "label-issues": (
        "label issues",
        "p(given label), low = suspect",
        lambda p: f"p(label) {_score_text(p)}",
    ),
    "moved": ("moved", "new neighbours since last (high = moved)", lambda m: f"moved {m:.2f}"),
}
# Shown on an empty board: the "moved" board of the first checkpoint has nothing to compare.
EMPTY_BOARD = {"moved": "nothing has moved yet: first checkpoint"}
# Per checkpoint panel (explorer.film.PANELS but "loss"): its title.
CURVE_TITLES = {"accuracy": "accuracy", "knn-accuracy": "k-NN accuracy (10 nearest)"}


# --- Layout ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A panel's part of the frame in display pixels, origin bottom left (matplotlib's), with
    the size of the whole frame and the scales its panel draws at."""

    left: int
    bottom: int
    right: int
    top: int
    frame: tuple[int, int]  # width, height of the whole frame
    scale: float  # gaps, lines and markers: 1 at 1280 x 720, following the frame size
    font_scale: float  # text: shrinks less than the frame, to stay legible

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.top - self.bottom

    def inset(self, left: int = 0, bottom: int = 0, right: int = 0, top: int = 0) -> Box:
        """This box less the given pixels on each side."""
        return replace(
            self,
            left=self.left + left,
            bottom=self.bottom + bottom,
            right=self.right - right,
            top=self.top - top,
        )

    def add_axes(self, figure: Figure) -> Axes:
        """New axes on `figure` filling this box."""
        width, height = self.frame
        return figure.add_axes(
            (self.left / width, self.bottom / height, self.width / width, self.height / height)
        )


class Layout(NamedTuple):
    """The box of each panel on one frame."""

    header: Box
    map: Box  # the map's axes, with room for their labels, and the legend on the right
    leaderboard: Box
    loss: Box  # the curve's axes with their tick labels; the panel's title sits just above


def layout(size: tuple[int, int]) -> Layout:
    """Where each panel goes on a frame of `size` (width, height) pixels: the header across the
    top, the map below it on the left, the leaderboard over the curve on the right."""
    width, height = size
    s = min(width / 1280, height / 720)  # gaps follow the frame size ...
    f = s if s >= 1 else s**0.5  # ... text shrinks less, to stay legible
    margin = round(20 * s)
    body_top = height - round(84 * f)  # below the header
    panel_left = width - margin - round(0.32 * width)  # the right-hand panels
    loss_top = margin + round(0.24 * height)

    def box(left: int, bottom: int, right: int, top: int) -> Box:
        return Box(left, bottom, right, top, frame=(width, height), scale=s, font_scale=f)

    return Layout(
        header=box(margin, body_top, width - margin, height),
        map=box(margin, margin, panel_left - round(36 * f), body_top),
        leaderboard=box(
            panel_left, loss_top + round(46 * f), width - margin, body_top + round(10 * s)
        ),
        loss=box(panel_left, margin, width - margin, loss_top),
    )


# --- Panels ----------------------------------------------------------------------------------


class Panel(Protocol):
    """What each panel offers the renderer, once built on the shared figure in its `Box`."""

    per_checkpoint: list[Artist]  # animated artists redrawn when the checkpoint changes
    per_frame: list[Artist]  # animated artists redrawn on every frame

    def update(self, frame: Frame) -> None:
        """Set the panel's animated artists to show `frame`."""


class HeaderPanel:
    """What the film is on the left; where in training the frame is on the right."""

    def __init__(self, figure: Figure, film: Film, box: Box):
        self.film = film
        f, px = box.font_scale, IdentityTransform()
        title_y, subtitle_y = box.top - round(36 * f), box.top - round(60 * f)
        big = {"transform": px, "fontsize": 18 * f, "fontweight": "bold", "color": INK}
        small = {"transform": px, "fontsize": 10.5 * f, "color": MUTED}
        figure.text(box.left, title_y, "Embeddings during fine-tuning", **big)
        subtitle = _short(film.subtitle, int(0.62 * box.frame[0] / (8 * f)))  # room for epoch
        figure.text(box.left, subtitle_y, subtitle, **small)
        self.step_text = figure.text(box.right, title_y, "", **big, ha="right")
        self.epoch_text = figure.text(box.right, subtitle_y, "", **small, ha="right")
        self.per_checkpoint: list[Artist] = [self.epoch_text]
        self.per_frame: list[Artist] = [self.step_text]

    def update(self, frame: Frame) -> None:
        """The frame's step (and the next checkpoint's while on the way) and epoch."""
        film, checkpoint = self.film, frame.checkpoint
        step = f"step {int(film.steps[checkpoint]):,}"
        if frame.fraction > 0:  # on the way to the next checkpoint
            step += f" → {int(film.steps[checkpoint + 1]):,}"
        self.step_text.set_text(step)
        epoch = film.epochs[checkpoint]
        where = f"checkpoint {checkpoint + 1} of {film.n_checkpoints}"
        self.epoch_text.set_text(f"epoch {epoch:.2f}  ·  {where}" if np.isfinite(epoch) else where)


class MapPanel:
    """The 2-D map: every image a point coloured by class on axes fixed for the whole film,
    the checkpoint's leaderboard ringed and numbered, and the class legend on the right."""

    def __init__(self, figure: Figure, film: Film, box: Box):
        s, f = box.scale, box.font_scale
        self.colors = point_colors(film)
        names = _legend_names(film)
        legend_width = round(130 * s) if names else 0
        axes_box = box.inset(left=round(14 * f), bottom=round(14 * f), right=legend_width)
        self.axes = self._axes(figure, film, axes_box)
        self.point_groups = self._points(film, s)
        self.rings, self.ranks = self._outliers(film, s, f)
        self.legend = self._legend(figure, film, names, axes_box) if names else None
        self.per_checkpoint: list[Artist] = []
        self.per_frame: list[Artist] = [
            *(line for line, _ in self.point_groups),  # under the rings
            self.rings,
            *self.ranks,
        ]

    @staticmethod
    def _axes(figure: Figure, film: Film, box: Box) -> Axes:
        s, f = box.scale, box.font_scale
        axes = box.add_axes(figure)
        x0, x1, y0, y1 = film.limits
        axes.set_xlim(x0, x1)
        axes.set_ylim(y0, y1)
        axes.set_xticks([])
        axes.set_yticks([])
        name = "PCA" if film.projection == "pca" else "UMAP"
        axes.set_xlabel(f"{name} 1", fontsize=9 * f, color=MUTED, labelpad=2 * s)
        axes.set_ylabel(f"{name} 2", fontsize=9 * f, color=MUTED, labelpad=2 * s)
        for spine in axes.spines.values():
            spine.set_color(FAINT)
        return axes

    def _points(self, film: Film, s: float) -> list[tuple[Line2D, np.ndarray]]:
        """The points as markers, one Line2D per colour and per slice of a fixed shuffled order,
        each with the rows it draws.

        Agg draws a Line2D's markers by stamping one rasterised marker (a tenth of a per-point
        PathCollection's time), and the slices keep any one class from always being painted
        on top of the others.
        """
        n_images = film.xy.shape[1]
        # Fewer, larger, more opaque points for small sets; small translucent ones for 10k+.
        alpha = float(np.clip(1.2 - 0.2 * math.log10(max(n_images, 10)), 0.35, 0.9))
        marker_size = float(np.clip(30_000 / n_images, 3, 28)) * s * s  # points squared
        colors, color_of = np.unique(self.colors, axis=0, return_inverse=True)
        order = np.random.default_rng(0).permutation(n_images)
        groups = []
        for part in np.array_split(order, POINT_SLICES):
            for k, color in enumerate(colors):
                rows = part[color_of[part] == k]
                if not len(rows):
                    continue
                (line,) = self.axes.plot([], [], "o", markersize=math.sqrt(marker_size),
                                         markeredgewidth=0, color=(*color[:3], alpha))  # fmt: skip
                groups.append((line, rows))
        return groups

    def _outliers(self, film: Film, s: float, f: float) -> tuple[PathCollection, list[Annotation]]:
        """An opaque dot with a dark ring per leaderboard place, and its rank beside it."""
        n_top = min(film.top_outliers, film.xy.shape[1])
        rings = self.axes.scatter(
            np.full(n_top, np.nan),
            np.full(n_top, np.nan),
            s=(9 * s) ** 2,
            edgecolors=INK,
            linewidths=1.3 * s,
            zorder=3,
        )
        ranks = [
            self.axes.annotate(
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
        return rings, ranks

    @staticmethod
    def _legend(figure: Figure, film: Film, names: list[str], axes_box: Box) -> Legend:
        """The class legend, to the right of the map's axes."""
        s, f = axes_box.scale, axes_box.font_scale
        colors = list(class_colors(len(film.class_names))) + [UNLABELLED]
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
        legend = figure.legend(
            handles,
            [_short(n, 16) for n in names],
            loc="upper left",
            frameon=False,
            bbox_to_anchor=(axes_box.right + round(10 * s), axes_box.top),
            bbox_transform=IdentityTransform(),
            fontsize=9.5 * f,
            handletextpad=0.3,
            labelspacing=0.55 * max(s, 0.6),
            borderaxespad=0,
            borderpad=0,
            title="class",
            title_fontsize=9.5 * f,
            alignment="left",
        )
        legend.get_title().set_color(MUTED)
        return legend

    def update(self, frame: Frame) -> None:
        """Move every point, and the rings and ranks onto the checkpoint's leaderboard."""
        for line, rows in self.point_groups:
            line.set_data(frame.xy[rows, 0], frame.xy[rows, 1])
        rows = [entry.row for entry in frame.leaders]
        ring_xy = np.full((len(self.ranks), 2), np.nan, np.float32)
        ring_xy[: len(rows)] = frame.xy[rows]
        self.rings.set_offsets(ring_xy)
        ring_colors = np.ones((len(self.ranks), 4))
        ring_colors[: len(rows), :3] = self.colors[rows, :3]  # opaque: they stand out
        self.rings.set_facecolor(ring_colors)
        for k, annotation in enumerate(self.ranks):
            visible = k < len(rows) and bool(np.isfinite(ring_xy[k]).all())
            annotation.set_visible(visible)
            if visible:
                annotation.xy = tuple(ring_xy[k])


def _legend_names(film: Film) -> list[str] | None:
    """The legend's entries: the classes, then "unlabelled" where some image is; None without
    labels or with more classes than a legend can show."""
    if film.labels is None:
        return None
    names = list(film.class_names) + (["unlabelled"] if (film.labels < 0).any() else [])
    return names if len(names) <= MAX_LEGEND else None


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


def _slots(box: Box, n: int) -> list[Slot]:
    """Pixel layout of `n` leaderboard places filling `box`: one column, two past ten places."""
    s, frame_height = box.scale, box.frame[1]
    columns = 1 if n <= 10 else 2
    per_column = math.ceil(n / columns)
    gap = round(12 * s)
    column_width = (box.width - gap * (columns - 1)) // columns
    pitch = (box.top - box.bottom) / per_column
    side = max(8, int(min(pitch - 6 * s, column_width * 0.22)))  # thumbnail edge, pixels
    two_lines = pitch >= 30  # else one line of text per place
    wide = column_width >= 300 * s  # room for a score column at the right edge
    font = float(np.clip(pitch * (0.24 if two_lines else 0.4), 5, 11.5 * box.font_scale))
    radius = font * 0.3
    slots = []
    for k in range(n):
        column, place = divmod(k, per_column)
        x = box.left + column * (column_width + gap)
        y_top = box.top - place * pitch
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
                thumb=(frame_height - round(y_mid + side / 2), thumb_left, side),
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


class LeaderboardPanel:
    """The checkpoint's leaderboard (`film.leaderboard`: outliers, label issues or moved),
    ranked: thumbnail, class, image number, a wrong prediction, and the ranked value. Thumbnails
    are pasted into the rendered pixels."""

    def __init__(self, figure: Figure, film: Film, box: Box):
        self.film = film
        self.colors = point_colors(film)
        n_top = min(film.top_outliers, film.xy.shape[1])
        noun, hint, self.value_text = BOARD_TEXTS[film.leaderboard]
        self._title(figure, box, f"Top {n_top} {noun}", hint)
        self.slots = _slots(box.inset(top=round(26 * box.font_scale)), n_top)
        self._slot_artists(figure, box.frame[1])
        # A line across an empty board saying why it is empty; blank on every other board.
        self.note = figure.text(
            (box.left + box.right) / 2,
            box.top - round(60 * box.font_scale),
            "",
            transform=IdentityTransform(),
            fontsize=10 * box.font_scale,
            color=MUTED,
            ha="center",
        )
        self._thumbs: dict[tuple[int, int], np.ndarray] = {}
        self._checkpoint: int | None = None  # the one the places show
        # The frames and ranks of the places every checkpoint fills never change: background.
        full = min(len(board) for board in film.boards)
        self.per_checkpoint: list[Artist] = [
            *self.frames[full:],
            *self.rank_texts[full:],
            *self.swatches,
            *self.label_texts,
            *self.detail_texts,
            *self.score_texts,
            self.note,
        ]
        self.per_frame: list[Artist] = []

    @staticmethod
    def _title(figure: Figure, box: Box, title_text: str, hint_text: str) -> None:
        """The title, e.g. "Top N outliers", and a hint on reading the number where there is
        room."""
        s, f, px = box.scale, box.font_scale, IdentityTransform()
        y = box.top - round(14 * f)
        title = figure.text(
            box.left,
            y,
            title_text,
            transform=px,
            fontsize=12.5 * f,
            fontweight="bold",
            color=INK,
            va="baseline",
        )
        hint = figure.text(
            box.right,
            y,
            hint_text,
            transform=px,
            fontsize=8.5 * f,
            color=MUTED,
            ha="right",
            va="baseline",
        )
        renderer = figure.canvas.get_renderer()
        if title.get_window_extent(renderer).x1 + 8 * s > hint.get_window_extent(renderer).x0:
            hint.remove()  # a narrow panel: the title matters more

    def _slot_artists(self, figure: Figure, frame_height: int) -> None:
        """Each place's zebra band, thumbnail frame, class dot, rank, label, detail and score
        (the lists `frames`, `swatches`, `rank_texts`, `label_texts`, ...: one per place)."""
        px = IdentityTransform()
        self.rank_texts, self.label_texts, self.detail_texts, self.score_texts = [], [], [], []
        self.swatches, self.frames = [], []
        for k, slot in enumerate(self.slots):
            if k % 2 == 0:
                band = Rectangle(slot.band[:2], *slot.band[2:], transform=px, facecolor=BAND)
                figure.add_artist(band).set(edgecolor="none", zorder=0)
            top, left, side = slot.thumb
            bottom = frame_height - top - side - 1
            frame = Rectangle((left - 1, bottom), side + 2, side + 2, transform=px)
            self.frames.append(figure.add_artist(frame))
            frame.set(facecolor="none", edgecolor=FAINT, linewidth=0.72)
            swatch = Circle(slot.swatch_xy, slot.font * 0.3, transform=px, edgecolor="none")
            self.swatches.append(figure.add_artist(swatch))
            text = {"transform": px, "fontsize": slot.font, "color": INK}
            rank = figure.text(*slot.rank_xy, str(k + 1), **text, ha="center", va="center")
            rank.set(fontsize=slot.font * 1.2, fontweight="bold")
            self.rank_texts.append(rank)
            self.label_texts.append(
                figure.text(*(slot.label_xy or (0, 0)), "", **text, fontweight="bold")
            )
            detail = figure.text(*(slot.detail_xy or (0, 0)), "", **text)
            detail.set(fontsize=slot.font * 0.82, color=MUTED)
            self.detail_texts.append(detail)
            self.score_texts.append(
                figure.text(*slot.score_xy, "", **text, ha=slot.score_ha, family="monospace")
            )

    def slot_texts(self, entry: LeaderboardRow) -> tuple[str, str]:
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

    def update(self, frame: Frame) -> None:
        """Fill the places with the checkpoint's leaderboard; hide the places it leaves empty."""
        if frame.checkpoint == self._checkpoint:  # a tween frame: the board stays
            return
        self._checkpoint = frame.checkpoint
        empty = EMPTY_BOARD.get(self.film.leaderboard, "no scores at this checkpoint")
        self.note.set_text("" if frame.leaders or not self.slots else empty)
        for k, slot in enumerate(self.slots):
            entry = frame.leaders[k] if k < len(frame.leaders) else None
            label, detail = self.slot_texts(entry) if entry else ("", "")
            self.rank_texts[k].set_visible(entry is not None)
            self.score_texts[k].set_text(self.value_text(entry.score) if entry else "")
            self.label_texts[k].set_text(label if slot.label_xy else "")
            self.detail_texts[k].set_text(detail if slot.detail_xy else "")
            self.frames[k].set_visible(entry is not None)
            self.swatches[k].set_visible(entry is not None)
            if entry:
                self.swatches[k].set_facecolor(self.colors[entry.row])

    def paste_thumbnails(self, pixels: np.ndarray, frame: Frame) -> None:
        """Copy the leaders' thumbnails into the rendered `pixels`, in place.

        As exact pixels: sharp, and no per-frame resampling by Agg.
        """
        for slot, entry in zip(self.slots, frame.leaders, strict=False):
            top, left, side = slot.thumb
            pixels[top : top + side, left : left + side] = self._thumbnail(entry.row, side)

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


def _curve_axes(figure: Figure, box: Box, title: str) -> tuple[Axes, Text]:
    """A curve panel's axes against step in `box`, its title above them on the left, and the
    (empty) text on the right that says the value now."""
    s, f, px = box.scale, box.font_scale, IdentityTransform()
    axes = box.inset(left=round(42 * s), bottom=round(18 * f)).add_axes(figure)
    title_y = box.top + round(14 * f)  # above the axes
    figure.text(
        box.left, title_y, title, transform=px, fontsize=12.5 * f, fontweight="bold", color=INK
    )
    value_text = figure.text(
        box.right, title_y, "", transform=px, fontsize=9.5 * f, color=MUTED, ha="right"
    )
    axes.tick_params(labelsize=8 * f, colors=MUTED, length=3 * s, width=0.6)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color(FAINT)
    axes.set_xlabel("step", fontsize=8.5 * f, color=MUTED, labelpad=1)
    return axes, value_text


def _progress_artists(axes: Axes, s: float) -> tuple[Line2D, Line2D, Line2D]:
    """The curve so far (in colour), the line at the frame's step and the dot on the curve
    there, all empty until updated; and the step axis's ticks."""
    (done,) = axes.plot([], [], color=ACCENT, linewidth=1.8 * s)
    now_line = axes.axvline(0, color=INK, linewidth=0.8 * s, alpha=0.6)
    (now_dot,) = axes.plot(
        [],
        [],
        marker="o",
        markersize=5.5 * s,
        color=ACCENT,
        markeredgecolor="white",
        markeredgewidth=1.2 * s,
        clip_on=False,  # the last checkpoint sits on the right edge
    )
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    return done, now_line, now_dot


def _show_progress(panel: LossPanel | CheckpointPanel, curve: np.ndarray, step: float) -> None:
    """Colour `curve` ((k, 2) step, value; k >= 1) up to `step`, with the dot and value text at
    its value there (linear between points) while `step` lies within it."""
    done = curve[curve[:, 0] <= step]
    inside = curve[0, 0] <= step <= curve[-1, 0]
    now = float(np.interp(step, curve[:, 0], curve[:, 1]))
    if inside:
        done = np.vstack([done, [[step, now]]])
    panel.done.set_data(done[:, 0], done[:, 1])
    panel.now_dot.set_data([step] if inside else [], [now] if inside else [])
    panel.value_text.set_text(f"{now:.3f} at step {int(round(step)):,}" if inside else "")


class LossPanel:
    """The training loss: all of it faint, the part already trained in colour, a marker now."""

    def __init__(self, figure: Figure, film: Film, box: Box):
        self.film = film
        s, f = box.scale, box.font_scale
        self.axes, self.value_text = _curve_axes(figure, box, "training loss")
        self._whole_curve(s, f)
        self.done, self.now_line, self.now_dot = _progress_artists(self.axes, s)
        self.per_checkpoint: list[Artist] = []
        self.per_frame: list[Artist] = [self.done, self.now_line, self.now_dot, self.value_text]

    def _whole_curve(self, s: float, f: float) -> None:
        """The axes' limits and the whole loss curve, faint, with the eval loss as dots; or a
        note that there is no training log."""
        axes, film, loss = self.axes, self.film, self.film.loss
        last_step = max(float(film.steps[-1]), float(loss[-1, 0]) if len(loss) else 0.0)
        axes.set_xlim(min(0.0, float(film.steps[0])), max(last_step, 1.0))
        if not len(loss):
            axes.set_yticks([])
            axes.text(
                0.5,
                0.5,
                "no training log",
                transform=axes.transAxes,
                ha="center",
                va="center",
                fontsize=9.5 * f,
                color=MUTED,
            )
            return
        top_value = float(
            max(loss[:, 1].max(), film.eval_loss[:, 1].max() if len(film.eval_loss) else 0)
        )
        axes.set_ylim(min(0.0, float(loss[:, 1].min())), top_value * 1.08 or 1.0)
        axes.plot(loss[:, 0], loss[:, 1], color=FAINT, linewidth=1.4 * s)
        if len(film.eval_loss):
            axes.plot(
                film.eval_loss[:, 0],
                film.eval_loss[:, 1],
                linestyle="",
                marker="o",
                markersize=3 * s,
                color="#e8833a",
                label="eval",
            )
            axes.legend(fontsize=8 * f, frameon=False, loc="upper right")

    def update(self, frame: Frame) -> None:
        """Colour the curve up to the frame's step and mark the loss there."""
        if len(self.film.loss):
            _show_progress(self, self.film.loss, frame.step)
        self.now_line.set_xdata([frame.step, frame.step])


class CheckpointPanel:
    """A metric of OUT/checkpoints (`film.curve`: accuracy or k-NN accuracy) against step: the
    whole curve faint with a dot per checkpoint, the part already trained in colour, a marker
    now (moving linearly between checkpoints on tween frames). The y axis is 0 to 1."""

    def __init__(self, figure: Figure, film: Film, box: Box):
        assert film.curve is not None and len(film.curve), "load_film checks the panel's data"
        self.film, self.curve = film, film.curve
        s = box.scale
        self.axes, self.value_text = _curve_axes(figure, box, CURVE_TITLES[film.panel])
        last_step = max(float(film.steps[-1]), float(self.curve[-1, 0]))
        first_step = min(0.0, float(film.steps[0]), float(self.curve[0, 0]))
        self.axes.set_xlim(first_step, max(last_step, 1.0))
        self.axes.set_ylim(0, 1.04)
        self.axes.yaxis.set_major_locator(MultipleLocator(0.25))
        (self.whole,) = self.axes.plot(
            self.curve[:, 0],
            self.curve[:, 1],
            color=FAINT,
            linewidth=1.4 * s,
            marker="o",
            markersize=2.5 * s,
        )
        self.done, self.now_line, self.now_dot = _progress_artists(self.axes, s)
        self.per_checkpoint: list[Artist] = []
        self.per_frame: list[Artist] = [self.done, self.now_line, self.now_dot, self.value_text]

    def update(self, frame: Frame) -> None:
        """Colour the curve up to the frame's step and mark the metric there."""
        _show_progress(self, self.curve, frame.step)
        self.now_line.set_xdata([frame.step, frame.step])


# --- The frame -------------------------------------------------------------------------------


class FrameRenderer:
    """One figure for one film, built once and redrawn per frame (what each worker holds).

    In: a `Film` and the frame size (width, height) in pixels. `render(i)` -> (height, width,
    3) uint8 RGB.
    """

    def __init__(self, film: Film, size: tuple[int, int]):
        self.film = film
        self.width, self.height = width, height = size
        self.figure = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
        self.canvas = FigureCanvasAgg(self.figure)  # before the panels: they measure text
        boxes = layout(size)
        self.map = MapPanel(self.figure, film, boxes.map)
        self.header = HeaderPanel(self.figure, film, boxes.header)
        self.board = LeaderboardPanel(self.figure, film, boxes.leaderboard)
        curve = LossPanel if film.panel == "loss" else CheckpointPanel
        self.curve: LossPanel | CheckpointPanel = curve(self.figure, film, boxes.loss)
        # Blitting in two layers. What never changes is drawn once into `_background`; the
        # per-checkpoint artists are drawn over it once per checkpoint into `_layer` (tween
        # frames reuse it); every frame then draws only what moves, panel by panel in this
        # order: the map's points first, under everything else.
        self.panels: tuple[Panel, ...] = (self.map, self.header, self.board, self.curve)
        self.per_checkpoint = [a for panel in self.panels for a in panel.per_checkpoint]
        self.per_frame = [a for panel in self.panels for a in panel.per_frame]
        for artist in self.per_checkpoint + self.per_frame:
            artist.set_animated(True)
        self._background: Any = None
        self._layer: tuple[int, Any] | None = None  # (checkpoint, its saved pixels)
        # The parts tests look at, by the names they had before the panels.
        self.step_text, self.epoch_text = self.header.step_text, self.header.epoch_text
        self.map_axes, self.point_groups = self.map.axes, self.map.point_groups
        self.legend, self.slots = self.map.legend, self.board.slots
        self.rank_texts, self.label_texts = self.board.rank_texts, self.board.label_texts
        self.score_texts, self._slot_texts = self.board.score_texts, self.board.slot_texts

    def render(self, index: int) -> np.ndarray:
        """Frame `index` as a (height, width, 3) uint8 RGB array."""
        frame = self.film.frame(index)
        with rc_context(RC):
            if self._background is None:
                self.canvas.draw()
                self._background = self.canvas.copy_from_bbox(self.figure.bbox)
            for panel in self.panels:
                panel.update(frame)
            if self._layer is None or self._layer[0] != frame.checkpoint:
                self.canvas.restore_region(self._background)
                self._draw(self.per_checkpoint)
                self._layer = (frame.checkpoint, self.canvas.copy_from_bbox(self.figure.bbox))
            else:
                self.canvas.restore_region(self._layer[1])
            self._draw(self.per_frame)
        pixels = np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
        self.board.paste_thumbnails(pixels, frame)
        return pixels

    def _draw(self, artists: list[Artist]) -> None:
        for artist in artists:
            self.figure.draw_artist(artist)
