"""What a fine-tuning run folder holds: `checkpoint-<step>/` folders and a `log.csv` loss log.

`explorer finetune` writes it; `explorer build --run` reads it. Any run of Hugging Face's
Trainer with `save_strategy="steps"` has the same shape.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import ExplorerError

LOG_FILE = "log.csv"
LOG_COLUMNS = ["step", "epoch", "loss", "learning_rate", "eval_loss", "eval_accuracy"]
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def epoch(self) -> float | None:
        """The epoch the Trainer recorded in trainer_state.json, where it did."""
        state = self.path / "trainer_state.json"
        if state.exists():
            return json.loads(state.read_text()).get("epoch")
        return 0.0 if self.step == 0 else None


def list_checkpoints(run: str | Path) -> list[Checkpoint]:
    """Every `checkpoint-<step>` folder with a config.json in `run`, by step."""
    run = Path(run)
    if not run.is_dir():
        raise ExplorerError(f"run folder {run} does not exist: give the --out of explorer finetune")
    found = [
        Checkpoint(int(match.group(1)), path)
        for path in run.iterdir()
        if (match := _CHECKPOINT.match(path.name)) and (path / "config.json").exists()
    ]
    if not found:
        raise ExplorerError(f"{run} holds no checkpoint-<step> folders with a config.json")
    return sorted(found, key=lambda checkpoint: checkpoint.step)


def read_log(run: str | Path) -> dict[str, list[float]]:
    """RUN/log.csv as columns (LOG_COLUMNS; missing values are NaN). Empty when there is none."""
    path = Path(run) / LOG_FILE
    columns: dict[str, list[float]] = {name: [] for name in LOG_COLUMNS}
    if not path.exists():
        return columns
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            for name in LOG_COLUMNS:
                value = row.get(name, "")
                columns[name].append(float(value) if value not in ("", None) else float("nan"))
    return columns
