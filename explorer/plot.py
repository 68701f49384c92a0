"""Training curves of a run as one image file: `explorer plot OUT --out FILE`.

Reads OUT/training_log (loss as logged by the Trainer) and OUT/checkpoints (one row per
checkpoint, scored on the explored dataset; see `explorer.columns.CHECKPOINTS`) and stacks one
panel per quantity against the training step: loss, accuracy (overall and per class), k-NN
accuracy and class separation. A panel whose data is absent is left out.

`curves_figure(out)` builds the matplotlib `Figure` (Agg, no pyplot global state); `plot(out,
path)` writes it whole or not at all, in the format of the path's suffix.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from explorer import output
from explorer.errors import ExplorerError
from explorer.files import written_in_place

FORMATS = (".png", ".svg", ".pdf")
PANEL_HEIGHT = 2.5  # inches per panel
MAX_MARKERS = 60  # points per line up to which each is marked (checkpoints; not a loss log)
MAX_LEGEND = 10  # more classes than this: their lines stay, their legend entries would not fit
# Per label: the overall accuracy stands out above the class lines; eval curves are dashed.
STYLES = {
    "overall": {"color": "black", "linewidth": 2, "zorder": 3},
    "eval": {"color": "dimgray", "linestyle": "--"},
}
Series = list[tuple[str, np.ndarray, np.ndarray]]  # [(label, steps, values)]
TITLES = {
    "loss": "Loss",
    "accuracy": "Accuracy",
    "knn_accuracy": "k-NN accuracy (10 nearest neighbours vote)",
    "class_separation": "Class separation (cosine silhouette)",
}


def curves_figure(out: str | Path | output.Output, *, width: float = 8.0) -> Figure:
    """The training curves of the OUT folder `out` (a path or an `output.Output`).

    Returns a Figure of `width` inches by 2.5 inches per panel, panels stacked top to bottom on
    a shared step axis, each titled as in `TITLES` and left out when its data is absent:

    - "Loss": training loss ("train") and eval loss ("eval") from OUT/training_log; without a
      log, the loss of OUT/checkpoints ("train").
    - "Accuracy": OUT/checkpoints' accuracy ("overall", thick), one thin line per class from
      per_class_accuracy (labelled with the class name), and eval_accuracy ("eval").
    - "k-NN accuracy ...", "Class separation ...": those columns of OUT/checkpoints.

    NaN points (not logged at that step, class absent) are dropped from each line. Raises
    `ExplorerError` when OUT has neither table or nothing in them to draw.
    """
    out = out if isinstance(out, output.Output) else output.read(out)
    log, checkpoints = out.table("training_log"), out.table("checkpoints")
    if log is None and checkpoints is None:
        raise ExplorerError(
            f"{out.path} has no training_log or checkpoints table: build it from a run, "
            "`explorer build --run RUN --out OUT`"
        )
    panels: dict[str, Series] = {name: [] for name in TITLES}
    if log is not None:
        panels["loss"] += _series(log, "train", "loss") + _series(log, "eval", "eval_loss")
    elif checkpoints is not None:
        panels["loss"] += _series(checkpoints, "train", "loss")
    if checkpoints is not None:
        panels["accuracy"] += _series(checkpoints, "overall", "accuracy")
        panels["knn_accuracy"] += _series(checkpoints, "k-NN", "knn_accuracy")
        panels["class_separation"] += _series(checkpoints, "silhouette", "class_separation")
    if log is not None:
        panels["accuracy"] += _series(log, "eval", "eval_accuracy")
    per_class = _per_class(checkpoints, out)
    drawn = [name for name, lines in panels.items() if lines or (name == "accuracy" and per_class)]
    if not drawn:
        raise ExplorerError(f"{out.path}: training_log and checkpoints hold nothing to plot")

    figure = Figure(figsize=(width, PANEL_HEIGHT * len(drawn)), layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself: the figure renders with Agg, no pyplot
    axes = figure.subplots(len(drawn), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, drawn, strict=True):
        ax.set_title(TITLES[name], loc="left", fontsize="medium")
        ax.grid(alpha=0.3)
        for label, x, y in panels[name]:
            marker = "." if len(x) <= MAX_MARKERS else None  # a logged loss: a line is clearer
            ax.plot(x, y, label=label, marker=marker, **STYLES.get(label, {}))
        if name == "accuracy" and per_class:
            _draw_per_class(ax, per_class)
        shown = len(ax.get_legend_handles_labels()[1])
        if name in ("loss", "accuracy") and shown > 1:
            ax.legend(fontsize="small", ncols=2 if shown > 5 else 1)
    axes[-1].set_xlabel("step")
    return figure


def plot(
    out: str | Path | output.Output, path: str | Path, *, width: float = 8.0, dpi: int = 100
) -> Path:
    """Write the training curves of the OUT folder `out` to `path`; return `path`.

    The format follows the suffix (.png, .svg or .pdf); the file is `width` inches (times `dpi`
    pixels for a PNG) wide, 2.5 inches per panel high (see `curves_figure`). It is written whole
    or not at all. Raises `ExplorerError` for another suffix or an OUT with nothing to plot.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ExplorerError(f"{path}: plot writes {', '.join(FORMATS)} files; pick one suffix")
    figure = curves_figure(out, width=width)
    with written_in_place(path, folder=False) as partial:
        figure.savefig(partial, format=path.suffix.lower()[1:], dpi=dpi, facecolor="white")
    return path


def _series(table: datasets.Dataset, label: str, column: str) -> Series:
    """[(label, steps, values)] for `column` of `table` without its NaN rows; [] if none."""
    if column not in table.column_names:
        return []
    steps = np.asarray(table["step"], dtype=np.float64)
    values = np.asarray(table[column], dtype=np.float64)
    keep = ~np.isnan(values)
    return [(label, steps[keep], values[keep])] if keep.any() else []


def _per_class(checkpoints: datasets.Dataset | None, out: output.Output) -> Series:
    """[(class name, steps, accuracies)] from per_class_accuracy, one per class; [] if absent."""
    if checkpoints is None or "per_class_accuracy" not in checkpoints.column_names:
        return []
    steps = np.asarray(checkpoints["step"], dtype=np.float64)
    values = np.asarray(checkpoints["per_class_accuracy"], dtype=np.float64)  # (C, K)
    # The class names live in OUT/default; a partial OUT without it still plots.
    names = out.class_names if out.table("default") is not None else None
    if names is None or len(names) != values.shape[1]:
        names = [f"class {k}" for k in range(values.shape[1])]
    return [(n, steps[~np.isnan(v)], v[~np.isnan(v)]) for n, v in zip(names, values.T, strict=True)]


def _draw_per_class(ax: Axes, per_class: Series) -> None:
    """One thin line per class; its name goes in the legend only while the legend fits."""
    colors = colormaps["tab10" if len(per_class) <= MAX_LEGEND else "viridis"]
    for k, (name, x, y) in enumerate(per_class):
        color = colors(k if len(per_class) <= MAX_LEGEND else k / max(len(per_class) - 1, 1))
        label = name if len(per_class) <= MAX_LEGEND else f"_{name}"  # "_": not in the legend
        ax.plot(x, y, label=label, gid=f"class:{name}", color=color, linewidth=0.8, alpha=0.7)
