"""The Spotlight layouts: what the reviewer sees, as functions of the columns a dataset has.

Read top to bottom:

1. The builders, each a function of the column names present (so a dataset without labels
   still gets a layout that refers only to its own columns):
   - `pre_post_ft`: the seed article's review. Table, the foundation and the fine-tuned
     maps side by side, an inspector with `image` beside `nn_image`.
   - `checkpoint_review`: first against last checkpoint (PCA maps) with the top outliers
     of each.
   - `outlier_review`: the table sorted by `outlier_score`, histograms of both views' scores,
     the label issues where there are any.
   - `training_dynamics`: for a build from a run with a head, the data map (variability
     against confidence, coloured by correctness) and the table sorted by forgetting events.
   - `basic`: table and inspector, for a dataset that is not enriched.
   Every layout has Spotlight's issues widget, "Findings", listing `explorer.findings`
   (selecting one selects its rows). Every tab set opens on a scatterplot of precomputed
   coordinates, a table or the findings, so the first view computes nothing; Spotlight's own
   similarity maps (which run UMAP in the server) sit behind the maps in a second tab.
2. `choose_layout(columns)`: the one that fits, which `explorer show` opens.
3. The JSON tools: `layout_columns` (the columns a layout names), `write_layouts` (the
   files of `explorer layouts` and of a published repo) and `resolve_layout` (a name, a
   JSON file checked against the columns, or None for the fitting one).

Serving the layouts is `explorer.spotlight`'s business, not this file's.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

from loguru import logger
from pydantic import ValidationError

from explorer import columns as column_docs
from explorer.errors import ExplorerError
from explorer.output import DEFAULT_NAMES

# Importing Spotlight warns that an optional analyzer (cleanvision) is missing; explorer
# never runs Spotlight's analyzers, so the warning would only confuse.
logger.disable("renumics.spotlight.analysis.analyzers.cleanvision")

from renumics.spotlight import layout as sl  # noqa: E402
from renumics.spotlight.layout import lenses  # noqa: E402
from renumics.spotlight.layout.nodes import Layout, Tab  # noqa: E402

LAYOUT_NAMES = ("pre_post_ft", "checkpoint_review", "outlier_review", "training_dynamics")

# The columns of OUT/default (all optional ones included, the training dynamics of a build
# from a run too): what `write_layouts` assumes.
ALL_COLUMNS: tuple[str, ...] = tuple({**column_docs.DEFAULT, **column_docs.DYNAMICS})

# The columns of the data map: without them there is no training_dynamics layout.
DYNAMICS_COLUMNS = ("confidence", "variability", "correctness", "forgetting_events")

# The file, beside the named layouts, holding the layout `explorer show` opens for the
# columns they were made for: what a published repo's Space serves.
DEFAULT_LAYOUT_FILE = "default.json"


# --------------------------------------------------------------------------- builders


def _has(columns: Collection[str], *names: str) -> bool:
    return all(name in columns for name in names)


def _present(columns: Collection[str], *names: str) -> list[str]:
    """The given names that are columns, in the given order."""
    return [name for name in names if name in columns]


def _label_column(columns: Collection[str]) -> str | None:
    """The column to colour and stack by: the ClassLabel, else its name, else none."""
    for name in ("label", "label_str"):
        if name in columns:
            return name
    return None


def _labels(columns: Collection[str]) -> list[str]:
    """The label column for a table: the ClassLabel shows names, so label_str only without it."""
    label = _label_column(columns)
    return [label] if label else []


def _colour(columns: Collection[str], score: str) -> str | None:
    """What to colour a map by: the label, else (no labels) that map's outlier score."""
    return _label_column(columns) or (score if score in columns else None)


def _lens(kind: Callable[..., lenses.Lens], column: str, key: str) -> lenses.Lens:
    """A lens with a stable id (Spotlight draws a random uuid), so regenerated JSON diffs clean."""
    lens = kind(column)
    lens.id = f"{key}-{column}"
    return lens


def _inspectors(columns: Collection[str], key: str) -> list[Tab]:
    """Two inspectors side by side: the selected rows' images with their facts, and their
    nearest neighbours with the distance.

    Spotlight's inspector stacks its lenses (one column per selected row), so a second
    inspector is the way to put `nn_image` beside `image`; both follow the selection.
    """
    facts = _present(
        columns,
        *_labels(columns),
        "pred_label",
        "pred_prob",
        "outlier_score",
        "outlier_score_found",
        "outlier_score_ft",
        "label_quality",
        "is_label_issue",
    )
    row = [_lens(lenses.image, name, key) for name in _present(columns, "image")]
    row += [_lens(lenses.scalar, name, key) for name in facts]
    tabs = [sl.tab(sl.inspector("Inspector", row, num_columns=4))]
    if "nn_image" in columns:
        neighbour = [_lens(lenses.image, "nn_image", key)]
        neighbour += [
            _lens(lenses.scalar, name, key) for name in _present(columns, "nn_distance", "nn_id")
        ]
        tabs.append(sl.tab(sl.inspector("Nearest neighbour", neighbour, num_columns=4)))
    return tabs


def _table(
    name: str,
    columns: Collection[str],
    visible: list[str],
    sort_by: str | None = None,
    order: Literal["ascending", "descending"] = "ascending",
) -> sl.Table:
    """A table of the `visible` columns that exist, sorted by `sort_by` if given.

    No image columns: Spotlight 1.8's table prints "<bytes>" for them; the inspector shows
    the images of the selected rows.
    """
    sorting = [(sort_by, order)] if sort_by and sort_by in columns else None
    return sl.table(name, visible_columns=_present(columns, *visible), sort_by_columns=sorting)


def _findings() -> Tab:
    """Spotlight's issues widget: the findings `explorer show` passes (`explorer.findings`),
    most severe first; clicking one selects its rows in every widget."""
    return sl.tab(sl.issues("Findings"))


def _map_tab(
    title: str,
    columns: Collection[str],
    xy: tuple[str, str],
    embedding: str,
    reduction: Literal["umap", "pca"],
    colour: str | None,
) -> Tab:
    """A tab set opening on a scatterplot of precomputed coordinates.

    Spotlight's similarity map on the embedding column comes second: it reduces in the
    server, so it only runs when someone clicks its tab.
    """
    widgets: list[Any] = [sl.scatterplot(title, *xy, color_by_column=colour)]
    if embedding in columns:
        widgets.append(
            sl.similaritymap(
                f"{title}: Spotlight {reduction.upper()} (computes)",
                [embedding],
                reduction,
                color_by_column=colour,
            )
        )
    return sl.tab(*widgets)


def pre_post_ft(
    columns: Collection[str] = ALL_COLUMNS, names: tuple[str, str] = DEFAULT_NAMES
) -> Layout:
    """The seed article's review: table, both UMAP maps side by side, inspector below.

    Maps are coloured by label, or without labels by each model's own outlier score.

    Parameters
    ----------
    columns : collection of str, default=ALL_COLUMNS
        The dataset's column names; the layout names no others except the map coordinates
        (`umap_found_x`, ..., which `choose_layout` requires for this layout).
    names : (str, str), default=("foundation", "fine-tuned")
        What the first and the second embedding are called in titles.

    Returns
    -------
    Layout
    """
    maps = sl.split(
        _map_tab(
            f"UMAP {names[0]}",
            columns,
            ("umap_found_x", "umap_found_y"),
            "embedding_foundation",
            "umap",
            _colour(columns, "outlier_score_found"),
        ),
        _map_tab(
            f"UMAP {names[1]}",
            columns,
            ("umap_ft_x", "umap_ft_y"),
            "embedding_ft",
            "umap",
            _colour(columns, "outlier_score_ft"),
        ),
        orientation="horizontal",
        weight=2,
    )
    table = _table(
        "Table",
        columns,
        [
            *_labels(columns),
            "pred_label",
            "outlier_score_found",
            "outlier_score_ft",
            "nn_id",
            "nn_distance",
            "nn_flag",
        ],
    )
    top = sl.split(sl.tab(table), maps, orientation="horizontal", weight=3)
    bottom = sl.split(
        _findings(), *_inspectors(columns, "pre-post"), orientation="horizontal", weight=2
    )
    return sl.layout(top, bottom, orientation="vertical")


def checkpoint_review(
    columns: Collection[str] = ALL_COLUMNS, names: tuple[str, str] = DEFAULT_NAMES
) -> Layout:
    """First against last checkpoint: both PCA maps, and the top outliers of each.

    Each outlier table is sorted by that embedding's outlier score, ascending (low score =
    outlier), so its first rows are the top outliers. Built from two models instead of a
    run, "first" and "last" are the foundation and the fine-tuned model (`names`).
    Parameters and return value as for `pre_post_ft` (the maps need `pca_*_x/y`).
    """
    maps = sl.split(
        _map_tab(
            f"PCA {names[0]}",
            columns,
            ("pca_found_x", "pca_found_y"),
            "embedding_foundation",
            "pca",
            _colour(columns, "outlier_score_found"),
        ),
        _map_tab(
            f"PCA {names[1]}",
            columns,
            ("pca_ft_x", "pca_ft_y"),
            "embedding_ft",
            "pca",
            _colour(columns, "outlier_score_ft"),
        ),
        orientation="horizontal",
        weight=3,
    )
    shown = [*_labels(columns), "nn_id", "nn_distance"]
    tables = sl.split(
        sl.tab(
            _table(
                f"Top outliers {names[0]}",
                columns,
                ["outlier_score_found", *shown],
                "outlier_score_found",
            )
        ),
        sl.tab(
            _table(
                f"Top outliers {names[1]}",
                columns,
                ["outlier_score_ft", *shown],
                "outlier_score_ft",
            )
        ),
        _findings(),
        *_inspectors(columns, "checkpoints"),
        orientation="horizontal",
        weight=2,
    )
    return sl.layout(maps, tables, orientation="vertical")


def outlier_review(
    columns: Collection[str] = ALL_COLUMNS, names: tuple[str, str] = DEFAULT_NAMES
) -> Layout:
    """Outliers first: the table sorted by `outlier_score` (the views combined; where a table
    has none, `outlier_score_ft`) ascending, the inspector, histograms of both embedding views'
    scores and, where cleanlab found them, the label issues.

    `names` titles the two histograms. The label-issue table (sorted by `label_quality`,
    lowest first) and the confusion matrix appear only with the columns they need.
    Parameters and return value as for `pre_post_ft`; every column named exists.
    """
    label = _label_column(columns)
    table = _table(
        "Outliers",
        columns,
        [
            "outlier_score",
            "outlier_score_ft",
            "outlier_score_found",
            "outlier_score_pixels",
            *_labels(columns),
            "pred_label",
            "nn_id",
            "nn_distance",
            "is_label_issue",
        ],
        "outlier_score" if "outlier_score" in columns else "outlier_score_ft",
    )
    top = sl.split(
        sl.tab(table, weight=2),
        *_inspectors(columns, "outliers"),
        orientation="horizontal",
        weight=3,
    )
    panels = [_findings()]
    panels += [
        sl.tab(sl.histogram(f"Outlier score {name}", score, stack_by_column=label))
        for name, score in zip(names, ("outlier_score_found", "outlier_score_ft"), strict=True)
        if score in columns
    ]
    if _has(columns, "label_quality", "is_label_issue"):
        issues = _table(
            "Label issues",
            columns,
            ["label_quality", "is_label_issue", *_labels(columns), "pred_label", "pred_prob"],
            "label_quality",
        )
        widgets: list[Any] = [issues]
        if _has(columns, "label", "pred_label"):
            widgets.append(sl.confusion_matrix("Label vs prediction", "label", "pred_label"))
        panels.append(sl.tab(*widgets))
    bottom = sl.split(*panels, orientation="horizontal", weight=2)
    return sl.layout(top, bottom, orientation="vertical")


def training_dynamics(
    columns: Collection[str] = ALL_COLUMNS, names: tuple[str, str] = DEFAULT_NAMES
) -> Layout:
    """What each image did during fine-tuning: the data map, the most forgotten first.

    The data map (Swayamdipta et al., 2020) plots `variability` (x) against `confidence`
    (y), coloured by `correctness`: easy images high and to the left, hard ones low and to
    the left, ambiguous ones to the right. The table is sorted by `forgetting_events`,
    descending; below, the findings and the image with its nearest neighbour. Needs the
    DYNAMICS_COLUMNS (a build from a run with a classification head); `names` is unused.
    Parameters and return value otherwise as for `pre_post_ft`.
    """
    data_map = sl.scatterplot(
        "Data map", "variability", "confidence", color_by_column="correctness"
    )
    table = _table(
        "Forgetting",
        columns,
        # Few columns, so that forgetting_events is in view: Spotlight 1.8 shows the
        # visible columns in the dataset's order, not in this one.
        ["forgetting_events", "learned_step", *_labels(columns), "pred_label", "region"],
        "forgetting_events",
        "descending",
    )
    top = sl.split(sl.tab(table), sl.tab(data_map), orientation="horizontal", weight=3)
    bottom = sl.split(
        _findings(), *_inspectors(columns, "dynamics"), orientation="horizontal", weight=2
    )
    return sl.layout(top, bottom, orientation="vertical")


def basic(columns: Collection[str], names: tuple[str, str] = DEFAULT_NAMES) -> Layout:
    """For a dataset that is not enriched (no maps, no scores): table, findings, inspector.

    `names` is unused; it is there so that every builder is called alike.
    """
    views = [_lens(lenses.image, name, "basic") for name in _present(columns, "image")]
    return sl.layout(
        sl.split(
            sl.tab(sl.table("Table")),
            _findings(),
            sl.tab(sl.inspector("Inspector", views or None)),
            orientation="horizontal",
        )
    )


LAYOUTS: dict[str, Callable[..., Layout]] = {
    "pre_post_ft": pre_post_ft,
    "checkpoint_review": checkpoint_review,
    "outlier_review": outlier_review,
    "training_dynamics": training_dynamics,
}


def choose_layout(columns: Collection[str]) -> str:
    """The name of the layout that fits a dataset with these columns (what `explorer show`
    opens when given no layout).

    Parameters
    ----------
    columns : collection of str
        The dataset's column names.

    Returns
    -------
    str
        "pre_post_ft" wherever both UMAP maps exist (with or without labels, with or
        without a timeline); else the first layout whose main columns exist; else "basic".
    """
    if _has(columns, "umap_found_x", "umap_found_y", "umap_ft_x", "umap_ft_y"):
        return "pre_post_ft"
    if _has(columns, "pca_found_x", "pca_found_y", "pca_ft_x", "pca_ft_y"):
        return "checkpoint_review"
    if "outlier_score_ft" in columns:
        return "outlier_review"
    return "basic"


# --------------------------------------------------------------------------- JSON


# Where a widget's or lens's config names columns (the JSON aliases Spotlight uses).
_COLUMN_KEYS = (
    "columnKey",
    "stackByColumnKey",
    "xAxisColumn",
    "yAxisColumn",
    "colorBy",
    "sizeBy",
    "xColumn",
    "yColumn",
    "cloudByColumnKey",
)
_COLUMN_LIST_KEYS = ("placeBy", "visibleColumns", "columns")


def layout_columns(layout: Layout) -> set[str]:
    """Every column name `layout` refers to (widget configs, sorting, inspector lenses).

    Parameters
    ----------
    layout : Layout

    Returns
    -------
    set of str
    """
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for child in node:
                walk(child)
        elif isinstance(node, dict):
            for key in _COLUMN_KEYS:
                if isinstance(node.get(key), str):
                    found.add(node[key])
            for key in _COLUMN_LIST_KEYS:
                if isinstance(node.get(key), list):
                    found.update(name for name in node[key] if isinstance(name, str))
            for column, _order in node.get("sorting") or []:
                found.add(column)
            for value in node.values():
                walk(value)

    walk(layout.model_dump(by_alias=True))
    return found


def layout_json(layout: Layout) -> str:
    """`layout` as the JSON file that `spotlight.show(layout=PATH)` reads (indented, one
    newline at the end, so regenerated files diff clean)."""
    return layout.model_dump_json(by_alias=True, indent=2) + "\n"


def write_layouts(
    folder: str | Path,
    columns: Collection[str] = ALL_COLUMNS,
    names: tuple[str, str] = DEFAULT_NAMES,
    *,
    default: bool = False,
) -> list[Path]:
    """Write the named layouts made for `columns` as `folder/NAME.json`.

    Parameters
    ----------
    folder : str or Path
        Where to write; created if needed.
    columns : collection of str, default=ALL_COLUMNS
        The dataset's column names. A layout that would name a column outside them is not
        written (pre_post_ft's maps need the UMAP coordinates, say). With the default every
        layout is written: the files committed in `layouts/` (`explorer layouts`), which
        take a dataset with every column of OUT/default to `spotlight.show(layout=)`.
    names : (str, str), default=("foundation", "fine-tuned")
        What the two embeddings are called in titles.
    default : bool, default=False
        Also write `default.json`: the layout `explorer show` opens for these columns
        (`resolve_layout(None, columns, names)`, `basic` included), so that whoever has
        only the files (a published repo's Space) opens the same one.

    Returns
    -------
    list of Path
        The files written, in the order of LAYOUT_NAMES, `default.json` last.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layouts = {name: make(columns, names) for name, make in LAYOUTS.items()}
    fitting = {name: made for name, made in layouts.items() if layout_columns(made) <= set(columns)}
    if default:
        fitting[Path(DEFAULT_LAYOUT_FILE).stem] = resolve_layout(None, columns, names)[1]
    paths = []
    for name, layout in fitting.items():
        path = folder / f"{name}.json"
        path.write_text(layout_json(layout))
        paths.append(path)
    return paths


def resolve_layout(
    layout: str | Path | Layout | None,
    columns: Collection[str],
    names: tuple[str, str] = DEFAULT_NAMES,
) -> tuple[str, Layout]:
    """The layout to open a dataset with.

    Parameters
    ----------
    layout : None, a name, a JSON file (str or Path) or a Layout
        None for the one that fits the columns (`choose_layout`), a name of LAYOUT_NAMES,
        a layout file (it must refer only to columns the dataset has) or a Layout as is.
    columns : collection of str
        The dataset's column names.
    names : (str, str), default=("foundation", "fine-tuned")
        What the two embeddings are called in titles.

    Returns
    -------
    (str, Layout)
        The layout's name ("custom" for a Layout given, the file's stem for a file) and
        the layout.

    Raises
    ------
    ExplorerError
        For an unknown name, a missing or invalid file, or a named layout or a file naming
        missing columns.
    """
    if isinstance(layout, Layout):
        return "custom", layout
    if layout is None:
        name = choose_layout(columns)
        make = LAYOUTS.get(name, basic)
        return name, make(columns, names)
    if str(layout) in LAYOUTS:
        made = LAYOUTS[str(layout)](columns, names)
        missing = sorted(layout_columns(made) - set(columns))
        if missing:
            raise ExplorerError(
                f"layout {layout} needs columns the dataset lacks ({', '.join(missing)}): "
                f"leave --layout out to get a fitting layout{_NEEDS.get(str(layout), '')}"
            )
        return str(layout), made
    path = Path(layout).expanduser()
    if path.suffix != ".json" and not path.is_file():
        raise ExplorerError(
            f"unknown layout {str(layout)!r}: use one of {', '.join(LAYOUT_NAMES)} "
            "or a layout JSON file"
        )
    return path.stem, _read_layout_file(path, columns)


# What a named layout's columns come from, for the error when they are missing.
_NEEDS = {
    "pre_post_ft": " (its maps come from `explorer build`)",
    "checkpoint_review": " (its maps come from `explorer build`)",
    "training_dynamics": " (its columns come from `explorer build --run` with a classification "
    "head)",
}


def _read_layout_file(path: Path, columns: Collection[str]) -> Layout:
    """The layout in the file `path`, checked to name only `columns`."""
    if not path.is_file():
        raise ExplorerError(
            f"layout file {path} does not exist: write the defaults with "
            "`explorer layouts --out layouts`, or use a layout name"
        )
    try:
        parsed = Layout.model_validate_json(path.read_text())
    except ValidationError as error:
        first = error.errors()[0]
        raise ExplorerError(
            f"{path} is not a Spotlight layout ({first['msg']} at "
            f"{'.'.join(map(str, first['loc']))}): regenerate it with `explorer layouts`"
        ) from None
    missing = sorted(layout_columns(parsed) - set(columns))
    if missing:
        raise ExplorerError(
            f"layout {path} uses columns the dataset lacks ({', '.join(missing)}): "
            "leave --layout out to get a fitting layout"
        )
    return parsed
