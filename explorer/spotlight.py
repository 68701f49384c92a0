"""Serve an enriched dataset in Renumics Spotlight 1.8: loading and the server's lifecycle.

Read top to bottom:

1. `load`: what was given (an OUT folder of `explorer build`, read through
   `explorer.output`; a `save_to_disk` folder; a `datasets.Dataset`) as a `Source`, the
   table and what its two embeddings are called.
2. `spotlight_dtypes`: Spotlight dtypes from the dataset's features.
3. `data_issues`: the findings of the table (`explorer.findings`) as Spotlight issues, which
   the issues widget of every layout lists; selecting one selects its rows.
4. `show(...)` (non-blocking, for notebooks) and `serve(...)` (blocking, for `explorer
   show`), both through `_open`, which picks the layout with `explorer.layouts`.

What the reviewer sees (the layouts and their JSON) lives in `explorer.layouts`.

Images stay lazy: the `datasets.Dataset` itself goes to Spotlight's Hugging Face data
source, which reads an image's bytes when a cell is asked for; `to_pandas()` would load
them all (and lose the ClassLabels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
from loguru import logger

from explorer import output
from explorer.errors import ExplorerError
from explorer.findings import findings as find_findings
from explorer.layouts import Layout, resolve_layout
from explorer.output import DEFAULT_NAMES

# Importing Spotlight warns that an optional analyzer (cleanvision) is missing; explorer
# never runs Spotlight's analyzers, so the warning would only confuse.
logger.disable("renumics.spotlight.analysis.analyzers.cleanvision")

from renumics import spotlight  # noqa: E402
from renumics.spotlight.analysis.typing import DataIssue  # noqa: E402
from renumics.spotlight.app_config import AppConfig  # noqa: E402
from renumics.spotlight.dtypes import CategoryDType, EmbeddingDType  # noqa: E402
from renumics.spotlight.viewer import Viewer  # noqa: E402

_LOCAL_HOSTS = ("127.0.0.1", "localhost")


# --------------------------------------------------------------------------- loading


@dataclass
class Source:
    """A dataset ready for Spotlight: the table and what its two embeddings are called."""

    dataset: datasets.Dataset
    names: tuple[str, str]


def load(dataset_or_folder: str | Path | datasets.Dataset) -> Source:
    """Load what `show` was given.

    Parameters
    ----------
    dataset_or_folder : str, Path or datasets.Dataset
        An OUT folder of `explorer build` (its `default` table, titled by the checkpoints
        of its run.json), a `save_to_disk` folder of one split, or a Dataset.

    Returns
    -------
    Source

    Raises
    ------
    ExplorerError
        For a DatasetDict, a missing path, a file, or a folder that holds no dataset.
    """
    if isinstance(dataset_or_folder, datasets.Dataset):
        return Source(dataset_or_folder, DEFAULT_NAMES)
    if isinstance(dataset_or_folder, datasets.DatasetDict):
        raise ExplorerError(
            f"got a DatasetDict with splits {', '.join(dataset_or_folder)}: pass one split, "
            "e.g. dataset['test']"
        )
    path = Path(dataset_or_folder).expanduser()
    # A missing path or a file is reported by the OUT reader, in the words every command uses.
    if not path.is_dir() or output.is_output(path):
        out = output.read(path)
        return Source(out.default, out.embedding_names)
    return Source(_load_folder(path), DEFAULT_NAMES)


def _load_folder(path: Path) -> datasets.Dataset:
    """A Dataset from a `save_to_disk` folder; one line naming the fix if it is not one."""
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise ExplorerError(
            f"{path} is neither an OUT folder of `explorer build` (no "
            f"{path / output.RUN_RECORD}) nor a datasets save_to_disk folder: pass the "
            "folder given to `explorer build --out`"
        )
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise ExplorerError(
            f"{path} holds several splits ({splits}): pass one split's folder, "
            f"e.g. {path / next(iter(loaded))}"
        )
    return loaded


def spotlight_dtypes(features: datasets.Features) -> dict[str, Any]:
    """Spotlight dtypes for the columns of a dataset that need one.

    Images become `spotlight.Image`, float lists named embedding* become Embeddings of
    their length (a length-2 or length-4 list would otherwise be guessed as a window or a
    bounding box), ClassLabels become categories with the label names.

    Parameters
    ----------
    features : datasets.Features

    Returns
    -------
    dict
        {column: Spotlight dtype}, for `spotlight.show(dtype=)`.
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


def data_issues(dataset: datasets.Dataset) -> list[DataIssue]:
    """The findings of a table (`explorer.findings.findings`) as Spotlight issues.

    Parameters
    ----------
    dataset : datasets.Dataset
        A table with OUT/default's columns (those it lacks give no finding of their kind).

    Returns
    -------
    list of DataIssue
        One per finding, most severe first: its title (with the count), rows (most important
        first), severity, description and the columns that show why.
    """
    return [
        DataIssue(
            title=finding.title,
            rows=finding.rows,
            severity=finding.severity,
            columns=finding.columns,
            description=finding.description,
        )
        for finding in find_findings(dataset)
    ]


def _clear_issues(viewer: Viewer) -> None:
    """Remove the issues of the dataset a reused server showed before.

    Spotlight 1.8 takes `issues=[]` for "leave the issues as they are" (`viewer.py` turns an
    empty list into None), so a dataset without findings on a port that served one with
    findings would list the old findings, with rows of the old dataset. This sends the empty
    list itself, and keeps it in the config a restarted server process is given.
    """
    server = getattr(viewer, "_server", None)
    if server is None:
        return
    kept = server._app_config
    server.update(AppConfig(custom_issues=[]))
    server._app_config = dataclasses.replace(kept, custom_issues=[])


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
    issues = data_issues(source.dataset)
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
                analyze=False,  # Spotlight's own generic analyzers: explorer's findings instead
                issues=issues,
            )
            if not issues:
                _clear_issues(viewer)
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

    The findings of the data (`explorer.findings`: outliers, leaks, label issues, never
    learned, forgotten, near-duplicates) are listed as Spotlight issues in every layout's
    issues widget; Spotlight's own analyzers stay off.

    Parameters
    ----------
    dataset_or_folder : str, Path or datasets.Dataset
        An OUT folder of `explorer build`, a `save_to_disk` folder or a Dataset (one split).
    layout : None, a name, a JSON file or a Layout, default=None
        None for the one that fits the data (`explorer.layouts.choose_layout`), a name
        (pre_post_ft, checkpoint_review, outlier_review, training_dynamics), a JSON file or
        a Spotlight Layout.
    host : str, default="127.0.0.1"
        Another host is served without TLS, with a warning.
    port : int or "auto", default="auto"
        "auto" for a free port; a port this process already serves gets the new dataset.
    browser : bool, default=False
        Open the page in the default browser.
    allow_filebrowsing : bool, default=False
        Let the page browse files, starting in the folder given.

    Returns
    -------
    Viewer
        Spotlight's viewer (`.url`, `.port`, `.close()`).

    Raises
    ------
    ExplorerError
        For a missing or wrong folder, an unknown or unfitting layout, or a busy port.
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


def _close(viewer: Viewer, seconds: float = 10.0) -> None:
    """`viewer.close()`, bounded. Spotlight's close first asks the server process for its
    table and waits for the answer without a timeout; a server that is gone, or too busy to
    answer, would keep `serve` from ever returning. After `seconds` (at once when the server
    is gone) its process is stopped directly (terminated, killed after 3 s)."""
    if _server_alive(viewer):
        closer = threading.Thread(target=viewer.close, daemon=True)
        closer.start()
        closer.join(seconds)
        if not closer.is_alive():
            return
    server = getattr(viewer, "_server", None)  # Spotlight internals, as in _server_alive
    if server is not None:
        server.stop()


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
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, systemd, timeout) would end Python without `finally` and
        # leave the server process holding the port: treat it as Ctrl-C, from the start.
        # And Ctrl-C itself: a process started with SIGINT ignored (from a shell's background
        # job, say) keeps ignoring it, and would never stop on `kill -INT`.
        for number in (signal.SIGTERM, signal.SIGINT):
            previous[number] = signal.signal(number, _interrupt)
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
            _close(viewer)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
