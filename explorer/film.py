"""What the film of the embeddings shows: OUT read once into plain numpy, frame by frame.

In: an OUT folder of `explorer build --run`, read through `explorer.output`: OUT/timeline (one
row per image per checkpoint: 2-D positions, outlier scores, label quality, movement,
predictions), OUT/default (the images and their labels), OUT/training_log (the loss curve;
optional), OUT/checkpoints (accuracy and k-NN accuracy per checkpoint, for those panels) and
run.json (names for the subtitle).
Out: a `Film`, everything the frames need as plain numpy arrays (cheap to hand to worker
processes); `Film.frame(i)` says what frame i shows. `leaderboard` ranks one checkpoint's
images: the outliers, the likeliest label issues or the images that moved most. Nothing here
draws: see `explorer.draw` for that and `explorer.animate` for the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image

from explorer.errors import ExplorerError
from explorer.film_choices import LEADERBOARDS, MAX_TOP_OUTLIERS, PANELS, PROJECTIONS
from explorer.output import Output, read

# The OUT/checkpoints column of each PANELS curve but the loss (OUT/training_log), and what a
# build needs to write it.
PANEL_COLUMNS = {"accuracy": "accuracy", "knn-accuracy": "knn_accuracy"}
PANEL_NEEDS = {
    "accuracy": "a classification head and labels",
    "knn-accuracy": "labels",
}
# What each LEADERBOARDS board ranks: a timeline column, and whether its highest values come
# first. movement is NaN at the first checkpoint (nothing to compare with), so the "moved"
# board of the first checkpoint is empty.
RANKED_BY = {
    "outliers": ("outlier_score", False),  # low = odd
    "label-issues": ("label_quality", False),  # low probability of the given label = suspect
    "moved": ("movement", True),  # high = new neighbours since the previous checkpoint
}


@dataclass(frozen=True)
class LeaderboardRow:
    """One place on a checkpoint's leaderboard."""

    rank: int  # 1 = the first place (e.g. the most outlying image: lowest outlier_score)
    row: int  # index of the image in OUT/default
    score: float  # the ranked value at this checkpoint (outlier_score, label_quality, movement)
    pred: int | None = None  # class predicted at this checkpoint, where the timeline has it


def leaderboard(
    timeline_at_step: Mapping[str, Any], n: int, *, kind: str = "outliers"
) -> list[LeaderboardRow]:
    """Rank one checkpoint's images and return the first `n`.

    In: the timeline rows of one checkpoint as a mapping of column name to values (a dict of
    arrays, a pandas DataFrame) with `row`, the column `kind` ranks by (see `RANKED_BY`:
    `outlier_score` for "outliers", `label_quality` for "label-issues", `movement` for
    "moved") and `pred_label` optionally.
    Out: up to `n` rows, lowest value first (highest for "moved"); ties go to the lower row so
    the order is stable; rows without a finite value are never listed.
    """
    name, highest_first = RANKED_BY[kind]
    rows = np.asarray(timeline_at_step["row"], dtype=np.int64)
    scores = np.asarray(timeline_at_step[name], dtype=np.float64)
    preds = (
        np.asarray(timeline_at_step["pred_label"], dtype=np.int64)
        if "pred_label" in timeline_at_step
        else None
    )
    finite = np.flatnonzero(np.isfinite(scores))
    key = -scores[finite] if highest_first else scores[finite]
    order = finite[np.lexsort((rows[finite], key))][: max(n, 0)]
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
    boards: tuple[tuple[LeaderboardRow, ...], ...]  # per checkpoint, first place first
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
    panel: str = "loss"  # the curve under the leaderboard, one of PANELS
    curve: np.ndarray | None = None  # (k, 2) (step, value) of OUT/checkpoints for that panel
    leaderboard: str = "outliers"  # what `boards` rank, one of LEADERBOARDS

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


def load_film(
    out: str | Path,
    projection: str = "pca",
    top_outliers: int = 8,
    tween: int = 0,
    *,
    panel: str = "loss",
    leaderboard: str = "outliers",
) -> Film:
    """Read OUT once into a `Film`: positions, leaderboards, thumbnails' images, the curve.

    `panel` (one of PANELS) is the curve under the leaderboard: the training loss, or the
    accuracy or k-NN accuracy per checkpoint from OUT/checkpoints. `leaderboard` (one of
    LEADERBOARDS) is what each checkpoint's board ranks (see `leaderboard`).

    Raises ExplorerError when OUT is not an OUT folder, has no timeline (a build without
    `--run`), when the timeline lacks the chosen projection or the leaderboard's column, when
    OUT/checkpoints lacks the panel's values, or when an argument is out of range.
    """
    _check_arguments(projection, top_outliers, tween)
    _check_choices(panel, leaderboard)
    output = read(out)
    default, timeline = _default_and_timeline(output)
    table = timeline.with_format("arrow")[:]  # memory-mapped columns, nothing decoded
    where = output.path / "timeline"
    n_images = len(default)

    def column(name: str, dtype: Any) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    x_name, y_name = f"{projection}_x", f"{projection}_y"
    if x_name not in table.column_names or y_name not in table.column_names:
        raise ExplorerError(f"{where} has no {projection.upper()} columns ({x_name}, {y_name})")
    rows, step_of_row = column("row", np.int64), column("step", np.int64)
    x, y = column(x_name, np.float32), column(y_name, np.float32)
    if projection == "umap" and not np.isfinite(x).any():
        raise ExplorerError(
            f"{where} has no UMAP positions: use projection 'pca' or rebuild with "
            "`explorer build --run ... --timeline-umap aligned`"
        )
    if rows.min() < 0 or rows.max() >= n_images:
        raise ExplorerError(f"{where} names rows outside OUT/default's {n_images}")

    steps, checkpoint_of_row = np.unique(step_of_row, return_inverse=True)
    epochs = np.full(len(steps), np.nan)
    if "epoch" in table.column_names:
        epochs[checkpoint_of_row] = column("epoch", np.float64)  # a checkpoint's rows agree
    xy = np.full((len(steps), n_images, 2), np.nan, dtype=np.float32)
    xy[checkpoint_of_row, rows, 0] = x
    xy[checkpoint_of_row, rows, 1] = y

    ranked_by = _ranked_column(table.column_names, leaderboard, output.path)
    ranked = {"row": rows, ranked_by: column(ranked_by, np.float64)}
    if leaderboard == "label-issues" and not np.isfinite(ranked[ranked_by]).any():
        raise ExplorerError(_no_label_quality(where))
    if "pred_label" in table.column_names:
        ranked["pred_label"] = column("pred_label", np.int64)
    boards = _boards(ranked, checkpoint_of_row, len(steps), top_outliers, leaderboard)

    labels, class_names = _labels(default)
    pred_names: tuple[str, ...] = ()
    if "pred_label" in ranked:
        feature = timeline.features["pred_label"]
        pred_names = tuple(getattr(feature, "names", None) or class_names)
    loss, eval_loss = _loss_curves(output.table("training_log"))
    curve = _checkpoint_curve(output, panel)

    return Film(
        steps=steps,
        epochs=epochs,
        xy=xy,
        boards=boards,
        labels=labels,
        class_names=class_names,
        pred_names=pred_names,
        images=_leader_images(default, boards),
        loss=loss,
        eval_loss=eval_loss,
        limits=_limits(xy),
        projection=projection,
        top_outliers=top_outliers,
        tween=tween,
        subtitle=_subtitle(output.run, n_images, projection),
        panel=panel,
        curve=curve,
        leaderboard=leaderboard,
    )


def _check_arguments(projection: str, top_outliers: int, tween: int) -> None:
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


def _check_choices(panel: str, leaderboard: str) -> None:
    if panel not in PANELS:
        raise ExplorerError(f"panel must be one of {', '.join(PANELS)}, not {panel!r}")
    if leaderboard not in LEADERBOARDS:
        raise ExplorerError(
            f"leaderboard must be one of {', '.join(LEADERBOARDS)}, not {leaderboard!r}"
        )


def _ranked_column(columns: list[str], leaderboard: str, out: Path) -> str:
    """The timeline column the leaderboard ranks by, or an error naming how to get it."""
    name, _ = RANKED_BY[leaderboard]
    if name in columns:
        return name
    if leaderboard == "label-issues":
        raise ExplorerError(_no_label_quality(out / "timeline"))
    raise ExplorerError(
        f"{out / 'timeline'} has no {name} column, which the {leaderboard!r} leaderboard "
        f"ranks by: rebuild OUT with `explorer build --run RUN_FOLDER --out {out} --overwrite`"
    )


def _no_label_quality(where: Path) -> str:
    return (
        f"{where} has no label_quality, which the 'label-issues' leaderboard ranks by: it needs "
        "a run with a classification head on a labelled split (`explorer build --run`); "
        "choose leaderboard 'outliers' or 'moved'"
    )


def _default_and_timeline(output: Output) -> tuple[datasets.Dataset, datasets.Dataset]:
    """OUT/default and OUT/timeline, or an error naming `explorer build --run`."""
    default = output.default
    if not output.has("timeline"):
        raise ExplorerError(
            f"{output.path} has no timeline: animate needs the checkpoints of a fine-tuning "
            f"run; write them with `explorer build --run RUN_FOLDER --out {output.path}`"
        )
    timeline = output.table("timeline")
    if timeline is None:
        raise ExplorerError(
            f"{output.path / 'timeline'} is empty: rebuild OUT with `explorer build --run`"
        )
    return default, timeline


def _boards(
    ranked: dict[str, np.ndarray],
    checkpoint_of_row: np.ndarray,
    n_checkpoints: int,
    n: int,
    kind: str,
) -> tuple[tuple[LeaderboardRow, ...], ...]:
    """The leaderboard of every checkpoint from the timeline's columns `ranked`."""
    by_checkpoint = np.argsort(checkpoint_of_row, kind="stable")
    ends = np.searchsorted(checkpoint_of_row[by_checkpoint], np.arange(n_checkpoints), "right")
    return tuple(
        tuple(leaderboard({name: values[mine] for name, values in ranked.items()}, n, kind=kind))
        for mine in np.split(by_checkpoint, ends[:-1])
    )


def _labels(default: datasets.Dataset) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Class code of every image, and the class names, from OUT/default (None: no labels)."""
    features = default.features
    if "label" not in features and "label_str" not in features:
        return None, ()
    table = default.with_format("arrow")[:]
    if "label" in features:
        if isinstance(features["label"], datasets.ClassLabel):
            codes = table.column("label").fill_null(-1).to_numpy(zero_copy_only=False)
            return codes.astype(np.int64), tuple(features["label"].names)
        return _codes(table.column("label").to_numpy(zero_copy_only=False))
    return _codes(table.column("label_str").to_numpy(zero_copy_only=False))


def _codes(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class codes and names for a label column that is not a ClassLabel."""
    names, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64), tuple(str(name) for name in names)


def _leader_images(
    default: datasets.Dataset, boards: tuple[tuple[LeaderboardRow, ...], ...]
) -> dict[int, np.ndarray]:
    """RGB arrays of the images that ever reach a leaderboard: at most checkpoints x places,
    so only those are decoded."""
    wanted = sorted({entry.row for board in boards for entry in board})
    if "image" not in default.features or not wanted:
        return {}
    return {
        row: _rgb(image) for row, image in zip(wanted, default.select(wanted)["image"], strict=True)
    }


def _rgb(image: Any) -> np.ndarray:
    """A decoded image (PIL) as an RGB uint8 array."""
    if not isinstance(image, Image.Image):
        return np.zeros((1, 1, 3), np.uint8)
    return np.asarray(image.convert("RGB"))


def _loss_curves(log: datasets.Dataset | None) -> tuple[np.ndarray, np.ndarray]:
    """(step, loss) and (step, eval_loss) pairs of OUT/training_log, finite and by step;
    (0, 2) arrays where OUT has no log or the log lacks them."""
    empty = np.zeros((0, 2))
    if log is None or "step" not in log.column_names:
        return empty, empty
    table = log.with_format("arrow")[:]
    steps = table.column("step").to_numpy(zero_copy_only=False).astype(np.float64)
    curves = []
    for name in ("loss", "eval_loss"):
        values = (
            table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            if name in table.column_names
            else np.full(len(steps), np.nan)
        )
        keep = np.isfinite(values) & np.isfinite(steps)
        pairs = np.stack([steps[keep], values[keep]], axis=1)
        curves.append(pairs[np.argsort(pairs[:, 0], kind="stable")])
    return curves[0], curves[1]


def _checkpoint_curve(output: Output, panel: str) -> np.ndarray | None:
    """(step, value) pairs of the panel's OUT/checkpoints column, finite and by step; None for
    the loss panel. Raises ExplorerError naming how to get the values when OUT lacks them."""
    if panel == "loss":
        return None
    name, where = PANEL_COLUMNS[panel], output.path / "checkpoints"
    checkpoints = output.table("checkpoints")
    if checkpoints is None:
        raise ExplorerError(
            f"{output.path} has no checkpoints table, which the {panel!r} panel needs: rebuild "
            f"OUT with `explorer build --run RUN_FOLDER --out {output.path} --overwrite`, "
            "or choose panel 'loss'"
        )
    pairs = np.zeros((0, 2))
    if name in checkpoints.column_names and "step" in checkpoints.column_names:
        table = checkpoints.with_format("arrow")[:]
        steps, values = (
            table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
            for c in ("step", name)
        )
        keep = np.isfinite(steps) & np.isfinite(values)
        pairs = np.stack([steps[keep], values[keep]], axis=1)
    if not len(pairs):
        raise ExplorerError(
            f"{where} has no {name} values, which the {panel!r} panel shows: they need "
            f"{PANEL_NEEDS[panel]} (`explorer build --run`); or choose panel 'loss'"
        )
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def _limits(xy: np.ndarray) -> tuple[float, float, float, float]:
    """Map limits that hold every point of every checkpoint, with a small margin."""
    finite = xy[np.isfinite(xy).all(axis=-1)]
    if len(finite) == 0:
        return -1.0, 1.0, -1.0, 1.0
    low, high = finite.min(axis=0).astype(float), finite.max(axis=0).astype(float)
    span = np.where(high - low > 0, high - low, 2.0)
    low, high = low - 0.04 * span, high + 0.04 * span
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def _subtitle(run: Mapping[str, Any], n_images: int, projection: str) -> str:
    """Run, dataset and projection for the frame's subtitle, from OUT's run record."""
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


def _display_name(text: str) -> str:
    """A local path shortened to its last part; a Hub id (user/name) kept whole."""
    local = text.startswith(("/", ".", "~")) or "\\" in text or Path(text).exists()
    return Path(text).name if local else text
