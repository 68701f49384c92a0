"""`explorer build --run`: every checkpoint embedded once, cached, aligned frame to frame."""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest
from conftest import tiny_model

from explorer import build, projection
from explorer.errors import ExplorerError
from explorer.runs import LOG_COLUMNS, list_checkpoints

STEPS = (0, 5, 10)
N_IMAGES = 50


def make_run(folder, steps=STEPS, hidden_size=None):
    """A run folder as `explorer finetune` writes it, from tiny ViTs with a 10-class head."""
    for i, step in enumerate(steps):
        tiny_model("vit", folder / f"checkpoint-{step}", num_labels=10, seed=i)
    if hidden_size:  # a last checkpoint of another architecture
        import transformers as tf

        config = tf.ViTConfig(
            hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, image_size=32, patch_size=8, num_labels=10,
        )  # fmt: skip
        target = folder / f"checkpoint-{steps[-1] + 5}"
        tf.ViTForImageClassification(config).save_pretrained(target)
        shutil.copy(folder / "checkpoint-0" / "preprocessor_config.json", target)
    rows = [",".join(LOG_COLUMNS)] + [f"{s},{s / 10},{2 - s / 10},0.001,," for s in range(1, 11)]
    (folder / "log.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def timeline_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    run = make_run(root / "run")
    build("digits", run=run, out=root / "out", limit=N_IMAGES, progress=False)
    return run, root / "out"


def cache_files(run):
    cached = sorted(run.glob("*/explorer-cache/*.safetensors"))  # not weights.json
    return {path: path.stat().st_mtime_ns for path in cached}


def test_tables_have_one_row_per_image_per_checkpoint(timeline_build):
    _, out = timeline_build
    timeline = datasets.load_from_disk(str(out / "timeline"))
    assert timeline.num_rows == len(STEPS) * N_IMAGES
    assert sorted(set(timeline["step"])) == list(STEPS)
    assert {"row", "pca_x", "umap_y", "outlier_score", "nn_id", "pred_label"} <= set(
        timeline.column_names
    )
    log = datasets.load_from_disk(str(out / "training_log"))
    assert log.num_rows == 10 and log["loss"][0] == pytest.approx(1.9)
    record = json.loads((out / "run.json").read_text())
    assert [c["step"] for c in record["checkpoints"]] == list(STEPS)


def test_default_takes_first_and_last_checkpoint(timeline_build):
    _, out = timeline_build
    default = datasets.load_from_disk(str(out / "default"))
    timeline = datasets.load_from_disk(str(out / "timeline")).to_pandas()
    first = timeline[timeline.step == STEPS[0]]
    last = timeline[timeline.step == STEPS[-1]]
    np.testing.assert_allclose(default["outlier_score_found"], first.outlier_score, atol=1e-6)
    np.testing.assert_allclose(default["outlier_score_ft"], last.outlier_score, atol=1e-6)
    np.testing.assert_array_equal(default["nn_id"], last.nn_id)
    np.testing.assert_allclose(default["pca_ft_x"], last.pca_x, atol=1e-6)


def test_each_frame_is_aligned_onto_the_previous(timeline_build):
    run, out = timeline_build
    timeline = datasets.load_from_disk(str(out / "timeline")).to_pandas()
    default = datasets.load_from_disk(str(out / "default"))
    frames = [timeline[timeline.step == s][["pca_x", "pca_y"]].to_numpy() for s in STEPS]
    # the last frame is the last checkpoint's own PCA, moved onto the frame before it
    own = projection.pca_2d(np.array(default["embedding_ft"], dtype=np.float32))
    np.testing.assert_allclose(frames[-1], projection.align(frames[-2], own), atol=1e-4)
    record = json.loads((out / "run.json").read_text())["alignment"]
    assert record["mean_displacement_aligned"] <= record["mean_displacement_unaligned"]


def test_rerun_recomputes_only_the_missing_checkpoint(timeline_build, tmp_path):
    run, out = timeline_build
    before = cache_files(run)
    assert len(before) == len(STEPS)
    removed = next(path for path in before if "checkpoint-5" in str(path))
    removed.unlink()
    build("digits", run=run, out=tmp_path / "again", limit=N_IMAGES, progress=False)
    after = cache_files(run)
    assert set(after) == set(before)
    changed = [path for path in after if after[path] != before.get(path)]
    assert changed == [removed]  # the others were read, not recomputed
    old = datasets.load_from_disk(str(out / "timeline")).to_pandas()
    new = datasets.load_from_disk(str(tmp_path / "again" / "timeline")).to_pandas()
    np.testing.assert_allclose(new.outlier_score, old.outlier_score, atol=1e-6)
    np.testing.assert_allclose(new.pca_x, old.pca_x, atol=1e-5)


def test_a_changed_dataset_does_not_reuse_the_cache(timeline_build, tmp_path):
    run, _ = timeline_build
    before = cache_files(run)
    build("digits", run=run, out=tmp_path / "other", limit=N_IMAGES - 1, progress=False)
    assert len(cache_files(run)) == len(before) + len(STEPS)


def test_checkpoints_of_another_size_are_refused(tmp_path):
    run = make_run(tmp_path / "run", steps=(0,), hidden_size=16)
    assert [c.step for c in list_checkpoints(run)] == [0, 5]
    with pytest.raises(ExplorerError, match="checkpoint-5 gives 16-d embeddings"):
        build("digits", run=run, out=tmp_path / "out", limit=20, progress=False)
    assert not (tmp_path / "out").exists()
