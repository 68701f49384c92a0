"""What the fine-tuned head predicts, and which labels look wrong: numpy in, numpy out.

The head's classes are matched to the dataset's (`matched_probabilities`) by name where the
names agree, in any order and case, else by position where the counts agree. `label_scores`
gives cleanlab's label quality and label-issue flag of every label; `prediction_columns` the
default table's prediction columns.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np


def matched_probabilities(
    probabilities: np.ndarray, id2label: dict[int, str], class_names: list[str]
) -> np.ndarray | None:
    """The head's probabilities with columns in the order of the dataset's classes.

    Parameters
    ----------
    probabilities : np.ndarray
        float (N, C), of the head's classes.
    id2label : dict
        The head's class name of each output index (a model config's id2label).
    class_names : list of str
        The dataset's classes, in label order.

    Returns
    -------
    np.ndarray or None
        float (N, len(class_names)), columns matched by name (ignoring case) where the names
        agree, else kept by position where the counts agree (with a warning naming both lists);
        None, with a warning, otherwise.
    """
    head = [str(id2label[i]) for i in range(probabilities.shape[1])]
    if sorted(name.lower() for name in head) == sorted(name.lower() for name in class_names):
        position = {name.lower(): i for i, name in enumerate(head)}
        return probabilities[:, [position[name.lower()] for name in class_names]]
    if len(head) != len(class_names):
        warnings.warn(
            f"the fine-tuned head has {len(head)} classes, the dataset {len(class_names)}: "
            "no prediction or label-quality columns",
            stacklevel=3,
        )
        return None
    warnings.warn(
        f"the head's classes {_listed(head)} are not the dataset's {_listed(class_names)}: "
        "they are matched by position (head class i = dataset class i)",
        stacklevel=3,
    )
    return probabilities


def _listed(names: list[str], shown: int = 10) -> str:
    """Class names for a one-line message: the first `shown`, then how many more."""
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return "[" + ", ".join(names[:shown]) + more + "]"


def unscorable(labels: np.ndarray, num_classes: int) -> str | None:
    """Why cleanlab cannot score `labels` against `num_classes` classes, in words; None when
    it can.

    labels: the dataset's labels, one per image: int (N,) in [0, num_classes), -1 meaning
    unlabelled (a Hub test split without labels). cleanlab needs every image labelled and at
    least two classes among the labels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return "the labels are not one class index per image"
    unlabelled = int((labels == -1).sum())
    if unlabelled:
        return f"{unlabelled} of {len(labels)} images are unlabelled (label -1)"
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        return f"some labels are outside 0..{num_classes - 1}"
    if len(np.unique(labels)) < 2:
        return "every image has the same label, and cleanlab needs two classes"
    return None


def label_scores(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label quality score and label-issue flag of every given label.

    Parameters
    ----------
    labels : np.ndarray
        int (N,), class indices.
    pred_probs : np.ndarray
        float (N, C), rows summing to 1, columns in label order.

    Returns
    -------
    tuple of np.ndarray
        (label_quality float32 (N,) in [0, 1], low = likely mislabelled; is_label_issue bool
        (N,)).
    """
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, pred_probs).astype(np.float32)
    issues = label_issues(labels, pred_probs)
    if issues.method == MISCLASSIFIED:
        warnings.warn(
            f"cleanlab's find_label_issues cannot run here ({issues.reason}): is_label_issue "
            "flags every misclassified image instead",
            stacklevel=2,
        )
    return quality, issues.flags


CLEANLAB = "cleanlab find_label_issues"  # on one model's (or checkpoint's) probabilities
MISCLASSIFIED = "misclassified"  # the fallback: the head predicts another class


class LabelIssues(NamedTuple):
    """A label-issue flag and how it was made."""

    flags: np.ndarray  # bool (N,): the given label looks wrong
    method: str  # CLEANLAB, MISCLASSIFIED, or a run's method (`explorer.dynamics.label_issues`)
    reason: str = ""  # why cleanlab could not run, for MISCLASSIFIED


def label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> LabelIssues:
    """cleanlab's `find_label_issues` flag of every given label, without a warning.

    labels: int (N,); pred_probs: float (N, C), rows summing to 1. Returns `LabelIssues`;
    where cleanlab raises (say, fewer than two classes among the labels) the flags are the
    misclassified images and the method MISCLASSIFIED, with cleanlab's message as the reason.
    """
    from cleanlab.filter import find_label_issues

    try:
        # one process: on 10,000 x 10 it takes 0.03 s, against 0.25 s to start a pool
        flags = find_label_issues(labels, pred_probs, n_jobs=1)
    except ValueError as error:
        return LabelIssues(pred_probs.argmax(1) != labels, MISCLASSIFIED, str(error))
    return LabelIssues(np.asarray(flags, dtype=bool), CLEANLAB)


def prediction_columns(
    probabilities: np.ndarray | None,
    id2label: dict[int, str] | None,
    class_names: list[str] | None,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The prediction columns of a table: pred_label, pred_prob and, given `labels`, cleanlab's
    label_quality and is_label_issue.

    Parameters
    ----------
    probabilities : np.ndarray or None
        float (N, C) of the head's classes; None (a model without a head) gives no columns.
    id2label : dict or None
        The head's class names by output index (used when the dataset has classes).
    class_names : list of str or None
        The dataset's classes; None for a dataset without labels: the head's own classes.
    labels : np.ndarray or None, default=None
        int (N,), the dataset's labels: to score them (with `class_names`). Labels cleanlab
        cannot score (`unscorable`: -1, a single class) get no label_quality or
        is_label_issue, with a warning saying why.

    Returns
    -------
    dict
        {column name: (N,) array}; {} when the head's classes cannot be matched to the
        dataset's (`matched_probabilities` warns).
    """
    if probabilities is None:
        return {}
    if class_names is None:
        return {"pred_label": probabilities.argmax(1), "pred_prob": probabilities.max(1)}
    probabilities = matched_probabilities(probabilities, id2label, class_names)
    if probabilities is None:
        return {}
    columns = {"pred_label": probabilities.argmax(1), "pred_prob": probabilities.max(1)}
    if labels is not None:
        reason = unscorable(labels, len(class_names))
        if reason is None:
            try:
                scores = label_scores(labels, probabilities)
            except (ValueError, TypeError) as error:  # cleanlab's checks of its inputs
                reason = f"cleanlab refuses them: {str(error).splitlines()[0]}"
        if reason is not None:
            warnings.warn(f"no label_quality or is_label_issue: {reason}", stacklevel=2)
        else:
            columns["label_quality"], columns["is_label_issue"] = scores
    return columns
