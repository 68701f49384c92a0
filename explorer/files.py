"""Writing outputs whole or not at all: the one atomic writer every stage uses.

`written_in_place(target)` yields a temporary sibling of `target` (a folder or a file) to
write into; when the block ends without error the sibling replaces `target`, else it is
deleted. A reader therefore sees the old `target` or the new one, never half of one: this
is how `datasets` prepares a dataset (`builder.py`'s `incomplete_dir`).

A folder is replaced by two renames (`target` -> `target.old`, sibling -> `target`), so a
kill between them leaves `target.old`; `restore_interrupted` puts it back.

The sibling folders `target.partial` and `target.old` are explorer's own: each holds a marker
file (`MARKER`) from the moment explorer makes it. A folder of those names without the marker
is someone else's (`results.old`, kept by hand): it is never deleted or moved, and
`check_siblings` (and any write that would remove it) ends with an `ExplorerError` naming it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer.errors import ExplorerError

MARKER = ".explorer-temporary"  # inside a sibling folder explorer made and may delete
_MARKER_TEXT = "explorer made this folder for a write in progress; it may be deleted\n"


def partial_path(target: Path, folder: bool = True, keep_suffix: bool = True) -> Path:
    """Where `target` is written before it is renamed into place.

    A folder `OUT` is written as `OUT.partial`. A file is hidden and keeps its suffix,
    `film.gif` as `.film.partial.gif`, since writers such as ffmpeg choose the format from the
    suffix; with `keep_suffix=False` it is `.film.gif.partial`, which a glob for `*.gif` does
    not see.
    """
    if folder:
        return target.with_name(target.name + ".partial")
    if keep_suffix:
        return target.with_name(f".{target.stem}.partial{target.suffix}")
    return target.with_name(f".{target.name}.partial")


def old_path(target: Path) -> Path:
    """Where the previous folder `target` waits while the new one is renamed into place."""
    return target.with_name(target.name + ".old")


def check_siblings(target: str | Path) -> None:
    """Raise `ExplorerError` when `target.partial` or `target.old` is a folder (or file) that
    explorer did not make, which writing the folder `target` would have to remove. Call it
    before the work, so a build does not end there."""
    target = Path(target)
    for sibling in (partial_path(target), old_path(target)):
        _check_ours(sibling)


@contextmanager
def written_in_place(
    target: str | Path, folder: bool = True, keep_suffix: bool = True
) -> Iterator[Path]:
    """Yield a temporary sibling of `target` to write; on success it replaces `target`.

    folder: True to write a folder (created empty but for the marker file `MARKER`, replacing
    any previous `target` folder on success), False for a file (the caller creates it;
    `keep_suffix` as for `partial_path`). On an exception the sibling is deleted and `target`
    is left as it was. Raises `ExplorerError` (before anything is written) when a folder's
    sibling `target.partial` or `target.old` is someone else's (`check_siblings`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target, folder, keep_suffix)
    if folder:
        check_siblings(target)
        _remove(partial)
        partial.mkdir()
        _mark(partial)
    else:
        _remove(partial)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    if folder:
        replace_folder(partial, target)
    else:
        os.replace(partial, target)


def replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; what was there is replaced by two renames, then deleted.

    `target` is marked before it becomes `target.old`, so a kill between the renames leaves a
    marked `target.old` (`restore_interrupted`); the marker that `new` may hold is removed
    once it is in place. Raises `ExplorerError` when `target.old` is someone else's.
    """
    old = old_path(target)
    _check_ours(old)
    _remove(old)
    if target.is_dir():
        _mark(target)
    if target.exists() or target.is_symlink():
        os.replace(target, old)
    os.replace(new, target)
    (target / MARKER).unlink(missing_ok=True)
    _remove(old)


def restore_interrupted(target: Path) -> None:
    """A run killed between the two renames of `replace_folder` left `target` only as
    `target.old`: put it back. A `target.old` that explorer did not make is left alone."""
    old = old_path(target)
    if old.is_dir() and not target.exists() and (old / MARKER).is_file():
        os.replace(old, target)
        (target / MARKER).unlink(missing_ok=True)


def _mark(folder: Path) -> None:
    (folder / MARKER).write_text(_MARKER_TEXT)


def _check_ours(sibling: Path) -> None:
    """ExplorerError unless `sibling` is missing, an empty folder, or marked as explorer's."""
    if not (sibling.exists() or sibling.is_symlink()):
        return
    if sibling.is_dir() and not sibling.is_symlink():
        if (sibling / MARKER).is_file() or not any(sibling.iterdir()):
            return
    raise ExplorerError(
        f"{sibling} is in the way and explorer did not make it (it holds no {MARKER}): "
        "move or remove it, or pick another output path"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
