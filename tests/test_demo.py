"""`explorer demo` end to end with a few training steps, then `show`, `animate` and `publish` on
the OUT it made: the real build's output, not a synthetic table.

The demo runs once for the module (a tiny ViT trained 5 steps, checkpoints at steps 0 and 5,
the 450 test images of digits enriched at each); every test reads what it wrote.
"""

from __future__ import annotations

import importlib
import json
import os
import urllib.request
from pathlib import Path

import datasets
import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from explorer import output, runs
from explorer.animate import animate
from explorer.hub import publish
from explorer.spotlight import show

os.environ["SPOTLIGHT_OPT_OUT"] = "true"  # no analytics from the Spotlight server

demo_module = importlib.import_module("explorer.demo")
TRAINING = {"model": "tiny-vit", "save_steps": 5, "max_steps": 5, "batch_size": 32}
STEPS = [0, 5]
N_TEST = 450  # digits' test split: 25% of 1,797
SIZE = (1280, 720)  # animate's default frame size


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The demo's folder: run/ and enriched/ (with the film)."""
    folder = tmp_path_factory.mktemp("demo") / "explorer-demo"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_module, "TRAINING", TRAINING)
        assert demo_module.demo(folder, show=False, progress=False) == folder
    return folder


def test_demo_writes_the_run_the_enriched_dataset_and_the_film(made):
    assert [checkpoint.step for checkpoint in runs.list_checkpoints(made / "run")] == STEPS
    result = output.read(made / "enriched")
    assert result.default.num_rows == N_TEST
    timeline = result.table("timeline")
    assert timeline.num_rows == N_TEST * len(STEPS)
    assert sorted(set(timeline["step"])) == STEPS
    assert [path.name for path in result.animations] == ["animation.gif", "animation.mp4"]
    # one frame per checkpoint, in both films
    with Image.open(made / "enriched" / "animation.gif") as gif:
        assert (gif.n_frames, gif.size) == (len(STEPS), SIZE)
    with imageio.get_reader(made / "enriched" / "animation.mp4") as mp4:
        assert mp4.count_frames() == len(STEPS)
        assert mp4.get_data(0).shape == (SIZE[1], SIZE[0], 3)


def test_show_serves_the_demo_table(made):
    viewer = show(made / "enriched")
    try:
        with urllib.request.urlopen(f"{viewer.url}api/table/", timeout=60) as response:
            table = json.load(response)
    finally:
        viewer.close()
    dataset = datasets.load_from_disk(str(made / "enriched" / "default"))
    columns = {column["name"]: column for column in table["columns"]}
    assert list(columns) == dataset.column_names
    assert columns["label"]["values"] == dataset["label"]
    np.testing.assert_allclose(columns["outlier_score_ft"]["values"], dataset["outlier_score_ft"])
    assert columns["embedding_ft"]["dtype"]["name"] == "Embedding"


def test_animate_gives_the_demo_film_again(made, tmp_path):
    # the demo's film is animate's with its defaults: the same OUT gives the same bytes
    film = animate(made / "enriched", tmp_path / "film.gif", progress=False)
    assert Path(film).read_bytes() == (made / "enriched" / "animation.gif").read_bytes()
    shorter = animate(made / "enriched", tmp_path / "small.gif", size=(640, 360), progress=False)
    with Image.open(shorter) as gif:
        assert (gif.n_frames, gif.size) == (len(STEPS), (640, 360))


def test_publish_takes_the_film_and_every_table(made, tmp_path):
    repo = Path(publish(made / "enriched", "someone/explorer-demo", folder=tmp_path / "repo"))
    for name in ("animation.gif", "animation.mp4"):
        assert (repo / name).read_bytes() == (made / "enriched" / name).read_bytes()
    card = (repo / "README.md").read_text(encoding="utf-8")
    assert "(animation.gif)" in card
    default = datasets.load_dataset("parquet", data_dir=str(repo / "data" / "default"))["train"]
    assert default.num_rows == N_TEST
    timeline = datasets.load_dataset("parquet", data_dir=str(repo / "data" / "timeline"))
    assert timeline["train"].num_rows == N_TEST * len(STEPS)
    assert json.loads((repo / "run.json").read_text())["dataset"]["num_rows"] == N_TEST
