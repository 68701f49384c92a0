"""What did each image, and each class, do during fine-tuning? Small functions over numpy arrays.

Inputs are what a build already has at every checkpoint: class probabilities (C checkpoints, N
images, K classes), the given labels (N,), embeddings and their k-NN graphs. Read it top down:

- `data_map` (or `data_map_of`, from what a build keeps per checkpoint): confidence,
  variability, correctness and region of every image (Dataset Cartography, Swayamdipta et al.,
  2020).
- `forgetting`: how often each image was forgotten, and from which step it stayed learned
  (Toneva et al., 2019).
- `movement`: how much an image's k nearest neighbours changed between two graphs.
- `margins` and `label_issues`: which given labels look wrong, by the area under the margin
  over the run (Pleiss et al., 2020), cut where its low mode ends (`low_mode_edge`).
- Per-checkpoint scores: `accuracy`, `per_class_accuracy`, `knn_accuracy` (with `knn_vote`) and
  `class_separation`.

Checkpoint 0 is the untouched model, whose classification head is new and untrained: its
predictions are chance, not training dynamics. `data_map`, `forgetting` and `label_issues` leave
it out (`skip_first=True`) whenever at least two trained checkpoints remain. Given the steps,
averages over checkpoints weigh each by the training steps since the one before, so that
checkpoints spaced geometrically (`explorer finetune`'s default, dense early) measure over
training time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from explorer.errors import ExplorerError
from explorer.predictions import LabelIssues

DEFAULT_K = 10  # neighbours per image, as in the outlier score
AMBIGUOUS_QUANTILE = 2 / 3  # the paper's ambiguous images are the top 33% by variability
AMBIGUOUS_MIN_VARIABILITY = 0.1  # below it nothing wavers: a stable run has no ambiguous images
EASY_CONFIDENCE = 0.5  # on average the given label had at least half of the probability
SILHOUETTE_SAMPLE = 2_000  # rows of the silhouette: it is O(N^2) in time, 2,000 take ~0.1 s


class DataMap(NamedTuple):
    """Per-image columns of a data map; each (N,)."""

    confidence: np.ndarray  # float32 in [0, 1]: mean probability of the given label
    variability: np.ndarray  # float32 in [0, 0.5]: its standard deviation across checkpoints
    correctness: np.ndarray  # float32 in [0, 1]: share of checkpoints predicting the label
    region: np.ndarray  # str: "easy", "ambiguous" or "hard"


class Forgetting(NamedTuple):
    """Per-image forgetting columns; each (N,)."""

    forgetting_events: np.ndarray  # int64 >= 0: correct -> wrong between consecutive checkpoints
    learned_step: np.ndarray  # float32: step from which it stays correct; NaN if wrong at the end
    never_learned: np.ndarray  # bool: wrong at every checkpoint


def data_map(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    steps: np.ndarray | None = None,
    skip_first: bool = True,
) -> DataMap:
    """Dataset Cartography's training dynamics of every image.

    Swayamdipta et al., 2020, "Dataset Cartography: Mapping and Diagnosing Datasets with
    Training Dynamics", EMNLP. The paper measures over training epochs, evenly spaced in
    training time; here over checkpoints, each weighted by the training steps it stands for.

    Parameters
    ----------
    probabilities : float (C, N, K), rows in [0, 1] summing to 1: class probabilities of N
        images at C checkpoints, in training order.
    labels : int (N,) in [0, K): the given labels.
    steps : int (C,), increasing, or None: the training step of each checkpoint. Each checkpoint
        then weighs the steps since the one before (the first as much as the second),
        so that checkpoints spaced geometrically, dense early, do not let the first few steps
        of training outweigh the rest; None: every checkpoint weighs the same (right for evenly
        spaced checkpoints, where both agree).
    skip_first : leave out checkpoint 0 (the untouched model) when C >= 3, so that at least two
        trained checkpoints remain; with C <= 2 every checkpoint is used.

    Returns
    -------
    DataMap of (N,) columns: `confidence` = (weighted) mean over checkpoints of the given
    label's probability; `variability` = its (weighted) population standard deviation (ddof=0,
    as in the paper); `correctness` = (weighted) share of checkpoints whose argmax (first class
    on a tie) is the label; `region`:

    - "ambiguous": variability in the top third of the images (at or above the 2/3 quantile) and
      at least 0.1; the paper's ambiguous region is the top 33% by variability.
    - else "easy" (easy-to-learn) where confidence >= 0.5;
    - else "hard" (hard-to-learn): low confidence, low variability.
    """
    probabilities = _probabilities(probabilities)
    labels = _labels(labels, probabilities.shape[1], probabilities.shape[2])
    given = np.take_along_axis(probabilities, labels[None, :, None], axis=2)[..., 0]  # (C, N)
    correct = probabilities.argmax(axis=2) == labels
    return data_map_of(given, correct, steps=steps, skip_first=skip_first)


def data_map_of(
    label_probability: np.ndarray,
    correct: np.ndarray,
    *,
    steps: np.ndarray | None = None,
    skip_first: bool = True,
) -> DataMap:
    """`data_map` from what a build keeps of each checkpoint instead of every probability.

    Parameters
    ----------
    label_probability : float (C, N) in [0, 1]: the probability of each image's given label at
        each checkpoint, in training order.
    correct : bool (C, N): whether the checkpoint's prediction (argmax) is the given label.
    steps, skip_first : as for `data_map`.

    Returns
    -------
    DataMap, as `data_map` returns it for the probabilities these were taken from.
    """
    given = np.asarray(label_probability, dtype=np.float64)
    correct = np.asarray(correct)
    if given.ndim != 2 or 0 in given.shape or correct.shape != given.shape:
        raise ExplorerError(
            f"label_probability and correct must both be (checkpoints, images), got "
            f"{given.shape} and {correct.shape}"
        )
    weights = _step_weights(steps, len(given))
    given, correct = _trained(given, skip_first), _trained(correct, skip_first)
    weights = _trained(weights, skip_first)
    weights = weights / weights.sum()
    confidence = weights @ given
    variability = np.sqrt(np.maximum(weights @ (given - confidence) ** 2, 0))
    correctness = weights @ correct
    region = np.where(confidence >= EASY_CONFIDENCE, "easy", "hard").astype("<U9")
    if len(variability):
        cut = max(np.quantile(variability, AMBIGUOUS_QUANTILE), AMBIGUOUS_MIN_VARIABILITY)
        region[variability >= cut] = "ambiguous"
    return DataMap(
        confidence.astype(np.float32),
        variability.astype(np.float32),
        correctness.astype(np.float32),
        region,
    )


def forgetting(correct: np.ndarray, steps: np.ndarray, *, skip_first: bool = True) -> Forgetting:
    """Forgetting events and the step each image was learned for good.

    Toneva et al., 2019, "An Empirical Study of Example Forgetting during Deep Neural Network
    Learning", ICLR. The paper counts events between consecutive presentations of an example;
    here between consecutive checkpoints, so events between two checkpoints are not seen.

    Parameters
    ----------
    correct : bool (C, N): whether checkpoint c predicts image n's label, in training order.
    steps : int (C,), increasing: the training step of each checkpoint.
    skip_first : leave out checkpoint 0 (the untouched model, right only by chance) when C >= 3.

    Returns
    -------
    Forgetting of (N,) columns: `forgetting_events` int64 = correct -> wrong transitions;
    `learned_step` float32 = the earliest step from which the image is correct at every later
    checkpoint, NaN (null) when it is wrong at the last one; `never_learned` bool = wrong at every
    checkpoint. The paper ranks never-learned images as forgotten infinitely often; "unforgettable"
    images are those with 0 events that are not never-learned.
    """
    correct = np.asarray(correct)
    steps = np.asarray(steps)
    if correct.ndim != 2 or correct.dtype != bool or len(correct) == 0:
        raise ExplorerError(f"correct must be bool (C, N), got {correct.dtype} {correct.shape}")
    if steps.shape != correct.shape[:1] or np.any(np.diff(steps) <= 0):
        raise ExplorerError(f"steps must be {len(correct)} increasing numbers, one per checkpoint")
    correct = _trained(correct, skip_first)
    steps = _trained(steps, skip_first)
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.int64)
    # stays[c, n]: image n is correct at checkpoint c and at every later one
    stays = np.logical_and.accumulate(correct[::-1], axis=0)[::-1]
    learned = np.where(stays[-1], steps[stays.argmax(axis=0)], np.nan).astype(np.float32)
    return Forgetting(events, learned, ~correct.any(axis=0))


def movement(knn_before: np.ndarray, knn_after: np.ndarray, *, k: int = DEFAULT_K) -> np.ndarray:
    """How much each image's neighbourhood changed: 1 - Jaccard overlap of its k nearest.

    Parameters
    ----------
    knn_before, knn_after : int (N, >= k): neighbour indices of the same N images in two graphs
        (e.g. first and last checkpoint), nearest first, no repeats within a row.
    k : neighbours compared per image.

    Returns
    -------
    float32 (N,) in [0, 1]: 0 = the same k neighbours, 1 = none in common.
    """
    before = _knn(knn_before, k, "knn_before")
    after = _knn(knn_after, k, "knn_after")
    if before.shape != after.shape:
        raise ExplorerError(f"the k-NN graphs differ: {len(before)} vs {len(after)} rows")
    shared = (before[:, :, None] == after[:, None, :]).sum(axis=(1, 2))  # (N, k, k): small k
    return (1 - shared / (2 * k - shared)).astype(np.float32)


def knn_vote(knn_indices: np.ndarray, labels: np.ndarray, *, k: int = DEFAULT_K) -> np.ndarray:
    """Leave-one-out k-NN prediction: the most common label among each image's k nearest.

    Parameters
    ----------
    knn_indices : int (N, >= k): neighbour indices, nearest first; never the row itself.
    labels : int (N,) >= 0: the given labels.
    k : neighbours voting.

    Returns
    -------
    int64 (N,): the voted class. A tie goes to the tied class whose member is nearest, so the
    vote is deterministic and k=1 is the nearest neighbour's label.
    """
    labels = _labels(labels, len(np.asarray(knn_indices)))
    knn = _knn(knn_indices, k, "knn_indices")
    if np.any(knn == np.arange(len(knn))[:, None]):
        raise ExplorerError("knn_indices lists a row as its own neighbour: build it without self")
    votes = labels[knn]  # (N, k), nearest first
    count = (votes[:, :, None] == votes[:, None, :]).sum(axis=2)  # votes for each neighbour's class
    first_top = (count == count.max(axis=1, keepdims=True)).argmax(axis=1)  # nearest of the tied
    return votes[np.arange(len(votes)), first_top].astype(np.int64)


def knn_accuracy(knn_indices: np.ndarray, labels: np.ndarray, *, k: int = DEFAULT_K) -> float:
    """Share of images whose k nearest neighbours vote for their own label (see `knn_vote`).

    Returns a float in [0, 1]: how well the embedding alone separates the classes.
    """
    return float(np.mean(knn_vote(knn_indices, labels, k=k) == np.asarray(labels)))


def class_separation(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    sample_size: int = SILHOUETTE_SAMPLE,
    seed: int = 0,
) -> float:
    """Cosine silhouette score of the classes (sklearn.metrics.silhouette_score).

    Rousseeuw, 1987, "Silhouettes: a graphical aid to the interpretation and validation of
    cluster analysis". The score is O(N^2), so above `sample_size` rows it is measured on a
    seeded random subset of `sample_size` rows (without replacement).

    Parameters
    ----------
    embeddings : float (N, D).
    labels : int (N,) >= 0: the given labels.
    sample_size, seed : rows measured at most, and the seed choosing them.

    Returns
    -------
    float in [-1, 1]: high = each image is closer to its class than to the nearest other one;
    NaN when the (sampled) rows hold fewer than 2 classes or no class has two members.
    """
    from sklearn.metrics import silhouette_score

    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ExplorerError(f"embeddings must be (N, D), got shape {embeddings.shape}")
    labels = _labels(labels, len(embeddings))
    if len(embeddings) > sample_size:
        rows = np.sort(np.random.default_rng(seed).choice(len(labels), sample_size, replace=False))
        embeddings, labels = embeddings[rows], labels[rows]
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:  # sklearn's own requirement
        return float("nan")
    return float(silhouette_score(embeddings, labels, metric="cosine"))


def margins(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The logit margin of each given label at one checkpoint: log p(label) - log p(best other).

    Pleiss et al., 2020, "Identifying Mislabeled Data using the Area Under the Margin Ranking",
    NeurIPS: the margin of the assigned logit over the largest other logit, which for a softmax
    head is this difference of log-probabilities.

    Parameters
    ----------
    probabilities : float (N, K), rows summing to 1.
    labels : int (N,) in [0, K).

    Returns
    -------
    float32 (N,): > 0 where the head predicts the label, < 0 where another class wins (-2.5: the
    label is e^2.5 = 12 times less likely than the strongest other class). Probabilities are
    clipped at 1e-12, so a margin is finite (within about +-28).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ExplorerError(f"probabilities must be (N, K >= 2), got {probabilities.shape}")
    labels = _labels(labels, len(probabilities), probabilities.shape[1])
    logs = np.log(np.clip(probabilities, 1e-12, 1))
    rows = np.arange(len(labels))
    given = logs[rows, labels]
    logs[rows, labels] = -np.inf
    return (given - logs.max(axis=1)).astype(np.float32)


AUM_THRESHOLD = 2.5  # is_label_issue below an area under the margin of -2.5 at least
RUN_LABEL_ISSUES = "run: area under the margin"  # run.json's method starts so (label_issues)
_FEWEST_FOR_A_DENSITY = 50  # below this many images the low mode is not looked for


def label_issues(
    margin: np.ndarray,
    *,
    steps: np.ndarray | None = None,
    skip_first: bool = True,
    threshold: float = AUM_THRESHOLD,
) -> LabelIssues:
    """Which given labels look wrong, from every checkpoint of a run: the area under the margin.

    Pleiss et al., 2020, "Identifying Mislabeled Data using the Area Under the Margin Ranking",
    NeurIPS: a mislabelled image's given class keeps losing to its true class while the model
    learns that class from the other images, so its margin (`margins`) stays negative over
    training; a hard but rightly labelled image wins some of the time. Averaged over the run
    (checkpoints weighted by the steps they stand for, as in `data_map`), the margin separates
    the two better than the last checkpoint's probabilities alone, on which cleanlab's
    `find_label_issues` counts every confident mistake of a weak model as a label issue.

    Where to cut: mislabelled images form a mode of their own at negative areas (the paper's
    Figure 1). An image is flagged below -`threshold`, or below the upper edge of that low mode
    (`low_mode_edge`) where the run has one that reaches higher: how negative the mislabelled
    images' areas are depends on the run (a model that learns its classes well and fast, as on
    digits, leaves them nearer 0 than one still confusing shirts with T-shirts). The mode's
    peak must lie below -`threshold` itself: a bump nearer 0 is what a model's own mistakes
    on rightly labelled images make (on digits it never trained on, 95 % right, at -1).

    Parameters
    ----------
    margin : float (C, N): each image's margin at each checkpoint, in training order.
    steps, skip_first : as for `data_map`.
    threshold : flag at least where the area under the margin is below -threshold: the given
        label, on (geometric) average over training, at least e^threshold times less likely
        than the strongest other class. 2.5 (12 times) was chosen on Fashion-MNIST with 5 % of
        labels flipped uniformly (benchmarks/label_errors.py).

    Returns
    -------
    `predictions.LabelIssues`: flags bool (N,); method RUN_LABEL_ISSUES and the cut used.
    """
    margin = np.asarray(margin, dtype=np.float64)
    if margin.ndim != 2 or 0 in margin.shape:
        raise ExplorerError(f"margin must be (checkpoints, images), got {margin.shape}")
    weights = _trained(_step_weights(steps, len(margin)), skip_first)
    area = weights @ _trained(margin, skip_first) / weights.sum()
    edge = low_mode_edge(area, peak_below=-threshold)
    if edge is None or edge <= -threshold:
        return LabelIssues(area < -threshold, f"{RUN_LABEL_ISSUES} below -{threshold:g}")
    return LabelIssues(
        area < edge, f"{RUN_LABEL_ISSUES} below {edge:.2f}, the upper edge of its low mode"
    )


def low_mode_edge(area: np.ndarray, *, peak_below: float = 0.0, grid: int = 512) -> float | None:
    """Where a mode of negative values ends: the density minimum closest below 0 with a mode
    below it (a Gaussian kernel density, Scott's bandwidth, on `grid` points from the smallest
    value to 0). A mode counts where its peak is at least 1.5 times the minimum's density and
    at least 0.5 % of the values (and 10) lie below the minimum: the bumps a kernel density
    makes of a few stray values in a tail are not modes. It counts, too, only where its peak
    lies below `peak_below`. None where there is no such mode, or fewer than
    _FEWEST_FOR_A_DENSITY values, or they are all equal.

    area: float (N,). Returns a float < 0 or None.
    """
    from scipy.signal import argrelextrema
    from scipy.stats import gaussian_kde

    area = np.asarray(area, dtype=np.float64)
    if len(area) < _FEWEST_FOR_A_DENSITY or area.min() >= 0 or np.ptp(area) == 0:
        return None
    points = np.linspace(area.min(), 0, grid)
    density = gaussian_kde(area)(points)
    lows, highs = argrelextrema(density, np.less)[0], argrelextrema(density, np.greater)[0]
    fewest = max(10, 0.005 * len(area))
    edges = []
    for low in lows:
        below = highs[highs < low]
        if len(below) == 0:
            continue
        peak = below[np.argmax(density[below])]
        if (
            density[peak] >= 1.5 * density[low]
            and points[peak] < peak_below
            and (area < points[low]).sum() >= fewest
        ):
            edges.append(low)
    return float(points[edges[-1]]) if edges else None


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of images predicted as their label.

    predictions: int (N,) classes, or float (N, K) probabilities (argmax taken, first on a tie).
    labels: int (N,) >= 0. Returns a float in [0, 1].
    """
    predicted = _predicted(predictions)
    return float(np.mean(predicted == _labels(labels, len(predicted))))


def per_class_accuracy(
    predictions: np.ndarray, labels: np.ndarray, *, num_classes: int | None = None
) -> np.ndarray:
    """Accuracy within each class: the share of its images predicted as it (its recall).

    predictions: int (N,) classes, or float (N, K) probabilities (argmax taken). labels: int (N,)
    in [0, num_classes). num_classes: K; by default K of the probabilities, else max label + 1.
    Returns float32 (K,) in [0, 1]; NaN for a class with no image in labels.
    """
    predicted = _predicted(predictions)
    if num_classes is None:
        num_classes = np.shape(predictions)[1] if np.ndim(predictions) == 2 else None
    labels = _labels(labels, len(predicted), num_classes)
    num_classes = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
    total = np.bincount(labels, minlength=num_classes)
    right = np.bincount(labels[predicted == labels], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 -> NaN: class absent
        return (right / total).astype(np.float32)


def _step_weights(steps: np.ndarray | None, count: int) -> np.ndarray:
    """Each checkpoint's weight: the steps since the previous one (the first: as the second's);
    all 1 without steps, or when the steps give no positive gap."""
    if steps is None:
        return np.ones(count)
    steps = np.asarray(steps, dtype=np.float64)
    if steps.shape != (count,) or np.any(np.diff(steps) <= 0):
        raise ExplorerError(f"steps must be {count} increasing numbers, one per checkpoint")
    if count < 2:
        return np.ones(count)
    gaps = np.diff(steps)
    return np.concatenate([gaps[:1], gaps])


def _trained(per_checkpoint: np.ndarray, skip_first: bool) -> np.ndarray:
    """Drop checkpoint 0 (the untouched model) when asked and two trained checkpoints remain."""
    return per_checkpoint[1:] if skip_first and len(per_checkpoint) >= 3 else per_checkpoint


def _probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 3 or 0 in probabilities.shape:
        shape = probabilities.shape
        raise ExplorerError(f"probabilities must be (checkpoints, images, classes), got {shape}")
    return probabilities


def _labels(labels: np.ndarray, n: int, num_classes: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ExplorerError(f"labels must be one per image, shape ({n},), got {labels.shape}")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
        raise ExplorerError(f"labels must be integers, got {labels.dtype}")
    high = num_classes if num_classes is not None else np.inf
    if len(labels) and (labels.min() < 0 or labels.max() >= high):
        raise ExplorerError(f"labels must be in [0, {high}), got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _knn(knn_indices: np.ndarray, k: int, name: str) -> np.ndarray:
    knn = np.asarray(knn_indices)
    if knn.ndim != 2 or not np.issubdtype(knn.dtype, np.integer):
        raise ExplorerError(f"{name} must be an int (N, k) array, got {knn.dtype} {knn.shape}")
    if not 1 <= k <= knn.shape[1]:
        raise ExplorerError(f"k must be in [1, {knn.shape[1]}] (columns of {name}), got {k}")
    knn = knn[:, :k]
    if knn.size and (knn.min() < 0 or knn.max() >= len(knn)):
        raise ExplorerError(f"{name} holds indices outside [0, {len(knn)})")
    ordered = np.sort(knn, axis=1)
    if np.any(ordered[:, 1:] == ordered[:, :-1]):
        raise ExplorerError(f"{name} repeats a neighbour within a row")
    return knn


def _predicted(predictions: np.ndarray) -> np.ndarray:
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        return predictions.argmax(axis=1)
    if predictions.ndim != 1 or not np.issubdtype(predictions.dtype, np.integer):
        kind = f"{predictions.dtype} {predictions.shape}"
        raise ExplorerError(f"predictions must be int (N,) or probabilities (N, K), got {kind}")
    return predictions
