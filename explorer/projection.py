"""Where each image sits on a 2-D map: PCA, Procrustes alignment between frames, and UMAP.

A PCA re-fitted per checkpoint may flip or rotate its axes from one checkpoint to the next;
`align` maps each frame onto the previous one with a similarity transform (translation, rotation
or reflection, uniform scale), the seed's Procrustes fix, so a film shows motion, not flips;
`displacement` measures how far the points moved.
UMAP reuses the k-NN graph of `explorer.neighbors` instead of searching again.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.linalg import orthogonal_procrustes

UMAP_NEIGHBORS = 15
UMAP_SEED = 0
LARGE_MAP, LARGE_MAP_EPOCHS = 4096, 200  # above 4,096 points a map gets 200 epochs by default


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) -> float32 (N, 2): the first two principal components (signs as scikit-learn's
    PCA sets them: each component's largest loading positive).

    Computed from the D x D covariance (torch), solved on one thread: between torch's
    embedding runs, multi-threaded OpenBLAS and LAPACK calls contend with torch's OpenMP threads
    (a scikit-learn PCA of 450 points took 0.7 s instead of 10 ms, a 768 x 768 eigh 12 s).
    """
    if embeddings.shape[1] < 2:
        return np.hstack([embeddings, np.zeros_like(embeddings)]).astype(np.float32)
    from threadpoolctl import threadpool_limits

    x = torch.as_tensor(embeddings, dtype=torch.float32)
    x = x - x.mean(dim=0)
    covariance = (x.T @ x).double().numpy()
    with threadpool_limits(1, user_api="blas"):  # a small D x D problem: threads only contend
        _, vectors = np.linalg.eigh(covariance)
    top = vectors[:, [-1, -2]]  # eigh sorts ascending
    top = top * np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])
    return (x.double() @ torch.from_numpy(top)).float().numpy()


def align(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Rotate (or mirror) and shift `points` (N, 2) onto `reference` (N, 2), scaled to its spread.

    Returns the transformed points, float32 (N, 2), in the reference's frame (unlike
    scipy.spatial.procrustes, which standardises both). A rotated, mirrored, scaled and shifted
    copy of the reference comes back as the reference.
    """
    ref_mean, mean = reference.mean(axis=0), points.mean(axis=0)
    ref_centred, centred = reference - ref_mean, points - mean
    norm = float((centred**2).sum())
    if norm == 0:
        return np.broadcast_to(ref_mean, points.shape).astype(np.float32)
    rotation, _ = orthogonal_procrustes(centred, ref_centred)
    # Keep the reference's spread: the least-squares scale shrinks a frame that matches its
    # predecessor poorly (early checkpoints), and over a film the map would shrink to a dot.
    scale = np.sqrt(float((ref_centred**2).sum()) / norm)
    return (scale * centred @ rotation + ref_mean).astype(np.float32)


def displacement(before: np.ndarray, after: np.ndarray) -> float:
    """Mean distance a point moves from `before` (N, 2) to `after` (N, 2), in units of the
    spread of `before` (the root mean squared distance from its centre); 0 means no motion."""
    spread = float(np.sqrt(((before - before.mean(0)) ** 2).sum(1).mean())) or 1.0
    return float(np.linalg.norm(after - before, axis=1).mean() / spread)


def disparity(reference: np.ndarray, points: np.ndarray) -> float:
    """Sum of squared differences after standardising both: scipy.spatial.procrustes' measure."""
    from scipy.spatial import procrustes

    return float(procrustes(reference, points)[2])


def umap_2d(
    embeddings: np.ndarray,
    knn_indices: np.ndarray,
    knn_distances: np.ndarray,
    init: np.ndarray | None = None,
    n_epochs: int | None = None,
) -> np.ndarray:
    """UMAP (cosine) of (N, D) embeddings from their k-NN graph, as float32 (N, 2).

    knn_indices/knn_distances: (N, k) including every row itself first at distance 0
    (`neighbors.with_self`); the first min(k, 15) columns are used. `init` (N, 2) starts the
    layout from given coordinates (the previous checkpoint's) instead of a spectral layout.
    `n_epochs` None: umap-learn's 500 epochs up to LARGE_MAP points, 200 above (umap-learn
    switches at 10,000). Seeded, so the same input gives the same map.
    """
    import umap

    n_neighbors = min(UMAP_NEIGHBORS, knn_indices.shape[1])
    if n_neighbors < 2 or len(embeddings) <= 3:
        return pca_2d(embeddings)  # too few points for a UMAP graph
    if n_epochs is None and len(embeddings) > LARGE_MAP:
        # Seeded means one thread: 500 epochs of 10,000 points took 9.9 s, 200 took 3.9 s, and
        # kept 95% of the 10-NN that 500 keep (Fashion-MNIST pixels; labels agree as often).
        n_epochs = LARGE_MAP_EPOCHS
    kwargs = {} if init is None else {"init": init.astype(np.float64)}
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        metric="cosine",
        random_state=UMAP_SEED,
        n_epochs=n_epochs,
        precomputed_knn=(knn_indices[:, :n_neighbors], knn_distances[:, :n_neighbors]),
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by the seed; no search index kept
        return reducer.fit_transform(embeddings).astype(np.float32)
