"""`explorer finetune` for real on a few digits: tiny-vit and a local model folder, a handful of
steps, checked against the run-folder contract (`explorer.runs`), the models themselves and
`explorer build --run`."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import torch
from conftest import DIGIT_NAMES, tiny_model
from transformers import AutoModelForImageClassification, set_seed

from explorer import data, embed, runs
from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.finetune import SCRATCH_LR, checkpoint_steps, finetune, tiny_vit
from explorer.pipeline import build

LIMIT = 64
BATCH = 16  # 4 steps an epoch
MAX_STEPS = 6
SAVE_STEPS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny-vit run: 6 steps, a checkpoint every 2, evaluated on the test split."""
    out = tmp_path_factory.mktemp("finetune") / "run"
    returned = finetune(
        "digits",
        model="tiny-vit",
        out=out,
        eval_split="test",
        limit=LIMIT,
        max_steps=MAX_STEPS,
        save_steps=SAVE_STEPS,
        batch_size=BATCH,
        progress=False,
    )
    assert returned == out
    return out


def _weights(folder) -> dict[str, torch.Tensor]:
    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def test_checkpoints_every_save_steps_each_a_whole_model(run):
    checkpoints = runs.list_checkpoints(run)
    assert [c.step for c in checkpoints] == [0, 2, 4, 6]
    assert [c.epoch for c in checkpoints] == [0.0, 0.5, 1.0, 1.5]
    for checkpoint in checkpoints:
        names = {path.name for path in checkpoint.path.iterdir()}
        assert {"config.json", "preprocessor_config.json", "trainer_state.json"} <= names
        assert not names & {"optimizer.pt", "scheduler.pt"}  # only the model is kept
        model = AutoModelForImageClassification.from_pretrained(checkpoint.path)
        assert [model.config.id2label[i] for i in range(10)] == DIGIT_NAMES
        prep = embed.Preprocessing.from_model(checkpoint.path)
        assert (prep.height, prep.width) == (16, 16)
    # training moved the weights between every pair of checkpoints
    steps = [_weights(c.path)["classifier.weight"] for c in checkpoints]
    assert all(not torch.equal(a, b) for a, b in zip(steps, steps[1:], strict=False))


def test_checkpoint_0_is_the_untouched_model(run):
    set_seed(0)  # finetune's seed, before the model is built
    untouched, _ = tiny_vit(DIGIT_NAMES)
    saved = _weights(run / "checkpoint-0")
    expected = untouched.state_dict()
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[name], expected[name]) for name in expected)


def test_log_has_a_row_per_step_with_the_schedule_and_evaluations(run):
    header = (run / runs.LOG_FILE).read_text().splitlines()[0]
    assert header.split(",") == runs.LOG_COLUMNS
    log = runs.read_log(run)
    assert log["step"] == [0, 1, 2, 3, 4, 5, 6]  # step 0: the evaluation before training
    assert log["epoch"] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    assert math.isnan(log["loss"][0]) and all(0 < v < 5 for v in log["loss"][1:])
    # one warmup step (10% of 6, rounded up), then linear decay: the rate each step used
    assert log["learning_rate"][1:] == pytest.approx(
        [0.0, SCRATCH_LR, 0.8 * SCRATCH_LR, 0.6 * SCRATCH_LR, 0.4 * SCRATCH_LR, 0.2 * SCRATCH_LR]
    )
    evaluated = [
        step for step, acc in zip(log["step"], log["eval_accuracy"], strict=True) if acc == acc
    ]
    assert evaluated == [0, 2, 4, 6]
    assert log["eval_loss"][0] == pytest.approx(math.log(10), abs=0.1)  # untrained: near uniform


def test_eval_accuracy_is_the_checkpoints_accuracy(run):
    images = data.load("digits", "test", limit=LIMIT)
    log = runs.read_log(run)
    for step in (0, 6):
        folder = run / f"checkpoint-{step}"
        prep = embed.Preprocessing.from_model(folder)
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            logits = model(pixel_values=prep.normalise(embed.prepare_pixels(images, prep, False)))
        accuracy = float((logits.logits.argmax(-1).numpy() == np.asarray(images["label"])).mean())
        assert log["eval_accuracy"][log["step"].index(step)] == pytest.approx(accuracy)


def test_same_seed_same_run(run, tmp_path):
    again = finetune(
        "digits",
        model="tiny-vit",
        out=tmp_path / "again",
        limit=LIMIT,
        max_steps=MAX_STEPS,
        save_steps=MAX_STEPS,
        batch_size=BATCH,
        progress=False,
    )
    assert runs.read_log(again)["loss"] == runs.read_log(run)["loss"][1:]
    first, second = _weights(run / "checkpoint-6"), _weights(again / "checkpoint-6")
    assert all(torch.equal(first[name], second[name]) for name in first)
    # no eval split: no evaluation columns filled
    assert all(math.isnan(v) for v in runs.read_log(again)["eval_accuracy"])


def test_local_model_gets_a_new_head_and_keeps_its_backbone(tmp_path, capfd):
    folder = tiny_model("vit", tmp_path / "model", num_labels=3)  # a head of another size
    out = tmp_path / "run"
    out.mkdir()  # an empty folder is fine
    capfd.readouterr()  # forget what making the model printed
    finetune("digits", model=folder, out=out, limit=32, max_steps=2, save_steps=2, progress=False)
    assert [c.step for c in runs.list_checkpoints(out)] == [0, 2]
    original, start = _weights(folder), _weights(out / "checkpoint-0")
    backbone = [name for name in original if not name.startswith("classifier.")]
    assert all(torch.equal(original[name], start[name]) for name in backbone)
    assert start["classifier.weight"].shape == (10, 32)
    assert embed.Preprocessing.from_model(out / "checkpoint-2").height == 32  # the model's own
    assert runs.read_log(out)["step"] == [1, 2]
    captured = capfd.readouterr()  # quiet: no bars, no printed logs
    assert captured.out == ""
    assert "Writing model shards" not in captured.err and "'loss'" not in captured.err


def test_build_reads_the_run(run, tmp_path):
    out = tmp_path / "built"
    build(dataset="digits", run=run, out=out, limit=LIMIT, progress=False)
    timeline = datasets.load_from_disk(str(out / "timeline"))
    assert timeline.num_rows == 4 * LIMIT
    assert sorted(set(timeline["step"])) == [0, 2, 4, 6]
    assert datasets.load_from_disk(str(out / "training_log"))["step"] == [0, 1, 2, 3, 4, 5, 6]


def test_bad_input(tmp_path):
    unlabelled = tmp_path / "unlabelled"
    images = data.load("digits", "train", limit=4).select_columns(["image"])
    datasets.DatasetDict({"train": images}).save_to_disk(str(unlabelled))
    with pytest.raises(ExplorerError, match="fine-tuning needs labels"):
        finetune(unlabelled, model="tiny-vit", out=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ExplorerError, match="not empty"):
        finetune("digits", model="tiny-vit", out=taken, progress=False)
    assert [path.name for path in taken.iterdir()] == ["keep.txt"]

    with pytest.raises(ExplorerError, match="model folder .*does not exist"):
        finetune("digits", model=tmp_path / "nowhere", out=tmp_path / "b", limit=4)
    with pytest.raises(ExplorerError, match="from the Hub"):
        finetune("digits", model="nobody/no-such-model", out=tmp_path / "c", limit=4)
    with pytest.raises(ExplorerError, match="not both"):
        finetune("digits", model="tiny-vit", out=tmp_path / "d", max_steps=2, epochs=1)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    code = main(["finetune", "--dataset", "digits", "--model", "tiny-vit", "--out", str(taken)])
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    ("total", "count"), [(5625, 25), (1875, 25), (480, 13), (100, 10), (12, 6), (7, 2), (3, 25)]
)
def test_checkpoint_schedule_is_spaced_denser_early(total, count):
    steps = checkpoint_steps(total, count)
    assert len(steps) == min(count, total + 1)
    assert steps[0] == 0 and steps[-1] == total
    gaps = np.diff(steps)
    assert (gaps > 0).all()  # distinct, increasing
    if total >= 2 * count > 4:  # room to spread: the gaps only widen, and half come early
        assert (np.diff(gaps) >= 0).all()
        assert steps[len(steps) // 2] <= 2 * math.sqrt(total)  # geometric: about the root


def test_checkpoint_schedule_for_three_epochs_of_fashion_mnist():
    steps = checkpoint_steps(3 * 60_000 // 32)  # the default: 25 checkpoints
    assert steps[:6] == [0, 1, 2, 3, 4, 6] and steps[-2:] == [3944, 5625]
    assert len(steps) == 25
    with pytest.raises(ValueError, match="count >= 2"):
        checkpoint_steps(10, 1)


@pytest.fixture(scope="module")
def spaced_run(tmp_path_factory):
    """A tiny-vit run of 3 epochs of 64 images (12 steps) with 6 checkpoints, the default way."""
    out = tmp_path_factory.mktemp("spaced") / "run"
    finetune(
        "digits",
        model="tiny-vit",
        out=out,
        eval_split="test",
        limit=LIMIT,
        epochs=3,
        checkpoints=6,
        batch_size=BATCH,
        progress=False,
    )
    return out


def test_checkpoints_follow_the_planned_schedule(spaced_run):
    planned = checkpoint_steps(3 * LIMIT // BATCH, 6)
    assert planned == [0, 1, 2, 4, 7, 12]
    assert [c.step for c in runs.list_checkpoints(spaced_run)] == planned
    assert sorted(path.name for path in spaced_run.glob("checkpoint-*")) == sorted(
        f"checkpoint-{step}" for step in planned
    )
    log = runs.read_log(spaced_run)
    evaluated = [s for s, acc in zip(log["step"], log["eval_accuracy"], strict=True) if acc == acc]
    assert evaluated == planned  # each checkpoint's accuracy, checkpoint-0's included
    assert log["step"] == list(range(13))


def test_run_records_the_data_it_was_trained_on(spaced_run):
    record = runs.read_training_data(spaced_run)
    assert {key: record[key] for key in ("source", "split", "eval_split", "limit", "sample")} == {
        "source": "digits",
        "split": "train",
        "eval_split": "test",
        "limit": LIMIT,
        "sample": "random",
    }
    assert record["seed"] == data.SAMPLE_SEED
    assert record["image_column"] is None and record["label_column"] is None
    assert record["data_dir"] is None and record["labels"] == DIGIT_NAMES
    assert record["num_rows"] == record["eval_num_rows"] == LIMIT
    # build loads the same rows with the same arguments: the same function and seed
    train = data.load_with_rows("digits", "train", limit=LIMIT)
    test = data.load_with_rows("digits", "test", limit=LIMIT)
    assert record["rows"] == train.rows and record["eval_rows"] == test.rows
    assert len(set(train.dataset["label"])) == 10  # a stratified sample: every class
    assert record["rows"] != list(range(LIMIT))
    training = json.loads((spaced_run / runs.RECORD_FILE).read_text())["training"]
    assert training["checkpoints"] == 6 and training["save_steps"] is None
    assert training["epochs"] == 3 and training["lr"] == SCRATCH_LR


def test_read_training_data_without_or_with_a_broken_record(run, tmp_path):
    assert runs.read_training_data(tmp_path) is None  # another trainer's run
    assert runs.read_training_data(run)["sample"] == "random"  # save_steps runs record it too
    (tmp_path / runs.RECORD_FILE).write_text("{not json")
    with pytest.raises(ExplorerError, match="cannot read .*explorer-run.json"):
        runs.read_training_data(tmp_path)
    (tmp_path / runs.RECORD_FILE).write_text("[]")
    with pytest.raises(ExplorerError, match="no 'data' record"):
        runs.read_training_data(tmp_path)


def test_cli_checkpoints_and_sample(tmp_path):
    out = tmp_path / "run"
    code = main(["finetune", "--dataset", "digits", "--model", "tiny-vit", "--out", str(out),
                 "--limit", "32", "--max-steps", "4", "--checkpoints", "3", "--sample", "first",
                 "--quiet"])  # fmt: skip
    assert code == 0
    assert [c.step for c in runs.list_checkpoints(out)] == [0, 1, 4]
    record = runs.read_training_data(out)
    assert record["sample"] == "first" and record["rows"] == list(range(32))
