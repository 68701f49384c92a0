"""Who is whose neighbour: one k-NN graph per embedding set, reused by every later stage.

The graph feeds the outlier score (mean distance to the k nearest), the nearest neighbour
(`nn_id`, `nn_distance`) and UMAP (its fuzzy graph), so it is computed once.

Distances are cosine distances, `1 - cos(a, b)`, in [0, 2]. `exact_knn` is exact and tiled:
memory stays O(N * k + block * block) beside the input, never N x N. `annoy_knn` is the seed's
approximate index.
"""

from __future__ import annotations

import numpy as np
import torch

from explorer.errors import ExplorerError

_SPARE = 4  # candidates beyond k: float32 may swap near-ties at the k-th place; float64 decides
_REFINE_ROWS = 64  # rows per float64 re-measure: 64 x m x D float64 fits in cache


def exact_knn(
    embeddings: np.ndarray, k: int, block_size: int = 2048, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other rows of every row by cosine distance, exactly.

    embeddings: (N, D) float. Returns (indices int64 (N, k), distances float32 (N, k)), nearest
    first; a row is never its own neighbour (duplicates of it are, at distance 0).

    Candidates come from float32 products of `block_size` x `block_size` tiles; the similarity
    is symmetric, so each pair of row blocks is multiplied once and serves both (half the
    FLOPs). Each row's k + 4 best candidates are then re-measured in float64 and the k nearest
    kept, so float32 rounding cannot swap a near-tie at the k-th place.
    """
    n = len(embeddings)
    _check_k(n, k)
    m = min(k + _SPARE, n - 1)  # candidates per row, re-measured in float64 to pick the k
    x = torch.as_tensor(embeddings, device=device)
    if not x.dtype.is_floating_point:
        x = x.float()
    norms = torch.linalg.vector_norm(x.double(), dim=1).clamp_(min=1e-12)
    unit = x.float() / norms[:, None].float()
    best = torch.full((n, m), -torch.inf, device=device)  # cosine similarity of the m so far
    best_index = torch.zeros((n, m), dtype=torch.int64, device=device)

    def keep_nearest(start: int, similarity: torch.Tensor, column_start: int) -> None:
        """Merge one tile's candidates into rows start.. of best/best_index."""
        stop = start + len(similarity)
        found = similarity.topk(min(m, similarity.shape[1]), dim=1, sorted=False)
        values = torch.cat([best[start:stop], found.values], dim=1)
        indices = torch.cat([best_index[start:stop], found.indices + column_start], dim=1)
        top = values.topk(m, dim=1, sorted=False)
        best[start:stop] = top.values
        best_index[start:stop] = indices.gather(1, top.indices)

    for a in range(0, n, block_size):
        rows = unit[a : a + block_size]
        for b in range(a, n, block_size):
            similarity = rows @ unit[b : b + block_size].T
            if a == b:
                similarity.fill_diagonal_(-torch.inf)  # not its own neighbour
            keep_nearest(a, similarity, b)
            if b != a:
                keep_nearest(b, similarity.T.contiguous(), a)

    # 1 - cos in float32 loses digits for near neighbours: re-measure the m candidates in
    # float64 and keep the k nearest, a few rows at a time so that the gathered (rows, m, D)
    # vectors stay in cache.
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _REFINE_ROWS):
        stop = min(start + _REFINE_ROWS, n)
        index = best_index[start:stop]
        dots = torch.bmm(x[index].double(), x[start:stop].double()[:, :, None])[..., 0]
        exact = (1 - dots / (norms[index] * norms[start:stop, None])).clamp_(min=0)
        order = exact.argsort(dim=1, stable=True)[:, :k]
        indices[start:stop] = index.gather(1, order).cpu().numpy()
        distances[start:stop] = exact.gather(1, order).cpu().numpy()
    return indices, distances


def query_knn(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    block_size: int = 2048,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `base` to every row of `queries` by cosine distance, exactly.

    queries: (Q, D) float; base: (B, D) float, the same D. exclude: int64 (Q,), for each query
    a base row it may not take (the image itself, where the two sets share images:
    leave-one-out), or -1 for none. Returns (indices into `base` int64 (Q, k), distances
    float32 (Q, k)), nearest first. As in `exact_knn`, float32 tiles of `block_size` rows give
    k + 4 candidates per query, re-measured in float64; memory stays O(Q * k + block * block)
    beside the inputs.
    """
    n_queries, n_base = len(queries), len(base)
    exclude = np.full(n_queries, -1) if exclude is None else np.asarray(exclude)
    available = n_base - int((exclude >= 0).any())
    if not 1 <= k <= available:
        raise ExplorerError(f"k={k} neighbours needs more reference images than {n_base}")
    m = min(k + _SPARE, available)  # candidates per query, re-measured in float64
    x, x_norms, x_unit = _vectors(queries, device)
    y, y_norms, y_unit = _vectors(base, device)
    skip = torch.as_tensor(exclude, dtype=torch.int64, device=device)
    indices = np.empty((n_queries, k), dtype=np.int64)
    distances = np.empty((n_queries, k), dtype=np.float32)
    for a in range(0, n_queries, block_size):
        stop = min(a + block_size, n_queries)
        best = torch.full((stop - a, m), -torch.inf, device=device)
        best_index = torch.zeros((stop - a, m), dtype=torch.int64, device=device)
        for c in range(0, n_base, block_size):
            similarity = x_unit[a:stop] @ y_unit[c : c + block_size].T
            column = skip[a:stop] - c  # the excluded base row, where it falls in this tile
            hit = ((column >= 0) & (column < similarity.shape[1])).nonzero()[:, 0]
            similarity[hit, column[hit]] = -torch.inf
            found = similarity.topk(min(m, similarity.shape[1]), dim=1, sorted=False)
            values = torch.cat([best, found.values], dim=1)
            candidates = torch.cat([best_index, found.indices + c], dim=1)
            top = values.topk(m, dim=1, sorted=False)
            best, best_index = top.values, candidates.gather(1, top.indices)
        for start in range(a, stop, _REFINE_ROWS):
            end = min(start + _REFINE_ROWS, stop)
            index = best_index[start - a : end - a]
            dots = torch.bmm(y[index], x[start:end, :, None])[..., 0]
            exact = (1 - dots / (y_norms[index] * x_norms[start:end, None])).clamp_(min=0)
            order = exact.argsort(dim=1, stable=True)[:, :k]
            indices[start:end] = index.gather(1, order).cpu().numpy()
            distances[start:end] = exact.gather(1, order).cpu().numpy()
    return indices, distances


def _vectors(vectors: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(float64 vectors, their float64 norms, float32 unit vectors) on `device`."""
    x = torch.as_tensor(np.asarray(vectors), device=device).double()
    norms = torch.linalg.vector_norm(x, dim=1).clamp_(min=1e-12)
    return x, norms, (x / norms[:, None]).float()


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
