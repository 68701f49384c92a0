"""Who is whose neighbour: one k-NN graph per embedding set, reused by every later stage.

The graph feeds the outlier score (mean distance to the k nearest), the nearest neighbour
(`nn_id`, `nn_distance`) and UMAP (its fuzzy graph), so it is computed once.

Distances are cosine distances, `1 - cos(a, b)`, in [0, 2]. `exact_knn` is exact and blocked:
memory stays O(N * k + block * N), never N x N. `annoy_knn` is the seed's approximate index.
"""

from __future__ import annotations

import numpy as np
import torch

from explorer.errors import ExplorerError


def exact_knn(
    embeddings: np.ndarray, k: int, block_size: int = 2048, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other rows of every row by cosine distance, exactly.

    embeddings: (N, D) float. Returns (indices int64 (N, k), distances float32 (N, k)), nearest
    first; a row is never its own neighbour (duplicates of it are, at distance 0).
    """
    n = len(embeddings)
    _check_k(n, k)
    unit = torch.nn.functional.normalize(
        torch.as_tensor(embeddings, dtype=torch.float32, device=device), dim=1
    )
    unit64 = torch.nn.functional.normalize(
        torch.as_tensor(embeddings, dtype=torch.float64, device=device), dim=1
    )
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        similarity = unit[start:stop] @ unit.T
        rows = torch.arange(stop - start, device=device)
        similarity[rows, rows + start] = -torch.inf  # not its own neighbour
        index = similarity.topk(k, dim=1).indices
        # 1 - cos in float32 loses digits for near neighbours: redo the k chosen in float64
        exact = 1 - torch.bmm(unit64[index], unit64[start:stop, :, None])[..., 0]
        exact.clamp_(min=0)
        order = exact.argsort(dim=1, stable=True)
        indices[start:stop] = index.gather(1, order).cpu().numpy()
        distances[start:stop] = exact.gather(1, order).cpu().numpy()
    return indices, distances


def annoy_knn(embeddings: np.ndarray, k: int, trees: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The seed's approximate k-NN: Annoy, angular metric, `trees` trees.

    Same output as `exact_knn`; Annoy's angular distance sqrt(2 - 2 cos) is turned into cosine
    distance so the two are interchangeable.
    """
    from annoy import AnnoyIndex

    n, dim = embeddings.shape
    _check_k(n, k)
    index = AnnoyIndex(dim, "angular")
    for row, vector in enumerate(embeddings):
        index.add_item(row, vector)
    index.build(trees)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for row in range(n):
        found, angular = index.get_nns_by_item(row, k + 1, include_distances=True)
        pairs = [(i, d) for i, d in zip(found, angular, strict=True) if i != row][:k]
        while len(pairs) < k:  # Annoy may return fewer than asked on tiny data
            pairs.append(pairs[-1])
        indices[row] = [i for i, _ in pairs]
        distances[row] = [d * d / 2 for _, d in pairs]
    return indices, distances


def with_self(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prepend each row itself at distance 0: the k-NN layout umap-learn's precomputed_knn wants."""
    rows = np.arange(len(indices))[:, None]
    return (
        np.hstack([rows, indices]),
        np.hstack([np.zeros_like(distances[:, :1]), distances]),
    )


def _check_k(n: int, k: int) -> None:
    if n < 2:
        raise ExplorerError(f"{n} image(s) is too few to find neighbours: give at least 3")
    if not 1 <= k < n:
        raise ExplorerError(f"k={k} neighbours needs more than {k} images; there are {n}")
