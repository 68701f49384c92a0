"""Training dynamics in `explorer build`: OUT/checkpoints, the timeline's movement and label
quality, and the per-image columns of OUT/default, each against brute force or
`explorer.dynamics` on the run's own predictions (read back from the checkpoints' caches, and
those checked against the models run directly with transformers). Also `explorer plot`, and the
k-NN accuracy and class separation of a real (tiny) fine-tuning run rising.
"""

from __future__ import annotations

import json
import warnings

import datasets
import numpy as np
import pytest
import torch
from cleanlab.filter import find_label_issues
from conftest import tiny_model
from sklearn.metrics import silhouette_score
from test_timeline import make_run
from transformers import AutoImageProcessor, AutoModelForImageClassification

import explorer
from explorer import build, cache, columns, dynamics, output, predictions
from explorer.cli import main
from explorer.plot import TITLES, curves_figure, plot
from explorer.runs import list_checkpoints

N_IMAGES = 50
STEPS = (0, 5, 10)
K = 10
RUN_ONLY = set(columns.DYNAMICS) - {"movement"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A three-checkpoint run with a head, built on 50 digits: (OUT, per-checkpoint arrays)."""
    root = tmp_path_factory.mktemp("dynamics")
    run = make_run(root / "run")
    build("digits", run=run, out=root / "out", limit=N_IMAGES, progress=False)
    return output.read(root / "out"), checkpoint_arrays(run, root / "out")


def checkpoint_arrays(run, out) -> dict[str, np.ndarray]:
    """What the build embedded at each checkpoint, read from the caches: vectors (C, N, D),
    probabilities (C, N, 10). A checkpoint folder may hold other caches (the near-duplicate
    calibration's edited copies): the one whose nearest neighbours are the timeline's is ours."""
    timeline = output.read(out).table("timeline").to_pandas()
    vectors, probabilities = [], []
    for checkpoint in list_checkpoints(run):
        nn_id = timeline[timeline.step == checkpoint.step].nn_id.to_numpy()
        for path in sorted((checkpoint.path / "explorer-cache").glob("*.safetensors")):
            embedded = cache.read(path)
            if len(embedded.vectors) == len(nn_id) and (
                np.mean(brute_knn(embedded.vectors, 1)[:, 0] == nn_id) > 0.95
            ):
                break
        else:
            raise AssertionError(f"no cache of {checkpoint.name} matches the timeline")
        vectors.append(embedded.vectors)
        probabilities.append(embedded.probabilities)
    return {"vectors": np.stack(vectors), "probabilities": np.stack(probabilities)}


def brute_knn(vectors: np.ndarray, k: int) -> np.ndarray:
    """The k nearest other rows by cosine distance, from the full distance matrix."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distance = 1 - unit.astype(np.float64) @ unit.T.astype(np.float64)
    np.fill_diagonal(distance, np.inf)
    return np.argsort(distance, axis=1, kind="stable")[:, :k]


def brute_movement(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    a, b = brute_knn(before, K), brute_knn(after, K)
    shared = np.array([len(set(x) & set(y)) for x, y in zip(a, b, strict=True)])
    return 1 - shared / (2 * K - shared)


def labels_of(out: output.Output) -> np.ndarray:
    return np.asarray(out.default["label"])


def test_cached_probabilities_are_the_models_own(built):
    """The arrays the checks below start from are what each checkpoint's model predicts."""
    out, arrays = built
    images = [image.convert("RGB") for image in out.default["image"]]
    for checkpoint, probabilities in zip(
        list_checkpoints(out.run["run"]), arrays["probabilities"], strict=True
    ):
        processor = AutoImageProcessor.from_pretrained(checkpoint.path)
        model = AutoModelForImageClassification.from_pretrained(checkpoint.path).eval()
        with torch.no_grad():
            logits = model(**processor(images=images, return_tensors="pt")).logits
        np.testing.assert_allclose(probabilities, logits.softmax(-1).numpy(), atol=1e-4)


def test_checkpoints_table_matches_brute_force(built):
    out, arrays = built
    table = out.table("checkpoints")
    assert table.column_names == list(columns.CHECKPOINTS)
    rows = table.to_pandas()
    labels = labels_of(out)
    timeline = out.table("timeline").to_pandas()
    assert rows.step.tolist() == list(STEPS)
    # make_run logs loss 2 - s/10 at steps 1..10: nothing at or before step 0
    np.testing.assert_allclose(rows.loss, [np.nan, 1.5, 1.0], rtol=1e-6)
    for c, (vectors, probabilities) in enumerate(
        zip(arrays["vectors"], arrays["probabilities"], strict=True)
    ):
        row, frame = rows.iloc[c], timeline[timeline.step == STEPS[c]]
        predicted = probabilities.argmax(1)
        assert row.accuracy == pytest.approx(np.mean(predicted == labels))
        per_class = [np.mean(predicted[labels == k] == k) for k in range(10)]
        np.testing.assert_allclose(row.per_class_accuracy, per_class, rtol=1e-6)
        votes = labels[brute_knn(vectors, K)]
        voted = [
            max(set(v), key=lambda y, v=v: (list(v).count(y), -list(v).index(y))) for v in votes
        ]
        assert row.knn_accuracy == pytest.approx(np.mean(np.array(voted) == labels))
        expected = silhouette_score(vectors, labels, metric="cosine")
        assert row.class_separation == pytest.approx(expected, abs=1e-5)
        assert row.mean_outlier_score == pytest.approx(frame.outlier_score.mean(), rel=1e-5)
        assert row.outliers == frame.is_outlier.sum()
        assert row.label_issues == find_label_issues(labels, probabilities).sum()
        if c == 0:
            assert np.isnan(row.movement)
        else:
            moved = brute_movement(arrays["vectors"][c - 1], vectors).mean()
            assert row.movement == pytest.approx(moved, abs=1e-6)


def test_timeline_movement_and_label_quality_match_brute_force(built):
    out, arrays = built
    labels = labels_of(out)
    timeline = out.table("timeline").to_pandas()
    for c, step in enumerate(STEPS):
        frame = timeline[timeline.step == step]
        given = arrays["probabilities"][c][np.arange(N_IMAGES), labels]
        np.testing.assert_allclose(frame.label_quality, given, atol=1e-6)
        if c == 0:
            assert frame.movement.isna().all()
        else:
            moved = brute_movement(arrays["vectors"][c - 1], arrays["vectors"][c])
            np.testing.assert_allclose(frame.movement, moved, atol=1e-6)


def test_default_columns_are_the_dynamics_of_the_runs_predictions(built):
    out, arrays = built
    default, labels = out.default, labels_of(out)
    probabilities, steps = arrays["probabilities"], np.array(STEPS)
    mapped = dynamics.data_map(probabilities, labels, steps=steps)
    np.testing.assert_allclose(default["confidence"], mapped.confidence, atol=1e-6)
    np.testing.assert_allclose(default["variability"], mapped.variability, atol=1e-6)
    np.testing.assert_allclose(default["correctness"], mapped.correctness, atol=1e-6)
    assert default["region"] == mapped.region.tolist()
    forgotten = dynamics.forgetting(probabilities.argmax(2) == labels, steps)
    assert default["forgetting_events"] == forgotten.forgetting_events.tolist()
    np.testing.assert_array_equal(default["learned_step"], forgotten.learned_step)
    moved = brute_movement(arrays["vectors"][0], arrays["vectors"][-1])
    np.testing.assert_allclose(default["movement"], moved, atol=1e-6)
    margin = [dynamics.margins(p, labels) for p in probabilities]
    issues = dynamics.label_issues(np.stack(margin), steps=steps)
    assert default["is_label_issue"] == issues.flags.tolist()
    assert out.run["label_issues"] == {"method": issues.method}
    assert set(columns.DYNAMICS) <= set(default.column_names)


def test_two_model_build_has_movement_and_cleanlabs_flag(tiny_models, tmp_path):
    table = build(
        "digits", foundation=tiny_models["foundation"], finetuned=tiny_models["finetuned"],
        out=tmp_path / "out", limit=40, progress=False,
    )  # fmt: skip
    assert not RUN_ONLY & set(table.column_names)
    found = np.array(table["embedding_foundation"])
    ft = np.array(table["embedding_ft"])
    np.testing.assert_allclose(table["movement"], brute_movement(found, ft), atol=1e-6)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["label_issues"] == {"method": predictions.CLEANLAB}
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_run_without_a_head_keeps_movement_and_the_label_free_scores(tmp_path):
    for i, step in enumerate(STEPS):
        tiny_model("vit", tmp_path / "run" / f"checkpoint-{step}", seed=i)  # no head
    build("digits", run=tmp_path / "run", out=tmp_path / "out", limit=30, progress=False)
    out = output.read(tmp_path / "out")
    assert "movement" in out.default.column_names
    assert not RUN_ONLY & set(out.default.column_names)
    assert "label_quality" not in out.table("timeline").column_names
    assert out.table("checkpoints").column_names == [
        "step", "epoch", "loss", "knn_accuracy", "class_separation", "mean_outlier_score",
        "outliers", "movement",
    ]  # fmt: skip
    assert np.isnan(out.table("checkpoints")["loss"]).all()  # no log.csv
    assert out.run["label_issues"] == {"method": None}


def test_label_scores_warn_when_cleanlab_cannot_run(monkeypatch):
    import cleanlab.filter

    labels = np.array([0, 1] * 3)
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2]] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cleanlab runs: no warning, its own flag
        _, issues = predictions.label_scores(labels, probabilities)
    np.testing.assert_array_equal(issues, find_label_issues(labels, probabilities))
    assert predictions.label_issues(labels, probabilities).method == predictions.CLEANLAB

    def refuse(*args, **kwargs):
        raise ValueError("Labels must contain at least 2 classes.")

    monkeypatch.setattr(cleanlab.filter, "find_label_issues", refuse)
    with pytest.warns(UserWarning, match="cannot run here .Labels must contain at least 2 cl"):
        _, issues = predictions.label_scores(labels, probabilities)
    np.testing.assert_array_equal(issues, [False, True] * 3)  # the misclassified
    found = predictions.label_issues(labels, probabilities)
    assert found.method == predictions.MISCLASSIFIED and "2 classes" in found.reason


def test_data_map_weighs_each_checkpoint_by_the_steps_it_stands_for():
    # p(label) at steps 0, 1, 2, 10: checkpoint 0 left out; weights 1, 1, 8 (steps since the
    # checkpoint before)
    p = np.array([[0.1], [0.2], [0.4], [0.9]])
    probabilities = np.stack([p, 1 - p], axis=2)  # (4, 1, 2), label 0
    mapped = dynamics.data_map(probabilities, np.array([0]), steps=np.array([0, 1, 2, 10]))
    mean = (0.2 + 0.4 + 8 * 0.9) / 10
    assert mapped.confidence[0] == pytest.approx(mean)
    spread = (0.2 - mean) ** 2 + (0.4 - mean) ** 2 + 8 * (0.9 - mean) ** 2
    assert mapped.variability[0] == pytest.approx(np.sqrt(spread / 10))
    assert mapped.correctness[0] == pytest.approx(0.8)  # right (p > 0.5) for 8 of 10 steps
    unweighted = dynamics.data_map(probabilities, np.array([0]))
    assert unweighted.confidence[0] == pytest.approx(0.5)
    even = dynamics.data_map(probabilities, np.array([0]), steps=np.array([0, 5, 10, 15]))
    assert even.confidence[0] == pytest.approx(0.5)  # evenly spaced: the plain mean


def test_margins_and_the_area_under_the_margin_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    labels = np.array([0, 0, 2])
    # log p(label) - log p(strongest other): log(0.7/0.2), log(0.2/0.5), log(0.8/0.1)
    expected = np.log([0.7 / 0.2, 0.2 / 0.5, 0.8 / 0.1])
    np.testing.assert_allclose(dynamics.margins(probabilities, labels), expected, rtol=1e-6)
    # Four checkpoints at steps 0, 1, 2, 10 (weights 1, 1, 8 once checkpoint 0 is left out):
    # image 0 loses throughout (area -3), image 1 loses by 4 early and wins by 0.5 for most of
    # training (area (-4 - 4 + 8 * 0.5) / 10 = -0.4), image 2 stays at -2.5 (not below it).
    margin = np.array([[0.0, 0.0, 0.0], [-3.0, -4.0, -2.5], [-3.0, -4.0, -2.5], [-3.0, 0.5, -2.5]])
    issues = dynamics.label_issues(margin, steps=np.array([0, 1, 2, 10]))
    assert issues.flags.tolist() == [True, False, False]
    assert issues.method == f"{dynamics.RUN_LABEL_ISSUES} below -2.5"
    unweighted = dynamics.label_issues(margin)  # image 1: (-4 - 4 + 0.5) / 3 = -2.5, not below
    assert unweighted.flags.tolist() == [True, False, False]
    steps = np.array([0, 1, 2, 10])
    assert dynamics.label_issues(margin, steps=steps, threshold=2).flags.tolist() == [1, 0, 1]


def test_the_cut_follows_a_low_mode_that_ends_above_the_threshold():
    """Mislabelled images form a mode of their own; where it reaches above -2.5 (a model that
    learnt fast leaves them nearer 0), the cut is its upper edge, between the two modes."""
    rng = np.random.default_rng(0)
    clean, wrong = rng.normal(2.0, 1.0, 950), rng.normal(-3.0, 0.4, 50)  # digits' shape
    area = np.concatenate([clean, wrong])
    edge = dynamics.low_mode_edge(area)
    assert -2.3 < edge < -1.2  # the density's minimum between the modes, by construction
    margin = np.vstack([np.zeros_like(area), area, area])  # checkpoint 0, then two at `area`
    issues = dynamics.label_issues(margin)
    assert issues.flags.tolist() == (area < edge).tolist()
    assert issues.flags[950:].all() and issues.flags[:950].sum() <= 10  # 1 % of the clean
    assert (
        issues.method
        == f"{dynamics.RUN_LABEL_ISSUES} below {edge:.2f}, the upper edge of its low mode"
    )
    # a low mode below -2.5 leaves the fixed cut; no low mode, or too few images: no edge
    far = np.concatenate([clean, rng.normal(-5.0, 0.3, 50)])
    assert dynamics.low_mode_edge(far) < -2.5
    assert dynamics.label_issues(np.vstack([far * 0, far])).flags.sum() == (far < -2.5).sum()
    assert dynamics.low_mode_edge(clean) is None
    assert dynamics.low_mode_edge(area[::25]) is None
    assert dynamics.low_mode_edge(np.full(100, -1.0)) is None


def test_a_bump_of_hard_images_near_0_is_not_a_mode_of_wrong_labels():
    """A model 95 % right on images it never trained on, all labels right (digits test, 450
    images): its mistakes make a bump near -1.3 (the label 4 times less likely than another
    class), not at -2.5 or below as wrong labels do. The bump has an edge, but the flag keeps
    its fixed cut."""
    rng = np.random.default_rng(1)
    area = np.concatenate([rng.normal(2.0, 0.8, 430), rng.normal(-1.3, 0.45, 20)])
    assert dynamics.low_mode_edge(area) is not None  # a mode by density alone
    assert dynamics.low_mode_edge(area, peak_below=-2.5) is None  # not a confident one
    issues = dynamics.label_issues(np.vstack([area * 0, area]))
    assert issues.method == f"{dynamics.RUN_LABEL_ISSUES} below -2.5"
    assert issues.flags.sum() == (area < -2.5).sum() <= 1


def test_plot_command_draws_the_builds_curves(built, tmp_path, capsys):
    out, _ = built
    path = tmp_path / "curves.png"
    assert main(["plot", str(out.path), "--out", str(path)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [ax.get_title(loc="left") for ax in curves_figure(out).axes]
    assert titles == list(TITLES.values())
    assert explorer.__getattr__("plot") is plot
    assert main(["plot", str(tmp_path / "nope"), "--out", str(path)]) == 2


def test_knn_accuracy_and_separation_rise_during_real_training(tmp_path):
    """A tiny ViT learning digits: the embeddings alone separate the classes better at the end."""
    from explorer.finetune import finetune

    run = finetune(
        "digits", model="tiny-vit", out=tmp_path / "run", max_steps=150, save_steps=50,
        progress=False,
    )  # fmt: skip
    build("digits", run=run, out=tmp_path / "out", limit=200, timeline_umap="off", progress=False)
    table = output.read(tmp_path / "out").table("checkpoints")
    knn, separation = table["knn_accuracy"], table["class_separation"]
    assert knn[-1] > knn[0] + 0.2, knn
    assert separation[-1] > separation[0] + 0.05, separation
    assert table["accuracy"][-1] > 0.5
    assert datasets.load_from_disk(str(tmp_path / "out" / "default")).num_rows == 200
