"""What a build from a run keeps of every checkpoint, and the training-dynamics tables it makes.

`Trajectory.add` takes each checkpoint in step order (its embeddings, their geometry and the
head's probabilities) and keeps little of it: per image the probability of its given label and
whether the head predicts that label and the label's margin over the strongest other class
(C x N numbers each, for C checkpoints), the first and the previous k-NN graph, and one row of
OUT/checkpoints. No checkpoint's embeddings are kept. `add` returns the checkpoint's new
timeline columns (`movement`, `label_quality`); at the end `image_columns` gives OUT/default's
training-dynamics columns (`explorer.columns.DYNAMICS`) and `is_label_issue`, and
`checkpoint_table` OUT/checkpoints (`explorer.columns.CHECKPOINTS`).

The computing is `explorer.dynamics`' (numpy in, numpy out); this module only collects.
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from explorer import dynamics, enrich, predictions, runs
from explorer.embed import Embedded
from explorer.geometry import Geometry


class Trajectory:
    """The training dynamics of one build from a run, collected checkpoint by checkpoint.

    labels: int (N,), the given labels, or None for a dataset without labels (then only
    `movement` and the label-free scores are kept). class_names: the dataset's classes (the
    head's are matched onto them, `predictions.matched_probabilities`). log: the run's loss log
    (`runs.read_log`), for the loss at each checkpoint.
    """

    def __init__(
        self,
        labels: np.ndarray | None,
        class_names: list[str] | None,
        log: dict[str, list[float]] | None = None,
    ) -> None:
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.loss = _loss_by_step(log or {})
        self.steps: list[int] = []
        self.label_probability: list[np.ndarray] = []  # per checkpoint, float32 (N,)
        self.correct: list[np.ndarray] = []  # per checkpoint, bool (N,)
        self.margin: list[np.ndarray] = []  # per checkpoint, float32 (N,) (`dynamics.margins`)
        self.first_knn: np.ndarray | None = None
        self.previous_knn: np.ndarray | None = None
        self.rows: list[dict] = []

    def add(
        self,
        checkpoint: runs.Checkpoint,
        embedded: Embedded,
        shape: Geometry,
        is_outlier: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Take one checkpoint (the next in step order); return its new timeline columns:
        `movement` float32 (N,) since the previous checkpoint (NaN at the first) and, with a
        head and labels, `label_quality` float32 (N,), the probability of the given label."""
        knn = shape.knn_indices
        k = min(dynamics.DEFAULT_K, knn.shape[1])
        moved = (
            np.full(len(knn), np.nan, dtype=np.float32)
            if self.previous_knn is None
            else dynamics.movement(self.previous_knn, knn, k=k)
        )
        self.first_knn = knn if self.first_knn is None else self.first_knn
        self.previous_knn = knn
        row = {
            "step": checkpoint.step,
            "epoch": math.nan if checkpoint.epoch is None else checkpoint.epoch,
            "loss": self.loss(checkpoint.step),
            "mean_outlier_score": float(np.mean(shape.outlier_score)),
            "movement": float(np.mean(moved)) if self.rows else math.nan,
        }
        if is_outlier is not None:
            row["outliers"] = int(np.sum(is_outlier))
        columns = {"movement": moved}
        if self.labels is not None:
            row["knn_accuracy"] = dynamics.knn_accuracy(knn, self.labels, k=k)
            row["class_separation"] = dynamics.class_separation(embedded.vectors, self.labels)
            probabilities = self._matched(embedded)
            if probabilities is not None:
                row.update(self._predictions(probabilities))
                columns["label_quality"] = self.label_probability[-1]
        self.steps.append(checkpoint.step)
        self.rows.append(row)
        return columns

    def _matched(self, embedded: Embedded) -> np.ndarray | None:
        if embedded.probabilities is None or embedded.facts.id2label is None:
            return None
        return predictions.matched_probabilities(
            embedded.probabilities, embedded.facts.id2label, self.class_names
        )

    def _predictions(self, probabilities: np.ndarray) -> dict:
        """Keep what the dynamics need of one checkpoint's (N, K) probabilities; its scores."""
        labels = self.labels
        given = probabilities[np.arange(len(labels)), labels].astype(np.float32)
        self.label_probability.append(given)
        self.correct.append(probabilities.argmax(axis=1) == labels)
        self.margin.append(dynamics.margins(probabilities, labels))
        issues = predictions.label_issues(labels, probabilities)
        return {
            "accuracy": dynamics.accuracy(probabilities, labels),
            "per_class_accuracy": dynamics.per_class_accuracy(probabilities, labels),
            "label_issues": int(issues.flags.sum()),
        }

    def image_columns(self) -> tuple[dict[str, np.ndarray], str | None]:
        """OUT/default's training-dynamics columns and the method that made `is_label_issue`.

        Always `movement` (first against last checkpoint); with a head and labels also the
        data map (`confidence`, `variability`, `correctness`, `region`), `forgetting_events`,
        `learned_step` and the run's `is_label_issue` (`dynamics.label_issues`); the method is
        None without them.
        """
        k = min(dynamics.DEFAULT_K, self.first_knn.shape[1])
        columns = {"movement": dynamics.movement(self.first_knn, self.previous_knn, k=k)}
        if len(self.label_probability) != len(self.steps) or not self.steps:
            return columns, None
        given, correct = np.stack(self.label_probability), np.stack(self.correct)
        steps = np.asarray(self.steps)
        mapped = dynamics.data_map_of(given, correct, steps=steps)
        forgotten = dynamics.forgetting(correct, steps)
        issues = dynamics.label_issues(np.stack(self.margin), steps=steps)
        columns.update(
            confidence=mapped.confidence,
            variability=mapped.variability,
            correctness=mapped.correctness,
            region=mapped.region,
            forgetting_events=forgotten.forgetting_events,
            learned_step=forgotten.learned_step,
            is_label_issue=issues.flags,
        )
        return columns, issues.method

    def checkpoint_table(self) -> datasets.Dataset:
        """OUT/checkpoints: one row per checkpoint, columns in `columns.CHECKPOINTS` order; a
        score a checkpoint could not give (no head, no labels, no outlier flag) is NaN there,
        and a column no checkpoint gives is left out."""
        from explorer.columns import CHECKPOINTS

        present = [name for name in CHECKPOINTS if any(name in row for row in self.rows)]
        columns = {}
        for name in present:
            values = [row.get(name) for row in self.rows]
            if name == "per_class_accuracy":
                width = max(len(value) for value in values if value is not None)
                values = [np.full(width, np.nan) if value is None else value for value in values]
                columns[name] = np.stack(values).astype(np.float32)
            elif name in ("step", "outliers", "label_issues") and None not in values:
                columns[name] = np.asarray(values, dtype=np.int64)
            else:
                columns[name] = np.asarray(
                    [math.nan if value is None else value for value in values], dtype=np.float32
                )
        return enrich.columns_table(columns)


def _loss_by_step(log: dict[str, list[float]]):
    """A function of step: the last training loss logged at or before it (NaN: none was)."""
    steps = np.asarray(log.get("step", []), dtype=np.float64)
    losses = np.asarray(log.get("loss", []), dtype=np.float64)
    logged = ~np.isnan(losses) & ~np.isnan(steps) if len(losses) else np.zeros(0, dtype=bool)
    order = np.argsort(steps[logged], kind="stable")
    steps, losses = steps[logged][order], losses[logged][order]

    def loss(step: int) -> float:
        at = np.searchsorted(steps, step, side="right") - 1
        return float(losses[at]) if at >= 0 else math.nan

    return loss
