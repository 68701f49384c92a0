"""Reading an OUT folder of `explorer build`: the one reader for show, animate and publish.

An OUT folder holds `run.json` (how it was made) and one `save_to_disk` folder per table:
`default` (one row per image) and, for a build from a run, `timeline` (per image and
checkpoint), `training_log` (the loss) and `checkpoints` (one row per checkpoint). `explorer
build` writes OUT whole under another name and renames it into place with `run.json` inside,
so "is it complete?" is one check: does `run.json` exist.

`read(path)` returns an `Output`; every consumer gets the same one-line errors for a path
that is missing, a file, or not an OUT folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from explorer.errors import ExplorerError

RUN_RECORD = "run.json"
TABLES = ("default", "timeline", "training_log", "checkpoints")
ANIMATION_SUFFIXES = (".gif", ".mp4")
# What the two embeddings are called in titles when run.json names no checkpoints.
DEFAULT_NAMES = ("foundation", "fine-tuned")


def is_output(path: str | Path) -> bool:
    """Whether `path` is a complete OUT folder of `explorer build` (it holds run.json)."""
    return (Path(path) / RUN_RECORD).is_file()


@dataclass
class Output:
    """A complete OUT folder: its run record, and its tables loaded on request."""

    path: Path
    run: dict[str, Any]
    _tables: dict[str, datasets.Dataset | None] = field(default_factory=dict, repr=False)

    def has(self, name: str) -> bool:
        """Whether OUT holds the table `name` (a `save_to_disk` folder)."""
        return (self.path / name).is_dir()

    def table(self, name: str) -> datasets.Dataset | None:
        """The table `name`, memory-mapped; None when OUT lacks it or it has no rows.

        datasets saves an empty Dataset without data files and then cannot load it back, so
        that case is read from its state.json instead. Raises `ExplorerError` for a damaged one.
        """
        if name not in self._tables:
            self._tables[name] = _load_table(self.path / name) if self.has(name) else None
        return self._tables[name]

    @property
    def default(self) -> datasets.Dataset:
        """OUT/default, one row per image; `ExplorerError` when it is missing or empty."""
        table = self.table("default")
        if table is None:
            raise ExplorerError(
                f"{self.path / 'default'} is missing or empty: rebuild OUT with `explorer build`"
            )
        return table

    @property
    def class_names(self) -> list[str] | None:
        """The dataset's class names (from the label ClassLabel of OUT/default), or None."""
        label = self.default.features.get("label")
        return list(label.names) if isinstance(label, datasets.ClassLabel) else None

    @property
    def embedding_names(self) -> tuple[str, str]:
        """Titles for the two embeddings: checkpoint steps for a run, else the model roles."""
        checkpoints = self.run.get("checkpoints") or []
        if not checkpoints:
            return DEFAULT_NAMES
        first, last = checkpoints[0], checkpoints[-1]
        return (
            f"step {first.get('step', first.get('name'))}",
            f"step {last.get('step', last.get('name'))}",
        )

    @property
    def animations(self) -> list[Path]:
        """The film files in OUT (`animation.gif`, `animation.mp4`) that exist."""
        paths = [self.path / f"animation{suffix}" for suffix in ANIMATION_SUFFIXES]
        return [path for path in paths if path.is_file()]


def read(path: str | Path) -> Output:
    """Open the OUT folder at `path`. Raises `ExplorerError` naming the fix when `path` does
    not exist, is a file, is not an OUT folder, or holds an unreadable run.json."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ExplorerError(
            f"{path} is not a folder: it does not exist; run `explorer build --out {path}` "
            "first, or pass the folder it wrote"
        )
    if not path.is_dir():
        raise ExplorerError(f"{path} is a file: pass the OUT folder of `explorer build`")
    record = path / RUN_RECORD
    if not record.is_file():
        raise ExplorerError(
            f"{path} is not an OUT folder of `explorer build` (no {RUN_RECORD}): pass the "
            "folder given to `explorer build --out`"
        )
    try:
        run = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise ExplorerError(f"{record} is not valid JSON: {error}") from None
    return Output(path, run)


def _load_table(path: Path) -> datasets.Dataset | None:
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    if state.get("_data_files") == []:
        return None
    try:
        table = datasets.load_from_disk(str(path))
    except Exception as error:  # datasets raises many kinds for a damaged folder
        raise ExplorerError(f"{path} is not a readable dataset folder: {error}") from None
    if not isinstance(table, datasets.Dataset):
        raise ExplorerError(f"{path} holds several splits; expected one table")
    return table if len(table) else None
