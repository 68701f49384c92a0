"""explorer.dynamics against hand-computed examples and brute force."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from explorer.dynamics import (
    accuracy,
    class_separation,
    data_map,
    forgetting,
    knn_accuracy,
    knn_vote,
    movement,
    per_class_accuracy,
)
from explorer.errors import ExplorerError

# Three checkpoints, four images, two classes: the probability of class 1 at each checkpoint.
# image 0: label 0, p(label) 0.9 0.9 0.9 -> right at all three
# image 1: label 1, p(label) 0.2 0.8 0.5 -> wrong, right, wrong (a 0.5 tie goes to class 0)
# image 2: label 0, p(label) 0.3 0.2 0.1 -> wrong at all three
# image 3: label 1, p(label) 0.6 0.5 0.7 -> right, wrong (tie), right
P_CLASS_1 = np.array(
    [
        [0.1, 0.2, 0.7, 0.6],
        [0.1, 0.8, 0.8, 0.5],
        [0.1, 0.5, 0.9, 0.7],
    ]
)
PROBABILITIES = np.stack([1 - P_CLASS_1, P_CLASS_1], axis=2)  # (3, 4, 2)
LABELS = np.array([0, 1, 0, 1])


def test_data_map_by_hand():
    result = data_map(PROBABILITIES, LABELS, skip_first=False)
    # confidence: mean p(label) = 0.9, 1.5/3, 0.6/3, 1.8/3
    np.testing.assert_allclose(result.confidence, [0.9, 0.5, 0.2, 0.6], rtol=1e-6)
    # variability: population std of p(label): 0; sqrt((0.09+0.09+0)/3); sqrt((0.01+0+0.01)/3) x2
    np.testing.assert_allclose(
        result.variability, [0, np.sqrt(0.06), np.sqrt(0.02 / 3), np.sqrt(0.02 / 3)], atol=1e-7
    )
    # correctness: 3/3, 1/3, 0/3, 2/3
    np.testing.assert_allclose(result.correctness, [1, 1 / 3, 0, 2 / 3], rtol=1e-6)
    # 2/3 quantile of [0, 0.245, 0.082, 0.082] is 0.082, below the 0.1 floor: cut at 0.1, so only
    # image 1 is ambiguous; images 0 and 3 have confidence >= 0.5 (easy), image 2 is hard.
    assert result.region.tolist() == ["easy", "ambiguous", "hard", "easy"]
    for column in (result.confidence, result.variability, result.correctness):
        assert column.dtype == np.float32 and column.shape == (4,)


def test_region_ambiguous_is_the_top_third_by_variability():
    # Two checkpoints, p(label) 0.5 - d then 0.5 + d: confidence 0.5 (easy), variability d.
    d = np.array([0.05, 0.15, 0.2, 0.25, 0.3, 0.35])
    p_label = np.stack([0.5 - d, 0.5 + d])  # (2, 6); the label is class 0
    probabilities = np.stack([p_label, 1 - p_label], axis=2)
    result = data_map(probabilities, np.zeros(6, dtype=int))
    np.testing.assert_allclose(result.variability, d, rtol=1e-6)
    # 2/3 quantile of d: position 5 * 2/3 = 3.33, between 0.25 and 0.3 -> 0.2667: the top two
    assert result.region.tolist() == ["easy"] * 4 + ["ambiguous"] * 2


def test_data_map_skips_the_untouched_model_only_when_two_trained_checkpoints_remain():
    skipped = data_map(PROBABILITIES, LABELS)  # default skip_first=True, C=3: checkpoints 1, 2
    # image 1: p(label) 0.8, 0.5 -> confidence 0.65, variability 0.15, correctness 1/2
    np.testing.assert_allclose(skipped.confidence, [0.9, 0.65, 0.15, 0.6], rtol=1e-6)
    np.testing.assert_allclose(skipped.variability, [0, 0.15, 0.05, 0.1], atol=1e-7)
    np.testing.assert_allclose(skipped.correctness, [1, 0.5, 0, 0.5])
    two = PROBABILITIES[:2]  # C=2: nothing is skipped
    kept, unskipped = data_map(two, LABELS), data_map(two, LABELS, skip_first=False)
    for a, b in zip(kept, unskipped, strict=True):
        np.testing.assert_array_equal(a, b)


def test_forgetting_by_hand():
    correct = np.array(
        [
            # a     b      c      d      e
            [True, False, True, False, True],  # step 0
            [False, False, True, False, False],  # step 5
            [True, True, True, False, False],  # step 10
            [False, True, True, False, True],  # step 15
        ]
    )
    steps = np.array([0, 5, 10, 15])
    result = forgetting(correct, steps, skip_first=False)
    # a: T F T F -> 2 events, wrong at the end; b: F F T T -> learned at 10; c: always right;
    # d: never right; e: T F F T -> 1 event, learned at 15
    assert result.forgetting_events.tolist() == [2, 0, 0, 0, 1]
    assert result.forgetting_events.dtype == np.int64
    np.testing.assert_array_equal(result.learned_step, [np.nan, 10, 0, np.nan, 15])
    assert result.learned_step.dtype == np.float32
    assert result.never_learned.tolist() == [False, False, False, True, False]

    skipped = forgetting(correct, steps)  # steps 5, 10, 15 only
    # a: F T F -> 1; b: F T T -> 10; c: T T T -> 5; d: never; e: F F T -> 0 events, 15
    assert skipped.forgetting_events.tolist() == [1, 0, 0, 0, 0]
    np.testing.assert_array_equal(skipped.learned_step, [np.nan, 10, 5, np.nan, 15])
    assert skipped.never_learned.tolist() == [False, False, False, True, False]


def test_forgetting_of_the_data_map_example():
    correct = PROBABILITIES.argmax(axis=2) == LABELS  # images: TTT, FTF, FFF, TFT
    result = forgetting(correct, np.array([0, 10, 20]), skip_first=False)
    assert result.forgetting_events.tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(result.learned_step, [0, np.nan, np.nan, 20])
    assert result.never_learned.tolist() == [False, False, True, False]


def test_movement_by_hand():
    before = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2]])
    after = np.array([[2, 1, 0], [3, 4, 0], [0, 3, 1], [0, 1, 4], [3, 2, 1]])
    # k=2: row 0 {1,2} vs {2,1} -> 0; row 1 {0,2} vs {3,4} -> 1; row 2 {0,1} vs {0,3} -> 1 - 1/3;
    # row 3 {0,1} vs {0,1} -> 0; row 4 {0,1} vs {3,2} -> 1. The third column is ignored.
    result = movement(before, after, k=2)
    np.testing.assert_allclose(result, [0, 1, 2 / 3, 0, 1], rtol=1e-6)
    assert result.dtype == np.float32
    # k=3: row 2 {0,1,3} vs {0,3,1} -> 0; row 4 {0,1,2} vs {3,2,1} -> 1 - 2/4
    np.testing.assert_allclose(movement(before, after, k=3)[[2, 4]], [0, 0.5])


def test_knn_vote_by_hand_with_ties():
    labels = np.array([0, 0, 1, 1, 1])
    knn = np.array(
        [
            [2, 1, 3, 4],  # votes 1 0 1 1 -> 1 (label 0: wrong)
            [4, 2, 0, 3],  # votes 1 1 0 1 -> 1 (label 0: wrong)
            [4, 0, 1, 3],  # votes 1 0 0 1 -> tie, the nearest (image 4) is class 1 -> 1 (right)
            [0, 4, 2, 1],  # votes 0 1 1 0 -> tie, the nearest (image 0) is class 0 -> 0 (wrong)
            [2, 0, 3, 1],  # votes 1 0 1 0 -> tie, the nearest (image 2) is class 1 -> 1 (right)
        ]
    )
    assert knn_vote(knn, labels, k=4).tolist() == [1, 1, 1, 0, 1]
    assert knn_accuracy(knn, labels, k=4) == pytest.approx(2 / 5)
    # k=3: votes 1 0 1 | 1 1 0 | 1 0 0 | 0 1 1 | 1 0 1 -> rows 3 and 4 right
    assert knn_vote(knn, labels, k=3).tolist() == [1, 1, 0, 1, 1]
    assert knn_accuracy(knn, labels, k=3) == pytest.approx(2 / 5)
    # k=1 is the nearest neighbour's label
    assert knn_vote(knn, labels, k=1).tolist() == labels[knn[:, 0]].tolist()


def test_knn_vote_against_a_brute_force_loop():
    rng = np.random.default_rng(0)
    n, k = 60, 7
    labels = rng.integers(0, 4, n)
    distances = rng.random((n, n))
    np.fill_diagonal(distances, np.inf)
    knn = np.argsort(distances, axis=1)[:, : k + 2]  # a random graph without self
    expected = []
    for row in knn[:, :k]:
        votes = labels[row].tolist()
        count = Counter(votes)
        top = max(count.values())
        expected.append(next(v for v in votes if count[v] == top))  # nearest of the tied
    assert knn_vote(knn, labels, k=k).tolist() == expected
    assert knn_accuracy(knn, labels, k=k) == np.mean(np.array(expected) == labels)


def test_class_separation_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 90)
    embeddings = rng.normal(size=(90, 5)) + 2 * np.eye(5)[labels]
    expected = silhouette_score(embeddings, labels, metric="cosine")
    assert class_separation(embeddings, labels) == pytest.approx(expected, rel=1e-12)
    # above sample_size: the silhouette of a seeded subset of sample_size rows
    rows = np.sort(np.random.default_rng(3).choice(90, 40, replace=False))
    subset = silhouette_score(embeddings[rows], labels[rows], metric="cosine")
    assert class_separation(embeddings, labels, sample_size=40, seed=3) == pytest.approx(subset)
    assert subset != pytest.approx(expected)
    assert np.isnan(class_separation(embeddings, np.zeros(90, dtype=int)))  # one class


def test_accuracy_and_per_class_accuracy_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 3])
    predictions = np.array([0, 1, 1, 1, 0, 3])
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # class 0: 1/2, class 1: 2/3, class 2: no image -> NaN, class 3: 1/1
    result = per_class_accuracy(predictions, labels)
    np.testing.assert_allclose(result, [0.5, 2 / 3, np.nan, 1], rtol=1e-6)
    assert result.dtype == np.float32
    # probabilities: argmax per row; five classes from their shape, class 4 absent -> NaN
    probabilities = np.eye(5)[predictions] * 0.6 + 0.1
    assert accuracy(probabilities, labels) == pytest.approx(4 / 6)
    np.testing.assert_allclose(
        per_class_accuracy(probabilities, labels), [0.5, 2 / 3, np.nan, 1, np.nan], rtol=1e-6
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: data_map(PROBABILITIES, LABELS[:3]), "labels must be one per image"),
        (lambda: data_map(PROBABILITIES, np.array([0, 1, 2, 0])), "labels must be in [0, 2)"),
        (lambda: data_map(PROBABILITIES, np.array([0, -1, 1, 0])), "labels must be in [0, 2)"),
        (lambda: data_map(PROBABILITIES, LABELS.astype(float)), "labels must be integers"),
        (lambda: data_map(PROBABILITIES[0], LABELS), "probabilities must be (checkpoints"),
        (lambda: forgetting(np.ones((3, 4), bool), np.arange(2)), "steps must be 3 increasing"),
        (lambda: forgetting(np.ones((3, 4), bool), np.zeros(3)), "steps must be 3 increasing"),
        (lambda: forgetting(np.ones((3, 4)), np.arange(3)), "correct must be bool (C, N)"),
        (lambda: movement(np.zeros((3, 2), int), np.zeros((4, 2), int), k=1), "graphs differ"),
        (lambda: movement(np.array([[1, 2]] * 3), np.array([[1, 2]] * 3), k=3), "k must be in"),
        (lambda: movement(np.array([[1, 1]] * 3), np.array([[1, 2]] * 3), k=2), "repeats"),
        (lambda: knn_vote(np.array([[1], [2], [5]]), np.zeros(3, int), k=1), "outside [0, 3)"),
        (lambda: knn_vote(np.array([[1], [1], [0]]), np.zeros(3, int), k=1), "its own neighbour"),
        (lambda: knn_vote(np.array([[1], [2], [0]]), np.zeros(2, int), k=1), "one per image"),
        (lambda: class_separation(np.zeros(3), np.zeros(3, int)), "embeddings must be (N, D)"),
        (lambda: accuracy(np.array([0.5, 0.2]), np.zeros(2, int)), "predictions must be int"),
        (lambda: per_class_accuracy(np.eye(2), np.array([0, 2])), "labels must be in [0, 2)"),
    ],
)
def test_bad_input_is_a_one_line_explorer_error(call, message):
    with pytest.raises(ExplorerError) as error:
        call()
    assert message in str(error.value)
    assert "\n" not in str(error.value)
