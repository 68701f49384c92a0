"""Writing outputs whole or not at all: the one atomic writer every stage uses.

`written_in_place(target)` yields a temporary sibling of `target` (a folder or a file) to
write into; when the block ends without error the sibling replaces `target`, else it is
deleted. A reader therefore sees the old `target` or the new one, never half of one: this
is how `datasets` prepares a dataset (`builder.py`'s `incomplete_dir`).

A folder is replaced by two renames (`target` -> `target.old`, sibling -> `target`), so a
kill between them leaves `target.old`; `restore_interrupted` puts it back.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def written_in_place(
    target: str | Path, folder: bool = True, keep_suffix: bool = True
) -> Iterator[Path]:
    """Yield a temporary sibling of `target` to write; on success it replaces `target`.

    folder: True to write a folder (created empty, replacing any previous `target` folder
    on success), False for a file (the caller creates it; `keep_suffix` as for
    `partial_path`). On an exception the sibling is deleted and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target, folder, keep_suffix)
    _remove(partial)
    if folder:
        partial.mkdir()
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
    """Put folder `new` at `target`; what was there is replaced by two renames, then deleted."""
    old = old_path(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def restore_interrupted(target: Path) -> None:
    """A run killed between the two renames of `replace_folder` left `target` only as
    `target.old`: put it back."""
    old = old_path(target)
    if old.exists() and not target.exists():
        os.replace(old, target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
