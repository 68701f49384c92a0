"""Open an enriched dataset in Renumics Spotlight 1.8 with a layout that fits it.

Read top to bottom:

1. The layouts, as functions of the column names present (so a dataset without labels
   still gets a layout that refers only to its own columns):
   - `pre_post_ft`: the seed article's review. Table, the foundation and the fine-tuned
     maps side by side, an inspector with `image` beside `nn_image`.
   - `checkpoint_review`: first against last checkpoint (PCA maps) with the top outliers
     of each.
   - `outlier_review`: the table sorted by `outlier_score_ft`, histograms of both scores,
     the label issues where there are any.
   Every tab set opens on a scatterplot of precomputed coordinates or a table, so the
   first view computes nothing; Spotlight's own similarity maps (which run UMAP in the
   server) sit behind the maps in a second tab.
2. `write_layouts(folder)`: the layouts as JSON files (`explorer layouts`).
3. Loading: an OUT folder of `explorer build`, a `save_to_disk` folder or a
   `datasets.Dataset`; dtypes for Spotlight from the dataset's features.
4. `resolve_layout`: a layout name, a JSON file (checked against the columns) or None.
5. `show(...)` (non-blocking, for notebooks) and `serve(...)` (blocking, for `explorer show`).

Images stay lazy: the `datasets.Dataset` itself goes to Spotlight's Hugging Face data
source, which reads an image's bytes when a cell is asked for; `to_pandas()` would load
them all (and lose the ClassLabels).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
from loguru import logger
from pydantic import ValidationError

from explorer import columns as column_docs
from explorer.errors import ExplorerError

# Importing Spotlight warns that an optional analyzer (cleanvision) is missing; explorer
# never runs Spotlight's analyzers, so the warning would only confuse.
logger.disable("renumics.spotlight.analysis.analyzers.cleanvision")

from renumics import spotlight  # noqa: E402
from renumics.spotlight import layout as sl  # noqa: E402
from renumics.spotlight.dtypes import CategoryDType, EmbeddingDType  # noqa: E402
from renumics.spotlight.layout import lenses  # noqa: E402
from renumics.spotlight.layout.nodes import Layout, Tab  # noqa: E402
from renumics.spotlight.viewer import Viewer  # noqa: E402

LAYOUT_NAMES = ("pre_post_ft", "checkpoint_review", "outlier_review")

# The columns of OUT/default (all optional ones included): what `write_layouts` assumes.
ALL_COLUMNS: tuple[str, ...] = tuple(column_docs.DEFAULT)

# How the two embeddings are called in titles; a build from a run says which checkpoints.
DEFAULT_NAMES = ("foundation", "fine-tuned")

_LOCAL_HOSTS = ("127.0.0.1", "localhost")


# --------------------------------------------------------------------------- layouts


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
    name: str, columns: Collection[str], visible: list[str], sort_by: str | None = None
) -> sl.Table:
    """A table of the `visible` columns that exist, sorted ascending by `sort_by` if given.

    No image columns: Spotlight 1.8's table prints "<bytes>" for them; the inspector shows
    the images of the selected rows.
    """
    sorting = [(sort_by, "ascending")] if sort_by and sort_by in columns else None
    return sl.table(name, visible_columns=_present(columns, *visible), sort_by_columns=sorting)


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

    `columns`: the column names of the dataset; `names`: what to call the first and the
    second embedding in titles. Maps are coloured by label, or without labels by each
    model's own outlier score.
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
    bottom = sl.split(*_inspectors(columns, "pre-post"), orientation="horizontal", weight=2)
    return sl.layout(top, bottom, orientation="vertical")


def checkpoint_review(
    columns: Collection[str] = ALL_COLUMNS, names: tuple[str, str] = DEFAULT_NAMES
) -> Layout:
    """First against last checkpoint: both PCA maps, and the top outliers of each.

    Each outlier table is sorted by that embedding's outlier score, ascending (low score =
    outlier), so its first rows are the top outliers. Built from two models instead of a
    run, "first" and "last" are the foundation and the fine-tuned model (`names`).
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
        *_inspectors(columns, "checkpoints"),
        orientation="horizontal",
        weight=2,
    )
    return sl.layout(maps, tables, orientation="vertical")


def outlier_review(
    columns: Collection[str] = ALL_COLUMNS, names: tuple[str, str] = DEFAULT_NAMES
) -> Layout:
    """Outliers first: the table sorted by `outlier_score_ft` ascending, the inspector,
    histograms of both scores and, where cleanlab found them, the label issues.

    `names` titles the two histograms. The label-issue table (sorted by `label_quality`,
    lowest first) and the confusion matrix appear only with the columns they need.
    """
    label = _label_column(columns)
    table = _table(
        "Outliers",
        columns,
        [
            "outlier_score_ft",
            "outlier_score_found",
            *_labels(columns),
            "pred_label",
            "nn_id",
            "nn_distance",
            "is_label_issue",
        ],
        "outlier_score_ft",
    )
    top = sl.split(
        sl.tab(table, weight=2),
        *_inspectors(columns, "outliers"),
        orientation="horizontal",
        weight=3,
    )
    panels = [
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


def basic(columns: Collection[str], names: tuple[str, str] = DEFAULT_NAMES) -> Layout:
    """For a dataset that is not enriched (no maps, no scores): table and inspector."""
    views = [_lens(lenses.image, name, "basic") for name in _present(columns, "image")]
    return sl.layout(
        sl.split(
            sl.tab(sl.table("Table")),
            sl.tab(sl.inspector("Inspector", views or None)),
            orientation="horizontal",
        )
    )


LAYOUTS: dict[str, Callable[..., Layout]] = {
    "pre_post_ft": pre_post_ft,
    "checkpoint_review": checkpoint_review,
    "outlier_review": outlier_review,
}


def choose_layout(columns: Collection[str]) -> str:
    """The name of the layout that fits a dataset with these columns.

    pre_post_ft wherever both UMAP maps exist (with or without labels, with or without a
    timeline); else the first layout whose main columns exist; else "basic".
    """
    if _has(columns, "umap_found_x", "umap_found_y", "umap_ft_x", "umap_ft_y"):
        return "pre_post_ft"
    if _has(columns, "pca_found_x", "pca_found_y", "pca_ft_x", "pca_ft_y"):
        return "checkpoint_review"
    if "outlier_score_ft" in columns:
        return "outlier_review"
    return "basic"


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
    """Every column name a layout refers to (widget configs, sorting, inspector lenses)."""
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


def write_layouts(folder: str | Path) -> list[Path]:
    """Write every named layout, made for the full column set, as `folder/NAME.json`.

    Returns the paths written. These are the files committed in `layouts/`: they take a
    dataset with every column of OUT/default (labels included) to `spotlight.show(layout=)`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in LAYOUTS.items():
        path = folder / f"{name}.json"
        path.write_text(make().model_dump_json(by_alias=True, indent=2) + "\n")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- loading


@dataclass
class Source:
    """A dataset ready for Spotlight: the table and what its two embeddings are called."""

    dataset: datasets.Dataset
    names: tuple[str, str]


def _names_from_run(run: dict) -> tuple[str, str]:
    """Titles for the two embeddings: checkpoint steps for a run, else the model roles."""
    checkpoints = run.get("checkpoints") or []
    if checkpoints:
        first, last = checkpoints[0], checkpoints[-1]
        return (
            f"step {first.get('step', first.get('name'))}",
            f"step {last.get('step', last.get('name'))}",
        )
    return DEFAULT_NAMES


def _load_folder(path: Path) -> datasets.Dataset:
    """A Dataset from a `save_to_disk` folder; one line naming the fix if it is not one."""
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise ExplorerError(
            f"{path} is neither an OUT folder of `explorer build` (no {path / 'default'}) "
            "nor a datasets save_to_disk folder: pass the folder given to `explorer build --out`"
        )
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise ExplorerError(
            f"{path} holds several splits ({splits}): pass one split's folder, "
            f"e.g. {path / next(iter(loaded))}"
        )
    return loaded


def load(dataset_or_folder: str | Path | datasets.Dataset) -> Source:
    """Load what `show` was given: an OUT folder, a `save_to_disk` folder or a Dataset.

    OUT folders give OUT/default, with titles from OUT/run.json. Raises `ExplorerError`
    for a missing folder or one that holds no dataset.
    """
    if isinstance(dataset_or_folder, datasets.Dataset):
        return Source(dataset_or_folder, DEFAULT_NAMES)
    if isinstance(dataset_or_folder, datasets.DatasetDict):
        raise ExplorerError(
            f"got a DatasetDict with splits {', '.join(dataset_or_folder)}: pass one split, "
            "e.g. dataset['test']"
        )
    path = Path(dataset_or_folder).expanduser()
    if not path.exists():
        raise ExplorerError(
            f"{path} does not exist: run `explorer build --out {path}` first, or pass the "
            "folder it wrote"
        )
    if not path.is_dir():
        raise ExplorerError(f"{path} is a file: pass the OUT folder of `explorer build`")
    if (path / "default").is_dir():
        run_file = path / "run.json"
        run = json.loads(run_file.read_text()) if run_file.is_file() else {}
        return Source(_load_folder(path / "default"), _names_from_run(run))
    return Source(_load_folder(path), DEFAULT_NAMES)


def spotlight_dtypes(features: datasets.Features) -> dict[str, Any]:
    """Spotlight dtypes for a dataset's features: {column: dtype} for the columns that need one.

    Images become `spotlight.Image`, float lists named embedding* become Embeddings of
    their length (a length-2 or length-4 list would otherwise be guessed as a window or a
    bounding box), ClassLabels become categories with the label names.
    """
    list_types = tuple(
        kind
        for kind in (getattr(datasets, "List", None), datasets.Sequence)
        if isinstance(kind, type)
    )
    result: dict[str, Any] = {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            result[name] = spotlight.Image
        elif isinstance(feature, datasets.ClassLabel):
            result[name] = CategoryDType(feature.names)
        elif name.startswith("embedding") and isinstance(feature, list_types):
            length = getattr(feature, "length", -1)
            result[name] = EmbeddingDType(length if length and length > 0 else None)
    return result


# --------------------------------------------------------------------------- layouts by name


def resolve_layout(
    layout: str | Path | Layout | None,
    columns: Collection[str],
    names: tuple[str, str] = DEFAULT_NAMES,
) -> tuple[str, Layout]:
    """(name, Layout) for `layout`: None (the fitting one), a name, a JSON file or a Layout.

    A layout from a file must refer only to columns the dataset has. Raises `ExplorerError`
    for an unknown name, a missing or invalid file, or missing columns.
    """
    if isinstance(layout, Layout):
        return "custom", layout
    if layout is None:
        name = choose_layout(columns)
        make = LAYOUTS.get(name, basic)
        return name, make(columns, names)
    if str(layout) in LAYOUTS:
        return str(layout), LAYOUTS[str(layout)](columns, names)
    path = Path(layout).expanduser()
    if path.suffix != ".json" and not path.is_file():
        raise ExplorerError(
            f"unknown layout {str(layout)!r}: use one of {', '.join(LAYOUT_NAMES)} "
            "or a layout JSON file"
        )
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
    return path.stem, parsed


# --------------------------------------------------------------------------- show and serve


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow Spotlight's own "Spotlight running on" line: `serve` prints a better one."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _open(
    dataset_or_folder: str | Path | datasets.Dataset,
    layout: str | Path | Layout | None,
    host: str,
    port: int | str,
    browser: bool,
    allow_filebrowsing: bool,
) -> tuple[Viewer, str]:
    """Start (or, on a port this process already serves, update) a viewer; (viewer, layout name)."""
    source = load(dataset_or_folder)
    columns = source.dataset.column_names
    name, chosen = resolve_layout(layout, columns, source.names)
    if port != "auto" and not isinstance(port, int):
        raise ExplorerError(f"port must be 'auto' or a number, not {port!r}")
    no_ssl = False
    if host not in _LOCAL_HOSTS:
        # Spotlight refuses other hosts without TLS files; explorer has none to give, so
        # serve plain HTTP where asked to (e.g. 0.0.0.0 in a container) and say so.
        print(
            f"explorer: serving on {host} without TLS: whoever reaches this machine can "
            "read the dataset",
            file=sys.stderr,
        )
        no_ssl = True

    # The file browser, where allowed, starts in the folder given (the OUT folder).
    root = None
    if allow_filebrowsing and not isinstance(dataset_or_folder, datasets.Dataset):
        root = str(Path(dataset_or_folder).expanduser())
    try:
        with _quiet():
            viewer = spotlight.show(
                source.dataset,
                folder=root,
                host=host,
                port=port,  # type: ignore[arg-type]
                layout=chosen,
                no_browser=not browser,
                allow_filebrowsing=allow_filebrowsing,
                wait=False,
                dtype=spotlight_dtypes(source.dataset.features),
                no_ssl=no_ssl,
            )
    except OSError as error:
        # The server binds the port itself: EADDRINUSE, EACCES, or a host that isn't ours.
        raise ExplorerError(
            f"cannot serve on {host}:{port} ({error.strerror or error}): "
            "pick another port with --port, or --port auto"
        ) from None
    return viewer, name


def show(
    dataset_or_folder: str | Path | datasets.Dataset,
    layout: str | Path | Layout | None = None,
    host: str = "127.0.0.1",
    port: int | Literal["auto"] = "auto",
    browser: bool = False,
    allow_filebrowsing: bool = False,
) -> Viewer:
    """Open an enriched dataset in Spotlight and return at once (for notebooks and scripts).

    `dataset_or_folder`: an OUT folder of `explorer build`, a `save_to_disk` folder or a
    `datasets.Dataset` (one split). `layout`: None for the one that fits the data, a name
    (pre_post_ft, checkpoint_review, outlier_review), a JSON file or a Spotlight Layout.
    Serves on `host`:`port` (a free port for "auto"; a port this process already serves
    gets the new dataset). Returns the Spotlight `Viewer` (`.url`, `.close()`).
    Raises `ExplorerError` for a missing folder, an unknown layout or a busy port.
    """
    viewer, _name = _open(dataset_or_folder, layout, host, port, browser, allow_filebrowsing)
    return viewer


def _server_alive(viewer: Viewer) -> bool:
    """Whether the viewer's server process still runs (Spotlight internals; True if unknown)."""
    if not viewer.running:
        return False
    process = getattr(getattr(viewer, "_server", None), "process", None)
    return process is None or process.poll() is None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(
    out: str | Path | datasets.Dataset,
    layout: str | Path | Layout | None = None,
    host: str = "127.0.0.1",
    port: int | Literal["auto"] = "auto",
    browser: bool = True,
) -> None:
    """Open `out` in Spotlight, print the URL and block until Ctrl-C (or SIGTERM); then stop
    the server and return.

    Arguments as for `show`. Raises `ExplorerError` for bad input, or if the server stops
    by itself (SPOTLIGHT_VERBOSE=true shows its log).
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, systemd, timeout) would end Python without `finally` and
        # leave the server process holding the port: treat it as Ctrl-C, from the start.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        viewer, name = _open(out, layout, host, port, browser, allow_filebrowsing=False)
        print(
            f"Spotlight running on {viewer.url} (layout {name}); press Ctrl-C to stop", flush=True
        )
        try:
            while _server_alive(viewer):
                time.sleep(0.5)
            raise ExplorerError(
                "the Spotlight server stopped by itself: run again with SPOTLIGHT_VERBOSE=true "
                "to see its log"
            )
        except KeyboardInterrupt:
            print("Spotlight stopped", flush=True)
        finally:
            viewer.close()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
