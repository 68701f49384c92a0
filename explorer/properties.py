"""How each image looks at the pixel level, whatever a model makes of it: cleanvision's image
properties, and how far an image's are from the reference's.

Read top to bottom:

1. `image_properties`: per image, the raw values cleanvision (cleanlab's image-issue library)
   computes for its dark, light, low-information and blurry checks: mean brightness, the 5th
   and 99th brightness percentiles, entropy, the spread of its edges (blurriness) and of its
   grey-level histogram. float64 (N, 6).
2. `property_distances`: the k-NN distances of those values to the reference's, each property
   standardised by the reference's IQR: a view that `outliers.combined_scores` takes beside the
   embedding views.

Why: an embedding sees what its model learned to see. A model trained on clothes may map a
blurred, darkened or noisy shirt right beside the sharp ones, and a foundation model's view is
only as low-level as its pretraining. These six numbers see exactly that damage, for any model,
at about 0.3 ms an image. cleanvision judges them against fixed thresholds made for photos;
here they are judged against the reference, so what is normal for this dataset sets the scale.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image
from sklearn.neighbors import NearestNeighbors
from tqdm.auto import tqdm

from explorer.outliers import DEFAULT_K

PROPERTIES = (  # cleanvision's names for its raw values, the columns of `image_properties`
    "brightness",
    "brightness_perc_5",
    "brightness_perc_99",
    "entropy",
    "blurriness",
    "blurriness_grayscale_std",
)
_FLOOR = 1e-6  # a property constant over the reference scales by this instead of an IQR of 0


def image_properties(
    images: Iterable[Image.Image], *, count: int | None = None, progress: bool = False
) -> np.ndarray:
    """cleanvision's raw image properties of each image.

    Parameters
    ----------
    images : iterable of PIL images, any mode: each is converted to RGB first (cleanvision
        takes them as they come), so that grey and colour copies of an image compare alike.
    count : how many there are, for the progress bar.
    progress : show a progress bar.

    Returns
    -------
    float64 (N, len(PROPERTIES)), in the order of PROPERTIES: brightness and its percentiles in
    [0, 1], entropy in bits, blurriness and the grey-level histogram's standard deviation.
    """
    from cleanvision.issue_managers.image_property import (
        BlurrinessProperty,
        BrightnessProperty,
        EntropyProperty,
    )

    calculators = (BrightnessProperty("dark"), EntropyProperty(), BlurrinessProperty())
    rows = []
    for image in tqdm(
        images, total=count, desc="image properties", unit="img", disable=not progress
    ):
        rgb, values = image.convert("RGB"), {}
        for calculator in calculators:
            values.update(calculator.calculate(rgb))
        rows.append([float(values[name]) for name in PROPERTIES])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(PROPERTIES))


def property_distances(
    properties: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    exclude: np.ndarray | None = None,
    k: int = DEFAULT_K,
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean k-NN distances between images' properties, as a view for
    `outliers.combined_scores`.

    Parameters
    ----------
    properties : float (N, P): the scored images' (`image_properties`).
    reference : float (R, P), or None: the scored images are their own reference.
    exclude : int64 (N,): each scored image's row in `reference`, or -1; that row is not its
        neighbour (leave-one-out). Ignored without a reference, where no image is its own.
    k : neighbours per image.

    Returns
    -------
    (knn_distances float64 (N, k), reference_distances float64 (R, k)): each scored image's
    distances to its k nearest reference images, and each reference image's to its k nearest
    others; every property divided by the reference's IQR first, so that none dominates by its
    unit.
    """
    properties = np.asarray(properties, dtype=np.float64)
    own = reference is None
    reference = properties if own else np.asarray(reference, dtype=np.float64)
    low, high = np.quantile(reference, [0.25, 0.75], axis=0)
    scale = np.maximum(high - low, _FLOOR)
    base = reference / scale
    k = min(k, len(base) - 1)
    search = NearestNeighbors(n_neighbors=k + 1).fit(base)
    reference_distances = _without(*search.kneighbors(base), np.arange(len(base)), k)
    if own:
        return reference_distances, reference_distances
    skip = np.full(len(properties), -1) if exclude is None else np.asarray(exclude)
    distances, indices = search.kneighbors(properties / scale)
    return _without(distances, indices, skip, k), reference_distances


def _without(distances: np.ndarray, indices: np.ndarray, skip: np.ndarray, k: int) -> np.ndarray:
    """The first k of each row's (k + 1) distances, leaving out the neighbour at `skip` (or,
    where it is not among them, the farthest)."""
    keep = indices != skip[:, None]
    keep[keep.all(axis=1), -1] = False
    return distances[keep].reshape(len(distances), k)
