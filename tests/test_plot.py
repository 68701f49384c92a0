"""`explorer.plot`: the training curves drawn from a synthetic OUT folder's tables.

The OUT folder is written here by hand (`save_to_disk` per table, a run.json), so each line's
data can be checked against values this file chose.
"""

from __future__ import annotations

import json
import math
from importlib import import_module
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from explorer.errors import ExplorerError
from explorer.plot import TITLES, curves_figure, plot

plot_module = import_module("explorer.plot")  # the module; explorer.plot is the function

NAN = math.nan
CLASS_NAMES = ["cat", "dog", "bird"]
LOG = {
    "step": [5.0, 10.0, 10.0, 15.0, 20.0, 20.0],
    "epoch": [0.25, 0.5, 0.5, 0.75, 1.0, 1.0],
    "loss": [2.0, 1.5, NAN, 1.0, 0.75, NAN],  # the eval rows log no training loss
    "learning_rate": [1e-4, 8e-5, NAN, 4e-5, 1e-5, NAN],
    "eval_loss": [NAN, NAN, 1.25, NAN, NAN, 0.875],
    "eval_accuracy": [NAN, NAN, 0.5, NAN, NAN, 0.625],
}
CHECKPOINTS = {
    "step": [0, 10, 20],
    "epoch": [0.0, 0.5, 1.0],
    "loss": [NAN, 1.5, 0.75],
    "accuracy": [0.25, 0.5, 0.75],
    # bird is absent from the data at step 0's evaluation: NaN, dropped from its line
    "per_class_accuracy": [[0.0, 0.5, NAN], [0.5, 0.25, 0.75], [1.0, 0.5, 0.75]],
    "knn_accuracy": [0.375, 0.5, 0.875],
    "class_separation": [-0.125, 0.0625, 0.25],
    "mean_outlier_score": [0.5, 0.5, 0.5],
    "outliers": [1, 0, 0],
    "label_issues": [2, 1, 0],
    "movement": [NAN, 0.5, 0.25],
}
CHECKPOINT_FEATURES = {
    "step": datasets.Value("int64"),
    "per_class_accuracy": datasets.List(datasets.Value("float32")),
    "outliers": datasets.Value("int64"),
    "label_issues": datasets.Value("int64"),
}


def write_out(folder: Path, *, log: dict | None = LOG, checkpoints: dict | None = CHECKPOINTS,
              class_names: list[str] = CLASS_NAMES) -> Path:  # fmt: skip
    """An OUT folder holding run.json, a small default table and the given tables."""
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"parameters": {"k": 10}}))
    n = 2 * len(class_names)
    default = {
        "image": [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(n)],
        "label": [i % len(class_names) for i in range(n)],
    }
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)}
    save(folder / "default", default, features)
    if log is not None:
        save(folder / "training_log", log, {})
    if checkpoints is not None:
        save(folder / "checkpoints", checkpoints, CHECKPOINT_FEATURES)
    return folder


def save(path: Path, columns: dict, features: dict) -> None:
    """Save `columns` as a table; float32 for every column `features` does not name."""
    named = {name: features.get(name, datasets.Value("float32")) for name in columns}
    datasets.Dataset.from_dict(columns, features=datasets.Features(named)).save_to_disk(path)


def panels(figure) -> dict:
    """The figure's axes by title."""
    return {ax.get_title(loc="left"): ax for ax in figure.axes}


def line(ax, label: str):
    (found,) = [line for line in ax.get_lines() if line.get_label() == label]
    return found


def as_float32(values: list) -> np.ndarray:
    """What the table stores (float32), as the float64 the figure holds."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return write_out(tmp_path / "out")


def test_png_is_written_whole_at_the_figure_size(out: Path, tmp_path: Path):
    target = tmp_path / "plots" / "curves.png"
    assert plot(out, target, width=6.0, dpi=50) == target
    with Image.open(target) as image:
        assert image.format == "PNG"
        # 6 inches wide, four panels of 2.5 inches, at 50 dpi
        assert image.size == (300, 4 * 125)
    assert sorted(p.name for p in target.parent.iterdir()) == ["curves.png"]  # no partial file


def test_panels_carry_the_tables_values(out: Path):
    figure = curves_figure(out)
    axes = panels(figure)
    assert list(axes) == list(TITLES.values())
    steps = np.array(CHECKPOINTS["step"], dtype=np.float64)

    knn = line(axes[TITLES["knn_accuracy"]], "k-NN")
    np.testing.assert_array_equal(knn.get_xdata(), steps)
    np.testing.assert_array_equal(knn.get_ydata(), as_float32(CHECKPOINTS["knn_accuracy"]))
    separation = line(axes[TITLES["class_separation"]], "silhouette")
    assert list(separation.get_ydata()) == list(as_float32(CHECKPOINTS["class_separation"]))

    loss = axes[TITLES["loss"]]
    np.testing.assert_array_equal(line(loss, "train").get_xdata(), [5, 10, 15, 20])
    np.testing.assert_array_equal(line(loss, "train").get_ydata(), [2.0, 1.5, 1.0, 0.75])
    np.testing.assert_array_equal(line(loss, "eval").get_xdata(), [10, 20])
    np.testing.assert_array_equal(line(loss, "eval").get_ydata(), [1.25, 0.875])

    accuracy = axes[TITLES["accuracy"]]
    overall = line(accuracy, "overall")
    np.testing.assert_array_equal(overall.get_ydata(), as_float32(CHECKPOINTS["accuracy"]))
    np.testing.assert_array_equal(line(accuracy, "eval").get_ydata(), [0.5, 0.625])
    per_class = [line for line in accuracy.get_lines() if str(line.get_gid()).startswith("class:")]
    assert [line.get_label() for line in per_class] == CLASS_NAMES
    table = as_float32(CHECKPOINTS["per_class_accuracy"])  # (checkpoints, classes)
    for k, class_line in enumerate(per_class):
        kept = ~np.isnan(table[:, k])
        np.testing.assert_array_equal(class_line.get_xdata(), steps[kept])
        np.testing.assert_array_equal(class_line.get_ydata(), table[kept, k])
    assert len(per_class[2].get_xdata()) == 2  # bird's NaN at step 0 is dropped
    legend = [text.get_text() for text in accuracy.get_legend().get_texts()]
    assert legend == ["overall", "eval", *CLASS_NAMES]


def test_absent_data_leaves_its_panels_out(tmp_path: Path):
    # No head and no labels: checkpoints has no accuracy, k-NN or separation; no training log.
    bare = {name: CHECKPOINTS[name] for name in ("step", "epoch", "loss", "outliers")}
    out = write_out(tmp_path / "out", log=None, checkpoints=bare)
    axes = panels(curves_figure(out))
    assert list(axes) == [TITLES["loss"]]
    train = line(axes[TITLES["loss"]], "train")
    np.testing.assert_array_equal(train.get_xdata(), [10, 20])  # step 0 logged no loss
    np.testing.assert_array_equal(train.get_ydata(), [1.5, 0.75])


def test_many_classes_keep_their_lines_but_not_their_legend(tmp_path: Path):
    names = [f"c{k}" for k in range(12)]
    checkpoints = {**CHECKPOINTS, "per_class_accuracy": [[0.5] * 12, [0.75] * 12, [1.0] * 12]}
    out = write_out(tmp_path / "out", checkpoints=checkpoints, class_names=names)
    accuracy = panels(curves_figure(out))[TITLES["accuracy"]]
    gids = [line.get_gid() for line in accuracy.get_lines() if line.get_gid()]
    assert gids == [f"class:{name}" for name in names]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["overall", "eval"]


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_format_follows_the_suffix(out: Path, tmp_path: Path, suffix: str, magic: bytes):
    target = plot(out, tmp_path / f"curves{suffix}")
    assert target.read_bytes().startswith(magic)


def test_missing_tables_name_the_fix(tmp_path: Path):
    out = write_out(tmp_path / "out", log=None, checkpoints=None)
    target = tmp_path / "curves.png"
    with pytest.raises(ExplorerError, match="no training_log or checkpoints.*explorer build --run"):
        plot(out, target)
    assert not target.exists()


def test_unknown_suffix_is_refused(out: Path, tmp_path: Path):
    with pytest.raises(ExplorerError, match=r"\.png, \.svg, \.pdf"):
        plot(out, tmp_path / "curves.gif")


def test_a_failed_write_keeps_the_previous_file(out: Path, tmp_path: Path, monkeypatch):
    target = tmp_path / "curves.png"
    target.write_bytes(b"previous")

    def fail(self, path, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(plot_module.Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        plot(out, target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "out"]
