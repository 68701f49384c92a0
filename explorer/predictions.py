"""What the fine-tuned head predicts, and which labels look wrong: numpy in, numpy out.

The head's classes are matched to the dataset's (`matched_probabilities`) by name where the
names agree, in any order and case, else by position where the counts agree. `label_scores`
gives cleanlab's label quality and label-issue flag of every label; `prediction_columns` the
default table's prediction columns.
"""

from __future__ import annotations

import warnings

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
        agree, else kept by position where the counts agree; None, with a warning, otherwise.
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
    return probabilities


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
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(labels, pred_probs).astype(np.float32)
    try:
        issues = find_label_issues(labels, pred_probs)
    except ValueError:
        # Too few examples of some class for cleanlab's confident joint: flag by rank instead.
        issues = pred_probs.argmax(1) != labels
    return quality, np.asarray(issues, dtype=bool)


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
        int (N,), the dataset's labels: to score them (with `class_names`).

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
        columns["label_quality"], columns["is_label_issue"] = label_scores(labels, probabilities)
    return columns
