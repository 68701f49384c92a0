"""Which images are odd, and which labels look wrong: scores over numpy arrays.

`outlier_scores` reproduces cleanlab's `OutOfDistribution().fit_score(features=...)` from a
precomputed k-NN graph (k=10, cosine for more than 3 dimensions): the mean distance to the k
nearest neighbours, mapped to `exp(-d / median(d))` in (0, 1]; low means outlier. Computing it
from our graph skips cleanlab's second neighbour search.
"""

from __future__ import annotations

import numpy as np

DEFAULT_K = 10
_TOLERANCE = 100 * np.finfo(np.float64).epsneg  # cleanlab's: below it a distance is zero


def outlier_scores(knn_distances: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """cleanlab OutOfDistribution scores from k-NN distances (N, >= k), nearest first.

    Returns float32 (N,) in (0, 1]; low means far from its neighbours (outlier).
    """
    mean_distance = knn_distances[:, :k].astype(np.float64).mean(axis=1)
    scale = max(float(np.median(mean_distance)), 100 * np.finfo(np.float64).eps)
    scores = np.exp(-mean_distance / scale)
    scores[mean_distance < _TOLERANCE] = 1.0
    return scores.astype(np.float32)


def label_scores(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label quality score and label-issue flag of every given label.

    labels: int (N,); pred_probs: float (N, C), rows summing to 1. Returns (label_quality float32
    (N,) in [0, 1], low = likely mislabelled; is_label_issue bool (N,)).
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
