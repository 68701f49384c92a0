"""Outliers, near-duplicates and leaks against a reference set (issue 15), on digits with the
tiny models: checked against brute force and cleanlab itself, on images planted for the purpose.
"""

from __future__ import annotations

import json
from dataclasses import replace

import datasets
import numpy as np
import pytest
from cleanlab.outlier import OutOfDistribution
from PIL import Image
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import roc_auc_score
from test_timeline import make_run

from explorer import build, data, duplicates, embed, neighbors, outliers, runs
from explorer.reference import choose, load

N_TEST = 100  # digits test images in the planted set
CLUSTER = 20  # near-identical noise images: a cluster of outliers that masks itself
EXACT = [3, 17, 40]  # test rows copied once more, pixel for pixel
NEAR = [5, 60]  # test rows copied with one pixel one grey level brighter
LEAKED = [0, 11, 222]  # digits train rows copied into the planted test split
NEAR_LEAKED = [7, 500]  # digits train rows copied with one pixel changed


def _nudged(image: Image.Image) -> Image.Image:
    pixels = np.array(image.convert("L"))
    pixels[4, 4] = min(int(pixels[4, 4]) + 1, 255)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """digits (train and test) saved with a planted test split: 100 test images, a cluster of
    20 near-identical noise images, exact and near copies of test images and of train images.
    Returns (folder, kind per test row)."""
    digits = data.load_digits()
    test = digits["test"].select(range(N_TEST))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    images, kinds = [], []
    for i in range(CLUSTER):  # each differs from the others in one pixel
        copy = noise.copy()
        copy[i // 8, i % 8] ^= 1
        images.append(Image.fromarray(copy))
        kinds.append("noise")
    images += [test[row]["image"] for row in EXACT] + [_nudged(test[row]["image"]) for row in NEAR]
    kinds += ["exact"] * len(EXACT) + ["near"] * len(NEAR)
    train = digits["train"]
    images += [train[row]["image"] for row in LEAKED]
    images += [_nudged(train[row]["image"]) for row in NEAR_LEAKED]
    kinds += ["leak"] * (len(LEAKED) + len(NEAR_LEAKED))
    extra = datasets.Dataset.from_dict(
        {"image": images, "label": [0] * len(images)}, features=test.features
    )
    planted_test = datasets.concatenate_datasets([test, extra])
    folder = tmp_path_factory.mktemp("planted") / "digits-planted"
    datasets.DatasetDict({"train": train, "test": planted_test}).save_to_disk(str(folder))
    return folder, np.array([""] * N_TEST + kinds)


@pytest.fixture(scope="module")
def against_train(planted, tiny_models, tmp_path_factory):
    """The planted test split built with the default reference: the folder's train split."""
    folder, _ = planted
    out = tmp_path_factory.mktemp("against") / "out"
    table = build(
        str(folder), foundation=tiny_models["foundation"], finetuned=tiny_models["finetuned"],
        out=out, progress=False,
    )  # fmt: skip
    return out, table


def _embeddings(model, images: datasets.Dataset) -> np.ndarray:
    preprocessing = embed.Preprocessing.from_model(model)
    pixels = embed.prepare_pixels(images, preprocessing, progress=False)
    return embed.embed_model(model, pixels, preprocessing, progress=False).vectors


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - a.astype(np.float64) @ b.T.astype(np.float64)


# --- the k-NN search and the scores, on arrays -----------------------------------------------


def test_query_knn_matches_brute_force_with_exclusions():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(400, 12)).astype(np.float32)
    queries = rng.normal(size=(150, 12)).astype(np.float32)
    queries[:30] = base[100:130]  # shared images: each must not find itself
    base[131] = base[100]  # ... but does find an exact copy of itself
    exclude = np.full(150, -1)
    exclude[:30] = np.arange(100, 130)
    indices, distances = neighbors.query_knn(queries, base, 10, exclude=exclude, block_size=64)
    expected = _cosine(queries, base)
    expected[np.arange(30), np.arange(100, 130)] = np.inf
    order = np.argsort(expected, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(distances, np.take_along_axis(expected, order, 1), atol=1e-6)
    assert (indices == order).mean() > 0.99
    assert not (indices[:30] == exclude[:30, None]).any()
    assert indices[0, 0] == 131 and distances[0, 0] < 1e-6


def test_reference_scores_equal_cleanlab_fit_then_score():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(300, 16)) + 2.0
    scored = np.vstack([rng.normal(size=(80, 16)) + 2.0, -rng.normal(size=(5, 16)) - 2.0])
    _, own = neighbors.exact_knn(reference, 10)
    _, found = neighbors.query_knn(scored, reference, 10)
    detector = OutOfDistribution()
    detector.fit(features=reference, verbose=False)
    expected = detector.score(features=scored)
    np.testing.assert_allclose(
        outliers.outlier_scores(found, reference_distances=own), expected, atol=1e-5
    )


def test_combined_score_flags_what_either_view_flags():
    rng = np.random.default_rng(3)
    own = np.sort(rng.uniform(0.1, 0.2, (1000, 10)), axis=1)  # the reference's own distances
    query = np.sort(rng.uniform(0.1, 0.2, (50, 10)), axis=1)
    far_in_one = query.copy()
    far_in_one[:5] += 1.0  # odd in the first view only
    score, is_outlier, threshold = outliers.combined_scores([(far_in_one, own), (query, own)])
    assert is_outlier[:5].all() and is_outlier.sum() <= 5 + 3
    np.testing.assert_array_equal(is_outlier, score < 0.5)
    z = outliers.robust_z(outliers.mean_distances(far_in_one), outliers.mean_distances(own))
    z = np.maximum(
        z, outliers.robust_z(outliers.mean_distances(query), outliers.mean_distances(own))
    )
    np.testing.assert_allclose(score, 2.0 ** (-np.maximum(z, 0) / threshold), rtol=1e-6)
    # about 1 % of the reference itself is past the threshold
    _, own_flags, _ = outliers.combined_scores([(own, own), (own, own)])
    assert 0.005 <= own_flags.mean() <= 0.015


def test_duplicate_groups_join_pairs_and_equal_pixels():
    indices = np.array([[1, 2], [0, 2], [0, 1], [0, 1], [3, 0]])
    distances = np.array([[0.01, 0.5], [0.01, 0.5], [0.5, 0.6], [0.7, 0.8], [0.7, 0.8]])
    hashes = np.array(["a", "b", "c", "d", "c"])
    group, count = duplicates.groups(indices, distances < 0.05, hashes)
    assert group.tolist() == [0, 0, 1, -1, 1]
    assert count.tolist() == [1, 1, 1, 0, 1]


def test_pixels_confirm_a_near_duplicate_the_capped_threshold_misses():
    """A brighter copy lands as far as a different image does in the embedding; its picture
    correlates with the original's, the different image's does not."""
    rng = np.random.default_rng(0)
    original = rng.integers(0, 200, (1, 3, 32, 32)).astype(np.float64)
    brighter = np.clip(original * 1.05 + 4, 0, 255)
    different = rng.integers(0, 200, (1, 3, 32, 32)).astype(np.float64)
    signatures = duplicates.pixel_signatures(np.concatenate([original, brighter, different]))
    assert signatures.shape == (3, 16 * 16)
    grey = np.concatenate([original, brighter, different]).mean(axis=1)
    small = grey.reshape(3, 16, 2, 16, 2).mean(axis=(2, 4)).reshape(3, -1)
    others = np.array([[1, 2], [0, 2], [0, 1]])  # each image's two neighbours
    alike = duplicates.correlations(signatures, signatures, others)
    pearson = np.corrcoef(small)  # by hand: grey, 2 x 2 blocks averaged
    np.testing.assert_allclose(alike, pearson[np.arange(3)[:, None], others], atol=1e-5)
    assert alike[0, 0] > 0.99 and abs(alike[0, 1]) < 0.2
    calibration = duplicates.Calibration(0.001, 0.02, 0.001, 0.2, 0.9)
    distances = np.array([[0.005, 0.006], [0.005, 0.007], [0.006, 0.007]])  # all past the cap
    pairs = duplicates.near(distances, calibration, alike >= 0.99)
    assert pairs.tolist() == [[True, False], [True, False], [False, False]]
    assert not duplicates.near(distances, calibration).any()  # the embedding alone: none
    group, _ = duplicates.groups(others, pairs)
    assert group.tolist() == [0, 0, -1]


def test_the_pixel_threshold_lets_1_in_1000_reference_neighbours_pass():
    rng = np.random.default_rng(1)
    signatures = rng.normal(size=(5000, 64)).astype(np.float32)
    signatures /= np.linalg.norm(signatures, axis=1, keepdims=True)
    nearest = np.roll(np.arange(5000), 1)
    cut = duplicates.pixel_threshold(signatures, nearest)
    alike = (signatures * signatures[nearest]).sum(1)
    assert (alike > cut).sum() <= 5
    assert cut == pytest.approx(np.quantile(alike, 0.999), abs=1e-6)


# --- whole builds ----------------------------------------------------------------------------


def test_a_cluster_of_outliers_masks_itself_without_a_reference(planted, tiny_models, tmp_path):
    """20 near-identical noise images are each other's neighbours: scored within the set they
    look normal; scored against the training images they are all outliers."""
    folder, kinds = planted
    noise = kinds == "noise"
    table = build(
        str(folder), foundation=tiny_models["foundation"], finetuned=tiny_models["finetuned"],
        out=tmp_path / "none", reference="none", nn_threshold=0.045, progress=False,
    )  # fmt: skip
    assert "is_leak" not in table.column_names and "nn_reference_id" not in table.column_names
    assert table["nn_flag"] == list(np.array(table["nn_distance"]) < 0.045)  # the seed's
    assert not np.array(table["is_outlier"])[noise].any()
    score = np.array(table["outlier_score_found"])
    assert np.median(score[noise]) > np.median(score[~noise])  # they look more typical
    assert json.loads((tmp_path / "none" / "run.json").read_text())["reference"] is None


def test_a_reference_finds_the_cluster(planted, against_train):
    _, kinds = planted
    out, table = against_train
    noise = kinds == "noise"
    assert np.array(table["is_outlier"])[noise].all()
    score = np.array(table["outlier_score"])
    assert set(np.argsort(score, kind="stable")[: noise.sum()]) == set(np.flatnonzero(noise))
    record = json.loads((out / "run.json").read_text())
    assert record["reference"]["chosen"] == "the train split"
    assert record["reference"]["num_rows"] == 1347 and record["reference"]["split"] == "train"


@pytest.mark.parametrize("which", ["foundation", "finetuned"])
def test_scores_against_the_reference_equal_cleanlab(against_train, tiny_models, which):
    _, table = against_train
    train = data.load_digits()["train"]
    detector = OutOfDistribution()
    detector.fit(features=_embeddings(tiny_models[which], train).astype(np.float64), verbose=False)
    column = "embedding_foundation" if which == "foundation" else "embedding_ft"
    expected = detector.score(features=np.array(table[column], dtype=np.float64))
    name = "outlier_score_found" if which == "foundation" else "outlier_score_ft"
    np.testing.assert_allclose(table[name], expected, atol=1e-5)


def test_duplicates_and_leaks_are_found(planted, against_train, tiny_models):
    """The planted copies are found; every group and leak is what brute force says for the
    threshold the build calibrated."""
    _, kinds = planted
    out, table = against_train
    review = json.loads((out / "run.json").read_text())["review"]
    threshold, view = review["near_duplicate_threshold"], review["near_duplicate_view"]
    group = np.array(table["duplicate_group"])
    n_copies = len(EXACT) + len(NEAR)
    copies = np.flatnonzero(np.isin(kinds, ["exact", "near"]))
    originals = np.array(EXACT + NEAR)
    assert (group[copies] >= 0).all() and (group[copies] == group[originals]).all()
    assert len(set(group[copies])) == n_copies  # one group per copied image
    column = "embedding_foundation" if view == "foundation" else "embedding_ft"
    found = np.array(table[column], dtype=np.float64)
    # brute force: every pair nearer than the threshold, or with the same pixels, joined
    pixels = np.stack([np.asarray(image.convert("L")) for image in table["image"]])
    same = (pixels.reshape(len(pixels), 1, -1) == pixels.reshape(1, len(pixels), -1)).all(2)
    linked = (_cosine(found, found) < threshold) | same
    _, component = connected_components(linked, directed=False)
    sizes = np.bincount(component)[component]
    np.testing.assert_array_equal(table["duplicate_count"], sizes - 1)
    for row in range(len(found)):  # the same partition
        assert (group == group[row]).tolist() == (component == component[row]).tolist() or (
            sizes[row] == 1 and group[row] == -1
        )
    assert table["nn_flag"] == list(sizes > 1)

    leaks = np.array(table["is_leak"])
    assert leaks[kinds == "leak"].all()
    reference = _embeddings(tiny_models[view], data.load_digits()["train"])
    to_reference = _cosine(found, reference)
    np.testing.assert_allclose(table["nn_reference_distance"], to_reference.min(1), atol=1e-5)
    np.testing.assert_array_equal(leaks, to_reference.min(1) < threshold)
    leaked_rows = np.array(table["nn_reference_id"])[kinds == "leak"]
    assert leaked_rows.tolist() == LEAKED + NEAR_LEAKED


# --- a run: its training data is the reference; shared images are left out of their own ------


@pytest.fixture(scope="module")
def run_build(tmp_path_factory):
    """A run trained (by its record) on 200 digits train images, reviewed on 60 train images:
    some of them are in the reference and must be scored leave-one-out."""
    root = tmp_path_factory.mktemp("run")
    run = make_run(root / "run")
    trained, rows = data.load_with_rows("digits", "train", 200)
    runs.write_training_record(
        run,
        data={"source": "digits", "data_dir": None, "split": "train", "eval_split": None,
              "limit": 200, "sample": "random", "seed": data.SAMPLE_SEED,
              "image_column": None, "label_column": None, "labels": data.class_names(trained),
              "num_rows": 200, "eval_num_rows": None, "rows": rows, "eval_rows": None},
        training={},
    )  # fmt: skip
    table = build("digits", run=run, split="train", limit=60, out=root / "out", progress=False)
    return run, root / "out", table


def test_a_run_is_measured_against_its_training_data(run_build):
    run, out, table = run_build
    record = json.loads((out / "run.json").read_text())
    assert record["reference"]["chosen"] == "the run's training data"
    assert record["reference"]["num_rows"] == 200
    # each checkpoint caches the reference's embeddings beside the reviewed ones'
    for checkpoint in runs.list_checkpoints(run):
        assert len(list((checkpoint.path / "explorer-cache").glob("*.safetensors"))) == 2
    timeline = datasets.load_from_disk(str(out / "timeline"))
    assert timeline.features["is_outlier"] == datasets.Value("bool")
    last = timeline.filter(lambda step: step == 10, input_columns="step")
    np.testing.assert_allclose(last["outlier_score"], table["outlier_score_ft"], atol=1e-6)


def test_shared_images_are_left_out_of_their_own_neighbours(run_build):
    run, out, table = run_build
    reviewed = np.array(json.loads((out / "run.json").read_text())["dataset"]["rows"])
    trained = np.array(runs.read_training_data(run)["rows"])
    shared = np.isin(reviewed, trained)
    assert 0 < shared.sum() < len(reviewed)
    record = json.loads((out / "run.json").read_text())["reference"]
    assert record["shared_with_reviewed"] == shared.sum()
    nearest = np.array(table["nn_reference_id"])
    assert (nearest != reviewed).all()  # never itself
    assert not np.array(table["is_leak"])[shared].any() or np.array(table["duplicate_count"]).any()
    # the score of a shared image is cleanlab's fit_score of the reference, at its row
    images = data.load("digits", split="train", limit=200)
    first = runs.list_checkpoints(run)[0].path
    fitted = OutOfDistribution().fit_score(
        features=_embeddings(first, images).astype(np.float64), verbose=False
    )
    position = np.searchsorted(trained, reviewed[shared])
    np.testing.assert_allclose(
        np.array(table["outlier_score_found"])[shared], fitted[position], atol=1e-5
    )


def test_the_default_reference_is_chosen_and_said(tmp_path):
    choice, line = choose(None, dataset="digits", split=None, run=None)
    assert (choice.source, choice.split, choice.why) == ("digits", "train", "the train split")
    choice, line = choose(None, dataset="digits", split="train", run=None)
    assert choice is None and line.startswith("no reference set")
    choice, _ = choose("fashion-mnist", dataset="digits", split=None, run=None)
    assert (choice.source, choice.split) == ("fashion-mnist", "train")
    choice, _ = choose("digits:test", dataset="digits", split=None, run=None)
    assert (choice.source, choice.split) == ("digits", "test")
    assert choose("none", dataset="digits", split=None, run=None)[0] is None
    run = make_run(tmp_path / "run", steps=(0,))  # no training record
    choice, line = choose(None, dataset="digits", split=None, run=str(run))
    assert choice is None and "records no training data" in line


def test_the_reference_is_a_sample_of_the_training_sample():
    """A run trained on 200 of digits' train images: a reference of 50 is drawn from those 200,
    and reviewed images among them are found by their source rows."""
    _, trained = data.load_with_rows("digits", "train", 200)
    choice, _ = choose(None, dataset="digits", split=None, run=None)
    choice = replace(choice, limit=200)
    reviewed = np.array([*trained[:40], 1346])
    reference = load(
        choice, 50, dataset="digits", split="train", data_dir=None, reviewed_rows=reviewed
    )
    assert len(reference.rows) == 50 and np.isin(reference.rows, trained).all()
    assert reference.images.num_rows == 50
    labels = np.array(reference.images["label"])
    assert np.bincount(labels, minlength=10).min() >= 4  # stratified
    assert 0 < (reference.exclude >= 0).sum() < 40
    for i, row in enumerate(reviewed):
        if row in reference.rows:
            assert reference.rows[reference.exclude[i]] == row
        else:
            assert reference.exclude[i] == -1
    fewer = reference.without([0, 1])
    assert len(fewer.rows) == 48 and fewer.images.num_rows == 48
    for i in np.flatnonzero(fewer.exclude >= 0):
        assert fewer.rows[fewer.exclude[i]] == reviewed[i]


def test_the_threshold_is_calibrated_on_copies_and_capped_by_neighbours():
    rng = np.random.default_rng(4)
    originals = rng.normal(size=(50, 8))
    copies = np.repeat(originals, 3, axis=0) + rng.normal(scale=0.01, size=(150, 8))
    copy_distance = np.diag(_cosine(np.repeat(originals, 3, axis=0), copies))
    neighbours = rng.uniform(0.0, 0.1, 5000)
    calibrated = duplicates.near_threshold(originals, copies, neighbours)
    assert calibrated.from_copies == pytest.approx(np.quantile(copy_distance, 0.95))
    assert calibrated.cap == pytest.approx(np.quantile(neighbours, 0.001))
    assert calibrated.threshold == min(calibrated.from_copies, calibrated.cap)
    assert calibrated.caught == pytest.approx((copy_distance < calibrated.threshold).mean())
    expected = roc_auc_score(np.r_[np.ones(150), np.zeros(5000)], -np.r_[copy_distance, neighbours])
    assert calibrated.separation == pytest.approx(expected)
    blurred = duplicates.near_threshold(originals, copies, rng.uniform(0, 1e-5, 5000))
    assert duplicates.best_view({"a": blurred, "b": calibrated}) == "b"
