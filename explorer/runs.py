"""What a fine-tuning run folder holds: `checkpoint-<step>/` folders and a `log.csv` loss log,
and from `explorer finetune` an `explorer-run.json` naming the data it was trained on.

`explorer finetune` writes it; `explorer build --run` reads it. Any run of Hugging Face's
Trainer with `save_strategy="steps"` has the same shape (without explorer-run.json).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import ExplorerError

LOG_FILE = "log.csv"
RECORD_FILE = "explorer-run.json"
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


def write_training_record(run: str | Path, data: dict, training: dict) -> Path:
    """Write RUN/explorer-run.json: {"data": data, "training": training}; return its path.

    data: what `explorer finetune` read (see `read_training_data`); training: its settings.
    """
    path = Path(run) / RECORD_FILE
    path.write_text(json.dumps({"data": data, "training": training}, indent=2) + "\n")
    return path


def read_training_data(run: str | Path) -> dict | None:
    """The data a run was trained on, as `explorer finetune` recorded it in explorer-run.json.

    Returns a dict with `source`, `data_dir`, `split`, `eval_split`, `limit`, `sample`, `seed`
    (the sampling seed), `image_column`, `label_column` (as given: None means found), `labels`,
    `num_rows`, `eval_num_rows`, and `rows`/`eval_rows` (source rows taken, ascending; None:
    all of the split); `data.load(source, split, limit, image_column, label_column, data_dir,
    sample=sample, seed=seed)` loads the same rows again. None for a run without the record
    (another trainer's, or an older explorer's). Raises ExplorerError for an unreadable one.
    """
    path = Path(run) / RECORD_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExplorerError(f"cannot read {path} ({error}): remove it or train again") from error
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        raise ExplorerError(f"{path} has no 'data' record: remove it or train again")
    return record["data"]
