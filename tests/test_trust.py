"""What a user trusts without checking: side-by-side maps that line up, folders that are never
deleted unless explorer made them, labels that cannot be scored said so (not a traceback),
in-sample scores named, and an embedding cache keyed on everything the embeddings depend on,
for two models as for a run's checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import datasets
import numpy as np
import pytest
import torch
from conftest import DIGIT_NAMES, tiny_model
from PIL import Image
from safetensors.torch import load_file, save_file
from test_timeline import make_run

from explorer import build, cache, data, embed, files, geometry, predictions, projection, runs
from explorer.cli import main
from explorer.config import BuildConfig
from explorer.errors import ExplorerError
from explorer.progress import Progress

# ---------------------------------------------------------------------------------------------
# Side-by-side maps
# ---------------------------------------------------------------------------------------------


def near_copy(model, folder, noise=0.003, seed=0):
    """`model` (a saved tiny model) with every weight moved by a little Gaussian noise: a
    fine-tuned model that has barely moved."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    network = AutoModel.from_pretrained(model)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * noise)
    network.save_pretrained(folder)
    shutil.copy(model / "preprocessor_config.json", folder)
    return folder


def test_the_fine_tuned_map_starts_from_the_foundation_s_and_lines_up(tiny_models, tmp_path):
    near = near_copy(tiny_models["foundation"], tmp_path / "near")
    table = build("digits", foundation=tiny_models["foundation"], finetuned=near,
                  out=tmp_path / "out", limit=200, reference="none", progress=False)  # fmt: skip
    found = np.column_stack([table["umap_found_x"], table["umap_found_y"]])
    ft = np.column_stack([table["umap_ft_x"], table["umap_ft_y"]])
    # the map the fine-tuned embeddings get on their own (what the build drew before)
    fresh = geometry.geometry(np.array(table["embedding_ft"], dtype=np.float32)).umap
    assert projection.disparity(found, ft) < projection.disparity(found, fresh)
    # nearly the same model: the two maps nearly coincide, in place (not only in shape)
    assert projection.displacement(found, ft) < 0.3
    assert projection.displacement(found, fresh) > 1.0  # a fresh map lies elsewhere


# ---------------------------------------------------------------------------------------------
# --overwrite, OUT.partial and OUT.old
# ---------------------------------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(map(str, argv)))
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    return code, stderr.strip().splitlines()[-1] if stderr.strip() else ""


def two_models(tiny_models) -> list[str]:
    return ["--foundation", tiny_models["foundation"], "--finetuned", tiny_models["finetuned"]]


def test_overwrite_refuses_a_folder_that_is_not_an_output(tiny_models, tmp_path, capsys):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("months of work")
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--limit", "20",
                         *two_models(tiny_models), "--out", mine, "--overwrite",
                         "--quiet")  # fmt: skip
    assert code == 2 and "is not an output of explorer build (no run.json)" in line
    assert (mine / "chapter1.tex").read_text() == "months of work"


@pytest.mark.parametrize("suffix", [".partial", ".old"])
def test_a_partial_or_old_folder_explorer_did_not_make_is_left_alone(
    suffix, tiny_models, tmp_path, capsys
):
    out = tmp_path / "results"
    kept = tmp_path / f"results{suffix}"  # the user's own, say last year's results.old
    kept.mkdir()
    (kept / "notes.txt").write_text("keep me")
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--limit", "20",
                         *two_models(tiny_models), "--out", out, "--quiet")  # fmt: skip
    assert code == 2 and line.startswith(f"explorer: error: {kept} is in the way")
    assert "explorer did not make it" in line
    assert (kept / "notes.txt").read_text() == "keep me"
    assert not out.exists()


def test_explorer_s_own_leftovers_are_replaced_and_restored(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with files.written_in_place(target) as partial:
        (partial / "a.txt").write_text("first")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the marker is gone
    # a killed write leaves a marked OUT.partial: the next write replaces it
    leftover = files.partial_path(target)
    leftover.mkdir()
    (leftover / files.MARKER).write_text("")
    (leftover / "junk").write_text("half")
    with files.written_in_place(target) as partial:
        (partial / "a.txt").write_text("second")
    assert (target / "a.txt").read_text() == "second" and not leftover.exists()
    # a kill between the two renames leaves a marked OUT.old, which is put back
    real_replace, calls = os.replace, []

    def killed_at_the_second_rename(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "replace", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt), files.written_in_place(target) as partial:
        (partial / "a.txt").write_text("third")
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert not target.exists() and (files.old_path(target) / files.MARKER).is_file()
    files.restore_interrupted(target)
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "second"
    # the new output it left is explorer's (marked): the next write may remove it
    assert (files.partial_path(target) / files.MARKER).is_file()
    files.check_siblings(target)
    # and an empty folder of those names holds nothing to lose
    shutil.rmtree(files.partial_path(target))
    files.partial_path(target).mkdir()
    files.check_siblings(target)


def test_demo_overwrite_refuses_a_folder_it_did_not_make(tmp_path):
    from explorer.demo import demo

    (tmp_path / "stuff.txt").write_text("mine")
    with pytest.raises(ExplorerError, match="is not a folder of explorer demo"):
        demo(tmp_path, show=False, overwrite=True, progress=False)
    assert (tmp_path / "stuff.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# Labels cleanlab cannot score
# ---------------------------------------------------------------------------------------------


def saved_dataset(folder, labels, feature=None):
    """A tiny save_to_disk dataset of random 12 x 12 images with `labels` (ClassLabel 0..9)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in labels]
    feature = feature or datasets.ClassLabel(names=DIGIT_NAMES)
    table = datasets.Dataset.from_dict(
        {"image": images, "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": feature}),
    )
    table.save_to_disk(str(folder))
    return folder


def build_warning(tiny_models, dataset, out, match) -> tuple[datasets.Dataset, str]:
    """Build `dataset` with the tiny models; the one warning that matches `match`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = build(dataset, foundation=tiny_models["foundation"],
                      finetuned=tiny_models["finetuned"], out=out, reference="none",
                      progress=False)  # fmt: skip
    said = [str(w.message) for w in caught if match in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert "\n" not in said[0]
    return table, said[0]


LABEL_SCORES = {"label_quality", "is_label_issue"}


def test_unlabelled_images_build_without_label_scores_or_names(tiny_models, tmp_path):
    dataset = saved_dataset(tmp_path / "unlabelled", [-1] * 12)  # a Hub test split's labels
    table, said = build_warning(tiny_models, dataset, tmp_path / "out", "no label_quality")
    assert "12 of 12 images are unlabelled (label -1)" in said and "label_str" in said
    assert not (LABEL_SCORES | {"label_str"}) & set(table.column_names)
    assert table["label"] == [-1] * 12 and len(table["pred_label"]) == 12  # still predicted


def test_partly_unlabelled_images_get_no_name_and_no_scores(tiny_models, tmp_path):
    dataset = saved_dataset(tmp_path / "partly", [-1, -1] + [0, 1, 2, 3, 4] * 2)
    table, said = build_warning(tiny_models, dataset, tmp_path / "out", "no label_quality")
    assert "2 of 12 images are unlabelled" in said
    assert not LABEL_SCORES & set(table.column_names)
    assert table["label_str"] == [None, None] + ["0", "1", "2", "3", "4"] * 2  # not "9"


def test_a_single_class_builds_without_label_scores(tiny_models, tmp_path):
    dataset = saved_dataset(tmp_path / "threes", [3] * 12)
    table, said = build_warning(tiny_models, dataset, tmp_path / "out", "no label_quality")
    assert "every image has the same label" in said
    assert not LABEL_SCORES & set(table.column_names)
    assert table["label_str"] == ["3"] * 12


def test_several_labels_per_image_are_left_out(tiny_models, tmp_path):
    many = datasets.List(datasets.ClassLabel(names=DIGIT_NAMES))
    dataset = saved_dataset(tmp_path / "multi", [[0, 1], [2]] * 6, feature=many)
    table, said = build_warning(tiny_models, dataset, tmp_path / "out", "label column")
    assert "'label' holds lists, not one class per image" in said
    assert not (LABEL_SCORES | {"label", "label_str"}) & set(table.column_names)
    assert len(table["pred_label"]) == 12


def test_unscorable_reasons():
    assert predictions.unscorable(np.array([0, 1, 1]), 2) is None
    assert "unlabelled" in predictions.unscorable(np.array([0, -1, 1]), 2)
    assert "same label" in predictions.unscorable(np.array([1, 1, 1]), 2)
    assert "outside 0..1" in predictions.unscorable(np.array([0, 1, 2]), 2)
    assert "not one class index" in predictions.unscorable(np.array([0.5, 1.0]), 2)
    probabilities = np.full((3, 2), 0.5)
    with pytest.warns(UserWarning, match="no label_quality or is_label_issue: 1 of 3"):
        columns = predictions.prediction_columns(
            probabilities, {0: "a", 1: "b"}, ["a", "b"], np.array([0, -1, 1])
        )
    assert set(columns) == {"pred_label", "pred_prob"}


# ---------------------------------------------------------------------------------------------
# The head's classes against the dataset's
# ---------------------------------------------------------------------------------------------


def test_classes_matched_by_position_are_named_in_a_warning():
    probabilities = np.eye(3)[[0, 1, 2, 2]]
    head = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    with pytest.warns(UserWarning) as caught:
        matched = predictions.matched_probabilities(probabilities, head, ["cat", "dog", "eel"])
    (message,) = [str(w.message) for w in caught]
    assert "[LABEL_0, LABEL_1, LABEL_2]" in message and "[cat, dog, eel]" in message
    assert "by position" in message
    np.testing.assert_array_equal(matched, probabilities)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # names that agree (in another order): no warning
        matched = predictions.matched_probabilities(probabilities, head, ["label_2", "LABEL_0",
                                                                         "Label_1"])  # fmt: skip
    np.testing.assert_array_equal(matched, probabilities[:, [2, 0, 1]])
    long = {i: f"c{i}" for i in range(12)}
    with pytest.warns(UserWarning, match=r"c9, \.\.\. \(2 more\)"):
        predictions.matched_probabilities(np.eye(12), long, [str(i) for i in range(12)])


# ---------------------------------------------------------------------------------------------
# In-sample label scores
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("trained_split", "in_sample"), [("test", True), ("train", False)])
def test_label_scores_of_the_training_images_are_called_in_sample(
    trained_split, in_sample, tmp_path
):
    run = make_run(tmp_path / "run", steps=(0, 5))
    runs.write_training_record(
        run, data={"source": "digits", "split": trained_split, "limit": None, "rows": None},
        training={},
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build("digits", run=run, out=tmp_path / "out", limit=30, reference="none",
              progress=False)  # fmt: skip
    said = [str(w.message) for w in caught if "in-sample" in str(w.message)]
    assert len(said) == (1 if in_sample else 0)
    if in_sample:
        assert said[0].startswith(f"{run} was trained on these images (digits, split test)")
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["dataset"]["in_sample"] is in_sample


def test_in_sample_is_unknown_for_two_models_and_shared_rows_decide(tiny_models, tmp_path):
    from explorer.pipeline import _in_sample

    two = BuildConfig("digits", foundation="a", finetuned="b")
    assert _in_sample(two, data.load("digits", limit=5), None) is None
    run = tmp_path / "run"
    run.mkdir()
    runs.write_training_record(run, data={"source": "digits", "split": "train",
                                          "rows": [1, 2, 3]}, training={})  # fmt: skip
    images = data.load("digits", split="train", limit=5)
    config = BuildConfig("digits", run=str(run), split="train")
    assert _in_sample(config, images, [3, 9]) is True
    assert _in_sample(config, images, [7, 9]) is False  # other rows of the same split
    assert _in_sample(BuildConfig("digits", run=str(run)), images, None) is True  # split found


# ---------------------------------------------------------------------------------------------
# The embedding cache key
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """Counts the models embedded (not read from a cache)."""
    calls = []
    real = embed.embed_model

    def counting(*args, **kwargs):
        calls.append(kwargs.get("pooling"))
        return real(*args, **kwargs)

    monkeypatch.setattr(embed, "embed_model", counting)
    return calls


def embed_once(model, images, pooling="auto"):
    """`model`'s embeddings of `images`, as a build from a run embeds its checkpoints."""
    config = BuildConfig("digits", run=str(model.parent), device="cpu", pooling=pooling)
    checkpoint = runs.Checkpoint(0, model)
    return cache.Embedder(config, Progress(False)).embeddings(checkpoint, images)


def cache_files(model):
    return {
        p.name: p.stat().st_mtime_ns for p in (model / cache.CACHE_FOLDER).glob("*.safetensors")
    }


def test_touching_the_weights_keeps_the_cache(counted, tmp_path):
    model = tiny_model("vit", tmp_path / "model", num_labels=10)
    images = data.load("digits", limit=12)
    first = embed_once(model, images)
    before = cache_files(model)
    weights = model / "model.safetensors"
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))  # as a copy or a checkout would
    again = embed_once(model, images)
    assert len(counted) == 1 and cache_files(model) == before
    np.testing.assert_array_equal(again.vectors, first.vectors)
    hashes = json.loads((model / cache.CACHE_FOLDER / cache.WEIGHTS_FILE).read_text())
    assert hashes["model.safetensors"]["mtime_ns"] == later  # re-read once, same hash


def test_changed_weights_or_class_names_are_embedded_again(counted, tmp_path):
    model = tiny_model("vit", tmp_path / "model", num_labels=10)
    images = data.load("digits", limit=12)
    embed_once(model, images)
    # another class name in config.json: the cached probabilities' classes were the old ones
    config = json.loads((model / "config.json").read_text())
    config["id2label"]["3"] = "three"
    (model / "config.json").write_text(json.dumps(config))
    renamed = embed_once(model, images)
    assert len(counted) == 2 and renamed.facts.id2label[3] == "three"
    # a changed weight of the same size, its modification time put back
    weights = model / "model.safetensors"
    stat = weights.stat()
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("layernorm.weight") and "encoder" not in k)
    tensors[name] = tensors[name] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    assert weights.stat().st_size == stat.st_size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = embed_once(model, images)
    assert len(counted) == 3 and not np.allclose(changed.vectors, renamed.vectors)
    assert len(cache_files(model)) == 3


def test_the_key_holds_the_pooling_used_not_auto(counted, tmp_path):
    model = tiny_model("vit", tmp_path / "model")
    swin = tiny_model("swin", tmp_path / "swin")
    images = data.load("digits", limit=12)
    embed_once(model, images, pooling="auto")
    embed_once(model, images, pooling="cls")  # what auto is for a ViT: the same embeddings
    assert counted == ["cls"] and len(cache_files(model)) == 1
    embed_once(swin, images, pooling="auto")  # resolved from the architecture, no weights read
    assert counted == ["cls", "pooler"]
    with pytest.raises(ValueError, match="pooling used"):
        cache.cache_key(pixels_hash="0", pooling="auto", dtype="float32", config=b"{}", weights={})


def test_a_hub_model_is_cached_in_its_hub_cache_folder(tmp_path):
    """A Hub id's files are its snapshot in the Hugging Face cache; its commit fixes them."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny"
    tiny_model("vit", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = "from explorer import cache; print(cache.model_files('someone/tiny'))"
    environment = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    shown = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert f"revision='{commit}'" in shown
    assert f"cache={(repo / cache.CACHE_FOLDER)!r}" in shown


# ---------------------------------------------------------------------------------------------
# Two-model builds resume
# ---------------------------------------------------------------------------------------------


def test_a_second_two_model_build_reads_the_cache(tmp_path):
    foundation = tiny_model("vit", tmp_path / "foundation")
    finetuned = tiny_model("vit", tmp_path / "finetuned", num_labels=10, seed=1)
    common = {"foundation": foundation, "finetuned": finetuned, "limit": 20,
              "reference": "none", "progress": False}  # fmt: skip
    first = build("digits", out=tmp_path / "one", **common)
    cached = {**cache_files(foundation), **cache_files(finetuned)}
    assert len(cache_files(foundation)) >= 1 and len(cache_files(finetuned)) >= 1
    second = build("digits", out=tmp_path / "two", **common)
    assert {**cache_files(foundation), **cache_files(finetuned)} == cached  # read, not rewritten
    timings = json.loads((tmp_path / "two" / "run.json").read_text())["timings"]
    assert "embed" not in timings
    np.testing.assert_array_equal(second["embedding_ft"], first["embedding_ft"])
