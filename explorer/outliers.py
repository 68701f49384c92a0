"""Which images are odd: outlier scores from k-NN distances to a reference set, numpy in, numpy out.

Read top to bottom:

1. `outlier_scores`: cleanlab's `OutOfDistribution` score of each image, from the mean distance
   to its k nearest reference images (k=10, cosine for more than 3 dimensions), mapped to
   `exp(-d / scale)` in (0, 1]; low means outlier. With a reference it is cleanlab's
   `fit(features=REF).score(features=X)`: the scale is the median of the reference's own
   leave-one-out mean distances. Without one the reviewed images are their own reference and
   it is `fit_score(features=X)`, the seeds' score. Computing it from our k-NN graphs skips
   cleanlab's second neighbour search.
2. `robust_z`: a view's mean distance, standardised by the reference's median and IQR.
3. `combined_scores`: one score from several views (foundation, fine-tuned): the largest z,
   so either view alone can flag an image, thresholded where 1 % of the reference would be.

Why a reference: scored among themselves, a group of k or more similar odd images are each
other's nearest neighbours and look normal (they mask themselves); scored against what the
model was trained on, they are far from everything. Which labels look wrong is
`explorer.predictions`' question; which images are copies, `explorer.duplicates`'.
"""

from __future__ import annotations

import numpy as np

DEFAULT_K = 10  # cleanlab OutOfDistribution's k
# The share of reference images the combined threshold flags: an image is an outlier when it
# is farther from the reference than 99 % of the reference's own images are from the rest.
OUTLIER_QUANTILE = 0.99
_TOLERANCE = 100 * np.finfo(np.float64).epsneg  # cleanlab's: below it a distance is zero
_SCALE_FLOOR = 100 * np.finfo(np.float64).eps  # cleanlab's floor on the scale


def mean_distances(knn_distances: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """float64 (N,): each row's mean distance to its k nearest (of `knn_distances`, (N, >= k))."""
    return np.asarray(knn_distances)[:, :k].astype(np.float64).mean(axis=1)


def outlier_scores(
    knn_distances: np.ndarray,
    k: int = DEFAULT_K,
    *,
    reference_distances: np.ndarray | None = None,
) -> np.ndarray:
    """cleanlab OutOfDistribution scores from k-NN distances, nearest first.

    Parameters
    ----------
    knn_distances : np.ndarray
        float (N, >= k): each scored image's cosine distances to its nearest reference images
        (leave-one-out: an image that is itself in the reference is not its own neighbour),
        or, without a reference, to its nearest other scored images.
    k : int, default=DEFAULT_K
        How many of the nearest to average.
    reference_distances : np.ndarray or None, default=None
        float (R, >= k): each reference image's distances to its nearest other reference
        images; the median of their means is the scale (cleanlab's `fit`). None: the scored
        images are their own reference (cleanlab's `fit_score`).

    Returns
    -------
    np.ndarray
        float32 (N,) in (0, 1]; low means far from the reference (outlier).
    """
    fitted = knn_distances if reference_distances is None else reference_distances
    scale = max(float(np.median(mean_distances(fitted, k))), _SCALE_FLOOR)
    mean_distance = mean_distances(knn_distances, k)
    scores = np.exp(-mean_distance / scale)
    scores[mean_distance < _TOLERANCE] = 1.0
    return scores.astype(np.float32)


def robust_z(values: np.ndarray, reference_values: np.ndarray) -> np.ndarray:
    """(values - median) / IQR of `reference_values`: how many interquartile ranges above the
    reference's typical value. Unlike a mean and standard deviation, a cluster of outliers in
    the reference cannot stretch the scale. Returns float64, the shape of `values`."""
    low, median, high = np.quantile(np.asarray(reference_values, np.float64), [0.25, 0.5, 0.75])
    return (np.asarray(values, np.float64) - median) / max(high - low, _SCALE_FLOOR)


def combined_scores(
    views: list[tuple[np.ndarray, np.ndarray]],
    k: int = DEFAULT_K,
    *,
    quantile: float = OUTLIER_QUANTILE,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One oddness per image from several embedding views, so either view alone can flag it.

    Parameters
    ----------
    views : list of (np.ndarray, np.ndarray)
        Per view, (knn_distances (N, >= k), reference_distances (R, >= k)) as for
        `outlier_scores` (without a reference, the scored images' own distances twice).
    k : int, default=DEFAULT_K
    quantile : float, default=OUTLIER_QUANTILE
        The share of the reference left below the threshold.

    Returns
    -------
    (np.ndarray, np.ndarray, float)
        score float32 (N,) in (0, 1], low = odd; is_outlier bool (N,); the threshold T.
        Per view, z = `robust_z` of an image's mean distance to the reference against the
        reference's own (leave-one-out) mean distances; an image's z is the largest over the
        views, and T the `quantile` of the reference's own z. score = 2 ** (-max(z, 0) / T):
        1 for an image no farther than the reference's median, 0.5 at the threshold;
        is_outlier = z > T (score < 0.5).
    """
    query, reference = [], []
    for knn_distances, reference_distances in views:
        own = mean_distances(reference_distances, k)
        query.append(robust_z(mean_distances(knn_distances, k), own))
        reference.append(robust_z(own, own))
    z, reference_z = np.max(query, axis=0), np.max(reference, axis=0)
    threshold = max(float(np.quantile(reference_z, quantile)), _SCALE_FLOOR)
    score = np.exp2(-np.maximum(z, 0) / threshold).astype(np.float32)
    return score, z > threshold, threshold
