"""Which images are copies of each other, and which were already in the training data?

Read top to bottom:

1. `pixel_hashes`: a digest of every image's decoded pixels; equal digests are exact duplicates.
2. `near_threshold`: the distance below which two images count as near-duplicates, calibrated
   on real near-duplicates: mildly edited copies of sample images (re-encoded as JPEG, resized
   down and up, brightened) embedded by the same model, and capped so that at most 1 in 1,000
   reference images has one. A fixed distance does not carry across models and embedding
   sizes (the seed's 0.3 flagged 80 % of one dataset); this does. `best_view`: of the
   foundation and the fine-tuned view, the one that tells the copies from different images
   best.
3. `pixel_signatures`, `pixel_threshold`, `correlations`: a second opinion from the pixels.
   An embedding may move a 5 % brighter copy as far as it puts two different garments of one
   kind, so the capped threshold misses it; its picture, though, stays the same pixel for
   pixel. A pair nearer than the copies alone say (uncapped) is a near-duplicate too where
   its two pictures, grey and averaged down to 16 x 16 px, correlate more than all but 1 in
   1,000 reference images do with their nearest other one. `near` applies both.
4. `groups`: exact and near-duplicate pairs joined into groups (connected components), from
   the k-NN graph a build already has: no second search.
5. `leaks`: an image whose nearest reference (training) image is an exact or near-duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

# Quantile of the edited copies' distances to their originals taken as the threshold: a copy
# this far or nearer is a near-duplicate; 0.95 keeps a few harsh edits out.
COPY_QUANTILE = 0.95
# At most this share (1 in 1,000) of the reference's images may have a near-duplicate in it:
# the cap on the threshold for views whose copies land as far as different images do.
NEIGHBOUR_SHARE = 0.001
_TOLERANCE = 1e-12  # below it a distance is an exact copy, found by its pixels instead
CALIBRATION_IMAGES = 100  # originals whose copies calibrate the threshold (a seeded sample)
CALIBRATION_SEED = 0
SIGNATURE_SIZE = 16  # px: a copy keeps its picture at this size; JPEG blocks and noise do not
JPEG_QUALITY = 75  # a typical re-export
RESIZE = 0.75  # down to 75 % and back up: a thumbnail made again
BRIGHTNESS = 1.08  # a mild exposure change


def pixel_hashes(pixels: np.ndarray) -> np.ndarray:
    """One digest per image of its decoded pixels.

    pixels: (N, ...) array, one image per row (any dtype). Returns str (N,): equal strings
    mean identical pixels.
    """
    rows = np.ascontiguousarray(pixels).reshape(len(pixels), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows])


def calibration_rows(n: int, size: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Which of n images to copy for `near_threshold`: a seeded sample of `size` (all of them
    when there are fewer), ascending int64."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return np.sort(rng.choice(n, size=min(size, n), replace=False)).astype(np.int64)


def edited_copies(images: list[Image.Image]) -> list[Image.Image]:
    """Three near-duplicates of each image, as people make them: a JPEG re-export, a
    thumbnail scaled back up, a brighter copy. Returns 3 * len(images) images, in that order
    per image."""
    import io

    copies = []
    for image in images:
        rgb = image.convert("RGB")
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        copies.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        small = (max(1, round(rgb.width * RESIZE)), max(1, round(rgb.height * RESIZE)))
        copies.append(rgb.resize(small, Image.BILINEAR).resize(rgb.size, Image.BILINEAR))
        copies.append(ImageEnhance.Brightness(rgb).enhance(BRIGHTNESS))
    return copies


@dataclass(frozen=True)
class Calibration:
    """Where one embedding view puts near-duplicates (`near_threshold`)."""

    threshold: float  # cosine distance: nearer pairs are near-duplicates
    from_copies: float  # COPY_QUANTILE of the edited copies' distances to their originals
    cap: float  # NEIGHBOUR_SHARE quantile of the reference's nearest-neighbour distances
    caught: float  # share of the edited copies nearer than `threshold` (in [0, 1])
    # How often an edited copy is nearer its original than a reference image is to its nearest
    # other one (AUROC of copies against neighbours, in [0, 1]; 0.5 without neighbours): how
    # well the view tells a near-duplicate from a different image.
    separation: float


def near_threshold(
    originals: np.ndarray, copies: np.ndarray, neighbour_distances: np.ndarray | None = None
) -> Calibration:
    """The near-duplicate distance of one view: COPY_QUANTILE of the cosine distances between
    each original embedding and its edited copies, at most the NEIGHBOUR_SHARE quantile of
    `neighbour_distances`.

    originals: (M, D) float; copies: (M * c, D), the c copies of each original in order.
    neighbour_distances: (R,) each image's distance to its nearest other image in a set taken
    to be mostly free of duplicates (the reference set; zeros, exact copies, left out). The
    cap keeps a view that cannot tell an edited copy from another image (its copies land as far
    as other images do) from calling a tenth of the data near-duplicates: whatever the copies
    say, at most NEIGHBOUR_SHARE of those images have a near-duplicate. Without
    `neighbour_distances` the cap is inf.
    """
    per = len(copies) // len(originals)
    repeated = np.repeat(originals, per, axis=0).astype(np.float64)
    copies = copies.astype(np.float64)
    cosine = (repeated * copies).sum(1) / (
        np.linalg.norm(repeated, axis=1) * np.linalg.norm(copies, axis=1) + 1e-12
    )
    distance = 1 - cosine
    from_copies = float(np.quantile(distance, COPY_QUANTILE))
    cap, apart = np.inf, np.empty(0)
    if neighbour_distances is not None:
        apart = np.asarray(neighbour_distances, np.float64)
        apart = apart[apart > _TOLERANCE]
        if len(apart):
            cap = float(np.quantile(apart, NEIGHBOUR_SHARE))
    separation = 0.5
    if len(apart):
        apart = np.sort(apart)
        farther = len(apart) - np.searchsorted(apart, distance, side="right")
        ties = np.searchsorted(apart, distance, side="right") - np.searchsorted(apart, distance)
        separation = float((farther + ties / 2).mean() / len(apart))
    threshold = min(from_copies, cap)
    caught = float((distance < threshold).mean())
    return Calibration(threshold, from_copies, cap, caught, separation)


def best_view(calibrations: dict[str, Calibration]) -> str:
    """The view that tells an edited copy from a different image best: the highest
    `separation` (the first on a tie). A pretrained foundation model usually does; one with
    random weights (the first checkpoint of a model trained from scratch) does not."""
    return max(calibrations, key=lambda name: calibrations[name].separation)


def pixel_signatures(pixels: np.ndarray, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """Each image's picture as a unit vector: grey, averaged down to size x size, centred.

    pixels: (N, C, H, W), any dtype (the decoded pixels a build has). Returns float32
    (N, size * size): the dot product of two rows is the Pearson correlation of their pictures
    (0 for a flat image, which has none).
    """
    import torch

    grey = torch.as_tensor(np.asarray(pixels), dtype=torch.float32).mean(dim=1, keepdim=True)
    small = torch.nn.functional.adaptive_avg_pool2d(grey, size).flatten(1)
    small -= small.mean(dim=1, keepdim=True)
    small /= small.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return small.numpy()


def correlations(
    signatures: np.ndarray, other_signatures: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """The correlation of each image's picture with those of its neighbours.

    signatures: (N, P) and other_signatures: (R, P) from `pixel_signatures`; indices: int (N,)
    or (N, k), rows of other_signatures. Returns float32, the shape of `indices`.
    """
    indices = np.asarray(indices)
    columns = indices.reshape(len(indices), -1)
    out = np.empty(columns.shape, dtype=np.float32)
    for j in range(columns.shape[1]):  # a column at a time: N x k x P at once can be GBs
        out[:, j] = np.einsum("np,np->n", signatures, other_signatures[columns[:, j]])
    return out.reshape(indices.shape)


def pixel_threshold(signatures: np.ndarray, nearest: np.ndarray) -> float:
    """The correlation above which two pictures count as a copy: the 1 - NEIGHBOUR_SHARE
    quantile of each image's correlation with its nearest other image, in a set taken to be
    mostly free of duplicates (the reference set; exact copies, correlation 1, left out), so
    that at most 1 in 1,000 of those have a neighbour this alike.

    signatures: (R, P) from `pixel_signatures`; nearest: int (R,), each one's nearest other
    row (in an embedding view). Returns a correlation in [-1, 1] (1 for fewer than 2 images).
    """
    alike = correlations(signatures, signatures, nearest)
    alike = alike[alike < 1 - 1e-6]
    return float(np.quantile(alike, 1 - NEIGHBOUR_SHARE)) if len(alike) else 1.0


def near(
    distances: np.ndarray, calibration: Calibration, alike: np.ndarray | None = None
) -> np.ndarray:
    """Which pairs are near-duplicates: nearer than the calibrated threshold, or, where their
    pictures are alike (`alike`: correlation above `pixel_threshold`), nearer than the edited
    copies alone say (`Calibration.from_copies`, without the cap).

    distances: float, any shape (a k-NN graph's (N, k), or the (N,) nearest); alike: bool,
    the same shape. Returns bool, the same shape.
    """
    found = np.asarray(distances) < calibration.threshold
    if alike is not None:
        found |= (np.asarray(distances) < calibration.from_copies) & alike
    return found


def groups(
    knn_indices: np.ndarray,
    near_pairs: np.ndarray,
    hashes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Duplicate groups: images joined when one is among the other's k nearest and the pair
    is near (`near`), or when their pixel hashes are equal.

    knn_indices: int (N, k), nearest first, a row never its own neighbour; near_pairs: bool
    (N, k), which of those pairs are near-duplicates. Returns (group int64 (N,): 0, 1, ...
    numbered by first row, -1 for an image with no duplicate; count int64 (N,): how many other
    images of the set are its duplicates).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(knn_indices)
    rows, columns = np.nonzero(near_pairs)
    sources, targets = [rows], [knn_indices[rows, columns]]
    if hashes is not None:
        _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        sources.append(np.arange(n))
        targets.append(first[inverse])  # every copy joined to the first of its pixels
    source, target = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(len(source)), (source, target)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    grouped = sizes[component] > 1
    group = np.full(n, -1, dtype=np.int64)
    # Number groups 0, 1, ... in the order of their first row, so the ids read naturally.
    _, order = np.unique(component[grouped], return_index=True)
    numbering = {component[grouped][i]: number for number, i in enumerate(sorted(order))}
    group[grouped] = [numbering[c] for c in component[grouped]]
    return group, (sizes[component] - 1).astype(np.int64)


def leaks(
    near_nearest: np.ndarray,
    hashes: np.ndarray | None = None,
    reference_hashes: np.ndarray | None = None,
    in_reference: np.ndarray | None = None,
) -> np.ndarray:
    """Images that are in the reference (training) data: their nearest reference image is a
    near-duplicate, or another reference image has the same pixels.

    near_nearest: bool (N,), `near` of each image and its nearest reference image
    (leave-one-out where the image itself is in the reference). hashes/reference_hashes:
    pixel digests of both sets (`pixel_hashes`); in_reference: bool (N,), the image itself is
    a reference row (not counted as its own copy). Returns bool (N,).
    """
    leaked = np.asarray(near_nearest, dtype=bool).copy()
    if hashes is not None and reference_hashes is not None:
        found, counts = np.unique(reference_hashes, return_counts=True)
        position = np.searchsorted(found, hashes).clip(max=len(found) - 1)
        copies = np.where(found[position] == hashes, counts[position], 0)
        if in_reference is not None:
            copies = copies - np.asarray(in_reference, dtype=np.int64)
        leaked |= copies > 0
    return leaked
