"""Which images are odd: cleanlab's outlier scores over a k-NN graph, numpy in, numpy out.

`outlier_scores` reproduces cleanlab's `OutOfDistribution().fit_score(features=...)` from a
precomputed k-NN graph (k=10, cosine for more than 3 dimensions): the mean distance to the k
nearest neighbours, mapped to `exp(-d / median(d))` in (0, 1]; low means outlier. Computing it
from our graph skips cleanlab's second neighbour search. Which labels look wrong is
`explorer.predictions`' question.
"""

from __future__ import annotations

import numpy as np

DEFAULT_K = 10  # cleanlab OutOfDistribution's k
_TOLERANCE = 100 * np.finfo(np.float64).epsneg  # cleanlab's: below it a distance is zero


def outlier_scores(knn_distances: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """cleanlab OutOfDistribution scores from k-NN distances, nearest first.

    Parameters
    ----------
    knn_distances : np.ndarray
        float (N, >= k), each row's distances to its nearest other rows, nearest first.
    k : int, default=DEFAULT_K
        How many of the nearest to average.

    Returns
    -------
    np.ndarray
        float32 (N,) in (0, 1]; low means far from its neighbours (outlier).
    """
    mean_distance = knn_distances[:, :k].astype(np.float64).mean(axis=1)
    scale = max(float(np.median(mean_distance)), 100 * np.finfo(np.float64).eps)
    scores = np.exp(-mean_distance / scale)
    scores[mean_distance < _TOLERANCE] = 1.0
    return scores.astype(np.float32)
