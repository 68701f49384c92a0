"""The pixel-property view: cleanvision's own numbers, exact leave-one-out neighbours, and damage
that an embedding may not see found against a reference."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.datasets import load_digits

from explorer import outliers
from explorer.properties import PROPERTIES, image_properties, property_distances


def _digits(count: int, seed: int = 0) -> list[Image.Image]:
    """`count` sklearn digits at 32 x 32 px, grey."""
    digits = load_digits().images
    rows = np.random.default_rng(seed).choice(len(digits), count, replace=False)
    return [
        Image.fromarray(np.round(digits[r] * 255 / 16).astype(np.uint8)).resize((32, 32))
        for r in rows
    ]


def test_properties_are_cleanvisions_own():
    """The dark and light scores cleanvision's Imagelab reports are two of our raw values."""
    from cleanvision import Imagelab

    images = _digits(12) + [Image.new("RGB", (32, 32), (250, 240, 230))]
    table = datasets.Dataset.from_dict(
        {"image": images}, features=datasets.Features({"image": datasets.Image()})
    )
    lab = Imagelab(hf_dataset=table, image_key="image")
    lab.find_issues({"dark": {}, "light": {}}, verbose=False)
    ours = image_properties(images)
    assert ours.shape == (13, len(PROPERTIES))
    column = {name: ours[:, i] for i, name in enumerate(PROPERTIES)}
    np.testing.assert_allclose(column["brightness_perc_99"], lab.issues["dark_score"], atol=1e-12)
    np.testing.assert_allclose(1 - column["brightness_perc_5"], lab.issues["light_score"])


def test_distances_match_brute_force_leaving_each_image_out():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(40, 3)) * [1, 10, 100]
    scored = np.vstack([reference[[3, 7]], rng.normal(size=(5, 3))])
    exclude = np.array([3, 7, -1, -1, -1, -1, -1])
    knn, own = property_distances(scored, reference, exclude=exclude, k=4)

    low, high = np.quantile(reference, [0.25, 0.75], axis=0)
    a, b = scored / (high - low), reference / (high - low)
    pair = np.linalg.norm(a[:, None] - b[None], axis=2)
    pair[[0, 1], [3, 7]] = np.inf  # leave-one-out
    np.testing.assert_allclose(knn, np.sort(pair, axis=1)[:, :4])
    within = np.linalg.norm(b[:, None] - b[None], axis=2)
    np.fill_diagonal(within, np.inf)
    np.testing.assert_allclose(own, np.sort(within, axis=1)[:, :4])
    # without a reference the scored images are their own, leave-one-out
    alone, again = property_distances(reference, k=4)
    np.testing.assert_allclose(alone, own)
    assert again is alone


@pytest.mark.parametrize(
    "damage",
    [
        lambda im: im.filter(ImageFilter.GaussianBlur(2)),
        lambda im: Image.eval(im, lambda v: 255 - v),
        lambda im: Image.eval(im, lambda v: v // 4),
    ],
    ids=["blurred", "inverted", "darkened"],
)
def test_a_cluster_of_damaged_images_stands_out_against_the_reference(damage):
    """20 images damaged the same way: each other's neighbours, yet far from the reference."""
    reference = image_properties(_digits(300, seed=1))
    clean = _digits(60, seed=2)
    damaged = [damage(im) for im in _digits(20, seed=3)]
    scored = image_properties(clean + damaged)
    score, is_outlier, _ = outliers.combined_scores([property_distances(scored, reference)])
    # digits scaled up from 8 x 8 px are soft already: a blurred one is not always beyond
    # the reference's 99th percentile, but it ranks below the clean ones
    assert is_outlier[60:].mean() >= 0.6
    assert is_outlier[:60].mean() <= 0.05
    below = (score[60:, None] < score[None, :60]).mean()  # AUROC of -score
    assert below >= 0.95
