"""`explorer build --processes 2`: two CPU processes (gloo, through Accelerate's launcher) share
the checkpoints and give the single-process output."""

from __future__ import annotations

import shutil

import datasets
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from test_timeline import make_run

from explorer.cli import main


def tables(out):
    return {
        name: datasets.load_from_disk(str(out / name)).to_pandas()
        for name in ("default", "timeline")
    }


def test_two_processes_give_the_single_process_output(tmp_path, capsys):
    run = make_run(tmp_path / "run", steps=(0, 5, 10))
    common = ["build", "--run", str(run), "--dataset", "digits", "--limit", "40", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "two"), "--processes", "2"]) == 0
    caches = sorted(run.glob("*/explorer-cache/*.safetensors"))
    assert len(caches) == 3  # every checkpoint was embedded by one of the two processes
    for cache in caches:
        cache.unlink()
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two, one = tables(tmp_path / "two"), tables(tmp_path / "one")
    for name in ("default", "timeline"):
        assert list(two[name].columns) == list(one[name].columns)
        for column in one[name].columns:
            if column in ("image", "nn_image"):
                continue
            left, right = np.stack(one[name][column]), np.stack(two[name][column])
            if left.dtype.kind == "f":
                np.testing.assert_allclose(right, left, atol=1e-5, err_msg=column)
            else:
                np.testing.assert_array_equal(right, left, err_msg=column)


def test_a_failing_process_stops_the_run_and_keeps_finished_checkpoints(tmp_path, capfd):
    run = make_run(tmp_path / "run", steps=(0, 5, 10, 15))
    # the second process takes checkpoints 5 and 15: 15 gives NaN embeddings
    weights = run / "checkpoint-15" / "model.safetensors"
    tensors = load_file(weights)
    for name in tensors:
        if name.endswith("layernorm.weight") and "encoder" not in name:
            tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    out = tmp_path / "out"
    code = main(["build", "--run", str(run), "--dataset", "digits", "--limit", "40",
                 "--out", str(out), "--processes", "2", "--quiet"])  # fmt: skip
    stderr = capfd.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    assert "checkpoint-15" in stderr and "NaN" in stderr
    assert "a process of the 2 failed" in stderr.strip().splitlines()[-1]
    assert list((run / "checkpoint-5").glob("explorer-cache/*.safetensors"))
    assert not out.exists()
    shutil.rmtree(run / "checkpoint-15")
    assert main(["build", "--run", str(run), "--dataset", "digits", "--limit", "40",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
