"""`explorer build --processes N`: CPU processes (gloo, through Accelerate's launcher) share the
checkpoints whole and, where fewer are left than processes, by images; the output is the
single-process output."""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_timeline import make_run

from explorer.cli import main


def tables(out, names=("default", "timeline")):
    return {name: datasets.load_from_disk(str(out / name)).to_pandas() for name in names}


def assert_same_tables(two, one):
    for name in one:
        assert list(two[name].columns) == list(one[name].columns)
        for column in one[name].columns:
            if column in ("image", "nn_image"):
                continue
            left, right = np.stack(one[name][column]), np.stack(two[name][column])
            if left.dtype.kind == "f":
                np.testing.assert_allclose(right, left, atol=1e-5, err_msg=column)
            else:
                np.testing.assert_array_equal(right, left, err_msg=column)


def read_caches(run):
    """{checkpoint/cache file name: (tensors, facts)} of every embedding cache of `run`."""
    caches = {}
    for path in sorted(run.glob("*/explorer-cache/*.safetensors")):
        with safe_open(str(path), framework="numpy") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}
            caches[f"{path.parent.parent.name}/{path.name}"] = (
                tensors,
                json.loads(file.metadata()["facts"]),
            )
    return caches


def test_two_processes_give_the_single_process_output(tmp_path, capfd):
    # 3 checkpoints on 2 processes: checkpoint-0 and checkpoint-5 go whole, one to each;
    # checkpoint-10 is shared by images and the main process writes its cache
    run = make_run(tmp_path / "run", steps=(0, 5, 10))
    common = ["build", "--run", str(run), "--dataset", "digits", "--limit", "40"]
    assert main([*common, "--out", str(tmp_path / "two"), "--processes", "2"]) == 0
    stderr = capfd.readouterr().err
    assert "checkpoint-10: images 0-19 of 40 in this process, the others in 1 more" in stderr
    assert "checkpoint-0: images" not in stderr and "checkpoint-5: images" not in stderr
    two_caches = read_caches(run)
    assert len(two_caches) == 3  # every checkpoint cached, the shared one whole
    for cache in run.glob("*/explorer-cache"):
        shutil.rmtree(cache)
    assert main([*common, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    one_caches = read_caches(run)
    assert list(two_caches) == list(one_caches)  # the same keys: the same cache files
    for name, (tensors, facts) in one_caches.items():
        assert two_caches[name][1] == facts, name
        assert tensors["embeddings"].shape == (40, 32)
        assert tensors["probabilities"].shape == (40, 10)
        for tensor in tensors:
            np.testing.assert_allclose(
                two_caches[name][0][tensor], tensors[tensor], atol=1e-5, err_msg=name
            )
    assert_same_tables(tables(tmp_path / "two"), tables(tmp_path / "one"))


def test_three_processes_share_two_models_by_images(tiny_models, tmp_path, capfd):
    common = ["build", "--foundation", str(tiny_models["foundation"]), "--finetuned",
              str(tiny_models["finetuned"]), "--dataset", "digits", "--limit", "31"]  # fmt: skip
    models = tiny_models["foundation"].parent  # the models' caches: <model>/explorer-cache/
    earlier = set(read_caches(models))  # of other tests' builds with these models
    assert main([*common, "--out", str(tmp_path / "three"), "--processes", "3"]) == 0
    stderr = capfd.readouterr().err
    assert "foundation: images 0-9 of 31 in this process, the others in 2 more" in stderr
    assert "finetuned: images 0-9 of 31 in this process, the others in 2 more" in stderr
    three_caches = {k: v for k, v in read_caches(models).items() if k not in earlier}
    for name in three_caches:  # the one-process build below embeds everything again
        (models / name.replace("/", "/explorer-cache/", 1)).unlink()
    assert main([*common, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    one_caches = {k: v for k, v in read_caches(models).items() if k not in earlier}
    assert list(three_caches) == list(one_caches)  # the joined slices cached as one process does
    for name, (tensors, facts) in one_caches.items():
        assert three_caches[name][1] == facts, name
        for tensor in tensors:
            np.testing.assert_allclose(
                three_caches[name][0][tensor], tensors[tensor], atol=1e-5, err_msg=name
            )
    three, one = tables(tmp_path / "three", ["default"]), tables(tmp_path / "one", ["default"])
    assert len(one["default"]) == 31
    assert_same_tables(three, one)
    record = [json.loads((tmp_path / out / "run.json").read_text()) for out in ("three", "one")]
    assert record[0]["models"] == record[1]["models"]


def poison(checkpoint):
    """Make `checkpoint` give NaN embeddings (its final layer norm's weights NaN)."""
    weights = checkpoint / "model.safetensors"
    tensors = load_file(weights)
    for name in tensors:
        if name.endswith("layernorm.weight") and "encoder" not in name:
            tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("steps", "failing", "surely_cached"),
    [
        # checkpoints 0 and 10 go whole to the main process, 5 and 15 to the other: 15 fails
        # after 5 is cached (the main process may not have finished 0 or 10 by then)
        ((0, 5, 10, 15), 15, {5}),
        # 0 and 5 go whole, one to each process, then 10 is shared by images: both processes
        # fail on their slices, the first to fail after its whole checkpoint was cached
        ((0, 5, 10), 10, set()),
    ],
)
def test_a_failing_process_stops_the_run_and_keeps_finished_checkpoints(
    tmp_path, capfd, steps, failing, surely_cached
):
    run = make_run(tmp_path / "run", steps=steps)
    poison(run / f"checkpoint-{failing}")
    out = tmp_path / "out"
    code = main(["build", "--run", str(run), "--dataset", "digits", "--limit", "40",
                 "--out", str(out), "--processes", "2", "--quiet"])  # fmt: skip
    stderr = capfd.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    assert f"checkpoint-{failing}" in stderr and "NaN" in stderr
    assert "a process of the 2 failed" in stderr.strip().splitlines()[-1]
    caches = {
        path: path.stat().st_mtime_ns
        for path in run.glob("*/explorer-cache/*")
        if path.name != "weights.json"  # the weights' hashes (explorer.cache.weights_hashes)
    }
    cached = {int(path.parent.parent.name.removeprefix("checkpoint-")) for path in caches}
    assert cached and surely_cached <= cached <= set(steps) - {failing}
    assert all(path.suffix == ".safetensors" for path in caches)  # no half-written file
    assert not out.exists()
    shutil.rmtree(run / f"checkpoint-{failing}")
    assert main(["build", "--run", str(run), "--dataset", "digits", "--limit", "40",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    for path, modified in caches.items():  # the finished checkpoints were read, not redone
        assert path.stat().st_mtime_ns == modified
