"""Bad input ends with one line naming the problem and the fix, exit code 2, no traceback, and
nothing written or lost; killed runs leave the previous output or a resumable cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from test_timeline import make_run

from explorer import data
from explorer.cli import main
from explorer.errors import ExplorerError


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(map(str, argv)))
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    return code, stderr.strip().splitlines()[-1] if stderr.strip() else ""


@pytest.fixture
def models(tiny_models):
    return ["--foundation", tiny_models["foundation"], "--finetuned", tiny_models["finetuned"]]


def image_folder(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(n // 2):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_dataset_that_does_not_exist(capsys, models, tmp_path):
    code, line = run_cli(capsys, "build", "--dataset", tmp_path / "nope", *models,
                         "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "does not exist" in line and "give a Hub id or 'digits'" in line
    assert not (tmp_path / "out").exists()


def test_hub_dataset_while_offline(capsys, models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, line = run_cli(capsys, "build", "--dataset", "someone/no-such-dataset", *models,
                         "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "could not load dataset 'someone/no-such-dataset'" in line
    assert "connection" in line


@pytest.fixture
def hub_flags(monkeypatch):
    """HF_HUB_OFFLINE unset for one test, and the libraries' offline flags restored after it."""
    import datasets.config
    from huggingface_hub import constants

    from explorer import offline

    for name in ("HF_HUB_OFFLINE", *offline.PROXIES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    offline.use_cache_if_offline.cache_clear()
    yield constants, datasets.config
    offline.use_cache_if_offline.cache_clear()


def test_an_unreachable_hub_switches_to_the_cache_at_once(capsys, models, tmp_path, monkeypatch,
                                                          hub_flags):  # fmt: skip
    def unreachable(address, timeout=None):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr("socket.create_connection", unreachable)
    warning = "huggingface.co cannot be reached .Name or service not known.: working offline"
    with pytest.warns(UserWarning, match=warning):
        code = main(["build", "--dataset", "someone/no-such-dataset", *map(str, models),
                     "--out", str(tmp_path / "out")])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Retrying" not in "\n".join(lines)  # no 23 s of retries first
    assert "could not load dataset 'someone/no-such-dataset'" in lines[-1]
    constants, datasets_config = hub_flags
    assert constants.HF_HUB_OFFLINE is True and datasets_config.HF_HUB_OFFLINE is True


def test_a_reachable_hub_leaves_the_libraries_online(monkeypatch, hub_flags):
    from explorer import offline

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr("socket.create_connection", lambda address, timeout=None: Connection())
    assert offline.use_cache_if_offline() is False
    constants, datasets_config = hub_flags
    assert constants.HF_HUB_OFFLINE is False and datasets_config.HF_HUB_OFFLINE is False


def test_model_that_does_not_exist(capsys, tiny_models, tmp_path):
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--foundation",
                         tmp_path / "missing", "--finetuned", tiny_models["finetuned"],
                         "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "has no config.json" in line
    assert not (tmp_path / "out").exists()


def test_float16_on_the_cpu_is_refused_before_any_work(capsys, models, tmp_path):
    code, line = run_cli(capsys, "build", "--dataset", "digits", *models, "--device", "cpu",
                         "--dtype", "float16", "--out", tmp_path / "out")  # fmt: skip
    assert (
        code == 2
        and line == "explorer: error: --dtype float16 is for GPUs: on the CPU use bfloat16"
    )
    assert not (tmp_path / "out").exists()


def test_folder_without_images(capsys, models, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no images here")
    code, line = run_cli(capsys, "build", "--dataset", tmp_path / "empty", *models,
                         "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "no images found" in line


def test_unreadable_images_are_named_and_can_be_skipped(capsys, models, tmp_path):
    folder = image_folder(tmp_path / "images")
    (folder / "cat" / "broken.png").write_bytes(b"not a png at all")
    good = (folder / "dog" / "0.png").read_bytes()
    (folder / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    code, line = run_cli(capsys, "build", "--dataset", folder, *models, "--out", tmp_path / "out")
    assert code == 2 and "2 image(s) cannot be read" in line
    assert "broken.png" in line and "truncated.png" in line and "--skip-bad-images" in line
    assert not (tmp_path / "out").exists()

    code, _ = run_cli(capsys, "build", "--dataset", folder, *models, "--out", tmp_path / "out",
                      "--skip-bad-images", "--quiet")  # fmt: skip
    assert code == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert sorted(Path(name).name for name in record["skipped_images"]) == [
        "broken.png", "truncated.png"
    ]  # fmt: skip
    assert datasets.load_from_disk(str(tmp_path / "out" / "default")).num_rows == 6


def test_metadata_cannot_point_outside_the_folder(tmp_path):
    folder = image_folder(tmp_path / "images")
    (folder / "metadata.csv").write_text("file_name,label\n../../etc/passwd,cat\n")
    with pytest.raises(ExplorerError, match="outside"):
        data.load(folder)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch-size", "0", "batch_size must be a whole number of at least 1, not 0"),
        ("--batch-size", "-8", "batch_size must be a whole number of at least 1, not -8"),
        ("--annoy-trees", "0", "annoy_trees must be a whole number of at least 1, not 0"),
    ],
)
def test_counts_below_one_are_refused_before_any_work(capsys, models, tmp_path, option, value,
                                                      message):  # fmt: skip
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--limit", "20", *models,
                         "--neighbors", "annoy", option, value,
                         "--out", tmp_path / "out")  # fmt: skip
    assert (code, line) == (2, f"explorer: error: {message}")
    assert not (tmp_path / "out").exists()


def test_a_column_without_images_named_as_the_image_column(capsys, models, tmp_path):
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--image-column", "label",
                         *models, "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and line == (
        "explorer: error: column 'label' of digits holds class labels, not images: name the "
        "image column with --image-column (columns: image, label)"
    )
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--label-column", "image",
                         *models, "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "cannot be both the images and the labels" in line
    assert not (tmp_path / "out").exists()


def test_annoy_on_a_tiny_set_finds_the_exact_neighbours(capsys, models, tmp_path):
    code, _ = run_cli(capsys, "build", "--dataset", "digits", "--limit", "4", *models,
                      "--neighbors", "annoy", "--reference", "none", "--out", tmp_path / "out",
                      "--quiet")  # fmt: skip
    assert code == 0
    table = datasets.load_from_disk(str(tmp_path / "out" / "default"))
    ft = np.array(table["embedding_ft"], dtype=np.float64)
    unit = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    np.fill_diagonal(distance, np.inf)
    np.testing.assert_allclose(table["nn_distance"], distance.min(1), atol=1e-5)


def test_too_few_images(capsys, models, tmp_path):
    code, line = run_cli(capsys, "build", "--dataset", "digits", "--limit", "2", *models,
                         "--out", tmp_path / "out")  # fmt: skip
    assert code == 2 and "too few" in line and "at least 3" in line


def test_few_images_lower_k_with_a_warning(tiny_models, tmp_path):
    from explorer import build

    with pytest.warns(UserWarning, match="k=5"):  # scored within the 6, not against a reference
        table = build("digits", foundation=tiny_models["foundation"],
                      finetuned=tiny_models["finetuned"], out=tmp_path / "out", limit=6,
                      reference="none", progress=False)  # fmt: skip
    assert table.num_rows == 6 and np.isfinite(table["outlier_score_ft"]).all()


def test_nan_embeddings_name_the_checkpoint(capsys, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    run = make_run(tmp_path / "run", steps=(0, 5))
    weights = run / "checkpoint-5" / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if "layernorm.weight" in k and "encoder" not in k)
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    code, line = run_cli(capsys, "build", "--run", run, "--dataset", "digits", "--limit", "20",
                         "--out", tmp_path / "out", "--quiet")  # fmt: skip
    assert code == 2 and "checkpoint-5" in line and "NaN" in line
    # the finished checkpoint stays cached
    assert list((run / "checkpoint-0").glob("explorer-cache/*.safetensors"))
    assert not (tmp_path / "out").exists()


def _wait_for(predicate, process, timeout=120.0, every=0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(every)
    return False


@pytest.mark.parametrize("moment", ["embedding", "final write"])
def test_sigkill_leaves_previous_output_or_a_resumable_cache(moment, tmp_path, capsys):
    run = make_run(tmp_path / "run", steps=(0, 5, 10))
    out = tmp_path / "out"
    arguments = ["build", "--run", str(run), "--dataset", "digits", "--limit", "40",
                 "--out", str(out), "--quiet"]  # fmt: skip
    partial = out.with_name("out.partial")
    if moment == "final write":
        assert main(arguments) == 0  # a previous complete output
        previous = (out / "run.json").read_text()
        # The tables are written into out.partial, timeline first; from then on the writes
        # take about 0.1 s (measured) before the rename, against a poll every millisecond.
        ready, every = lambda: (partial / "timeline").exists(), 0.001  # noqa: E731
    else:
        previous = None
        ready = lambda: len(list(run.glob("*/explorer-cache/*.safetensors"))) >= 1  # noqa: E731
        every = 0.01
    process = subprocess.Popen(
        [sys.executable, "-m", "explorer", *arguments], env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    hit = _wait_for(ready, process, every=every)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert hit, "the build finished before the kill"
    if previous is None:
        assert not out.exists()  # no half output
    else:
        # the kill landed in the write: the new output lies half-written in out.partial, never
        # renamed into place, and OUT is the previous output, whole
        assert (partial / "timeline").is_dir()
        assert (out / "run.json").read_text() == previous
        assert datasets.load_from_disk(str(out / "default")).num_rows == 40
        assert datasets.load_from_disk(str(out / "timeline")).num_rows == 3 * 40
    cached = {p: p.stat().st_mtime_ns for p in run.glob("*/explorer-cache/*.safetensors")}
    assert main(arguments) == 0  # the re-run resumes: same request, no --overwrite needed
    assert datasets.load_from_disk(str(out / "timeline")).num_rows == 3 * 40
    for path, mtime in cached.items():  # finished checkpoints were not recomputed
        assert path.stat().st_mtime_ns == mtime
