"""Where each image sits among the others, for one set of embeddings: numpy in, `Geometry` out.

`geometry(vectors, previous)` computes one k-NN graph (`explorer.neighbors`) and draws all
else from it: the outlier score (`explorer.outliers`), the nearest neighbour, the PCA map
aligned onto the previous set's, and UMAP (`explorer.projection`). It returns them as a
frozen `Geometry` and keeps nothing, so a film's frames are a chain of calls, each given the
one before.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from explorer import neighbors, outliers, projection
from explorer.config import KNN_METHODS
from explorer.errors import ExplorerError

if TYPE_CHECKING:
    from explorer.progress import Progress

KNN_K = 14  # neighbours per image besides itself: UMAP's 15 with self, and cleanlab's 10
UMAP_CONTINUED_EPOCHS = 100  # a map started from the previous one only needs to settle
UMAP_STARTS = ("new", "continued", "off")


@dataclass(frozen=True)
class Geometry:
    """One embedding set's graph and maps, row i for image i."""

    knn_indices: np.ndarray  # int64 (N, k): the k nearest other rows, nearest first
    knn_distances: np.ndarray  # float32 (N, k): their cosine distances
    outlier_score: np.ndarray  # float32 (N,) in (0, 1]; low means outlier
    pca: np.ndarray  # float32 (N, 2), aligned onto the previous set's PCA when there was one
    umap: np.ndarray | None  # float32 (N, 2); None when not asked for
    # How far the points moved from the previous set's PCA map, in units of its spread:
    # before and after alignment (None without a previous set).
    displacement_unaligned: float | None = None
    displacement_aligned: float | None = None
    # Against a reference set (None without one): each image's nearest reference images,
    # leave-one-out (rows of the reference, int64 (N, k)) and their cosine distances (float32
    # (N, k)); each reference image's distances to its nearest other reference images (R, k).
    reference_indices: np.ndarray | None = None
    reference_distances: np.ndarray | None = None
    reference_own_distances: np.ndarray | None = None
    reference_own_indices: np.ndarray | None = None  # int64 (R, k): their nearest other rows

    @property
    def moved(self) -> tuple[float, float] | None:
        """(displacement_unaligned, displacement_aligned); None without a previous set."""
        if self.displacement_unaligned is None:
            return None
        return self.displacement_unaligned, self.displacement_aligned

    @property
    def view(self) -> tuple[np.ndarray, np.ndarray]:
        """(distances of each image to its nearest reference images, the reference's own), as
        `outliers.combined_scores` takes a view; without a reference, the set's own graph twice."""
        if self.reference_distances is None:
            return self.knn_distances, self.knn_distances
        return self.reference_distances, self.reference_own_distances


def geometry(
    vectors: np.ndarray,
    previous: Geometry | None = None,
    *,
    knn: str = "exact",
    annoy_trees: int = 100,
    device: str = "cpu",
    umap: str = "new",
    reference: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Geometry:
    """The k-NN graph of `vectors` and everything drawn from it.

    Parameters
    ----------
    vectors : np.ndarray
        Embeddings (N, D), N >= 3.
    previous : Geometry or None, default=None
        The previous set's geometry (the foundation's, the previous checkpoint's): the PCA
        map is aligned onto its PCA map, and with `umap="continued"` UMAP starts from its map.
    knn : {"exact", "annoy"}, default="exact"
        `exact`: exact cosine k-NN in blocks (`neighbors.exact_knn`); `annoy`: the seed's
        approximate Annoy index of `annoy_trees` trees.
    annoy_trees : int, default=100
    device : str, default="cpu"
        Where `exact` multiplies (cpu, cuda, cuda:N).
    umap : {"new", "continued", "off"}, default="new"
        `new`: a UMAP map from a spectral start; `continued`: started from `previous.umap`
        where there is one, for UMAP_CONTINUED_EPOCHS epochs, and aligned onto it
        (`projection.align`) (else as `new`); `off`: none.
    reference : np.ndarray or None, default=None
        Embeddings (R, D) of the reference set, by the same model: the outlier score is
        cleanlab's `fit(reference).score(vectors)`, from exact k-NN searches (the reference's
        own, and `vectors` against it). None: scored within `vectors` (`fit_score`).
    exclude : np.ndarray or None, default=None
        int64 (N,): the reference row that is image i itself (-1: none), left out of its
        neighbours (leave-one-out).
    progress : Progress or None, default=None
        Announces and times the stages: k-NN, outlier scores, PCA, UMAP.

    Returns
    -------
    Geometry
        The graph (KNN_K neighbours, fewer for fewer than KNN_K + 1 images, with a warning
        when below the outlier score's k), scores and maps.
    """
    if knn not in KNN_METHODS:
        raise ExplorerError(f"knn must be one of {', '.join(KNN_METHODS)}, not {knn!r}")
    if umap not in UMAP_STARTS:
        raise ExplorerError(f"umap must be one of {', '.join(UMAP_STARTS)}, not {umap!r}")
    stage = progress.stage if progress is not None else lambda _name: contextlib.nullcontext()
    k = min(KNN_K, len(vectors) - 1)
    with stage("k-NN"):
        if knn == "annoy":
            indices, distances = neighbors.annoy_knn(vectors, k, annoy_trees)
        else:
            indices, distances = neighbors.exact_knn(vectors, k, device=device)
    found = (None, None, None, None)
    if reference is not None:
        with stage("reference k-NN"):
            found = _reference_knn(vectors, reference, exclude, device)
    with stage("outlier scores"):
        if reference is None:
            if k < outliers.DEFAULT_K:
                warnings.warn(f"only {len(vectors)} images: outlier scores use k={k}", stacklevel=2)
            scores = outliers.outlier_scores(distances, min(outliers.DEFAULT_K, k))
        else:
            scores = outliers.outlier_scores(
                found[1], found[1].shape[1], reference_distances=found[2]
            )
    moved = (None, None)
    with stage("PCA"):
        pca = projection.pca_2d(vectors)
        if previous is not None:
            aligned = projection.align(previous.pca, pca)
            moved = (
                projection.displacement(previous.pca, pca),
                projection.displacement(previous.pca, aligned),
            )
            pca = aligned
    umap_map = None
    if umap != "off":
        start = previous.umap if umap == "continued" and previous is not None else None
        with stage("UMAP"):
            self_indices, self_distances = neighbors.with_self(indices, distances)
            umap_map = projection.umap_2d(
                vectors, self_indices, self_distances, init=start,
                n_epochs=None if start is None else UMAP_CONTINUED_EPOCHS,
            )  # fmt: skip
            if start is not None:
                # umap-learn rescales its start into a 10 x 10 box and lets it drift: put the
                # map back onto the one it started from, as the PCA maps are
                umap_map = projection.align(start, umap_map)
    return Geometry(indices, distances, scores, pca, umap_map, *moved, *found)


def _reference_knn(
    vectors: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indices, distances) of each image's nearest reference images, leave-one-out, and the
    reference's own (distances, indices): cleanlab's k (fewer, with a warning, for a tiny
    reference)."""
    if len(reference) < 2:
        raise ExplorerError(f"a reference set of {len(reference)} image(s) is too few: give more")
    k = min(outliers.DEFAULT_K, len(reference) - 1)
    if k < outliers.DEFAULT_K:
        warnings.warn(f"only {len(reference)} reference images: scores use k={k}", stacklevel=3)
    own_indices, own = neighbors.exact_knn(reference, k, device=device)
    indices, distances = neighbors.query_knn(vectors, reference, k, exclude=exclude, device=device)
    return indices, distances, own, own_indices


def mean_displacements(moves: list[tuple[float, float]]) -> dict[str, float]:
    """run.json's `alignment`: the means of (unaligned, aligned) displacements over `moves`,
    each a `Geometry.moved`; {} when there are none."""
    if not moves:
        return {}
    return {
        "mean_displacement_unaligned": float(np.mean([unaligned for unaligned, _ in moves])),
        "mean_displacement_aligned": float(np.mean([aligned for _, aligned in moves])),
    }
