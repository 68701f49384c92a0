"""data.load on the built-in sources: what comes back, row for row; and which rows `limit`
keeps (data.sample_rows)."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from explorer import data
from explorer.errors import ExplorerError


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file as Fashion-MNIST ships it: magic (0, 0, uint8 type, dims), sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_dir(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", 7), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = images, labels
    return tmp_path, arrays


def test_fashion_mnist_from_idx_files_with_split_and_limit(fashion_dir):
    folder, arrays = fashion_dir
    test = data.load("fashion-mnist", data_dir=folder)  # test is the default split
    assert test.num_rows == 5
    assert test.features["label"].names == data.FASHION_MNIST_CLASSES
    images, labels = arrays["t10k"]
    for row in range(5):
        np.testing.assert_array_equal(np.array(test[row]["image"]), images[row])
    assert test["label"][:] == labels.tolist()

    train = data.load("fashion-mnist", split="train", limit=3, data_dir=folder, sample="first")
    assert train.num_rows == 3
    np.testing.assert_array_equal(np.array(train[2]["image"]), arrays["train"][0][2])
    assert train["label"][:] == arrays["train"][1][:3].tolist()


def test_fashion_mnist_bad_split_limit_and_folder(fashion_dir, tmp_path_factory):
    folder, _ = fashion_dir
    with pytest.raises(ExplorerError, match="no split 'validation'"):
        data.load("fashion-mnist", split="validation", data_dir=folder)
    with pytest.raises(ExplorerError, match="at least 1"):
        data.load("fashion-mnist", limit=0, data_dir=folder)
    with pytest.raises(ExplorerError, match="no Fashion-MNIST IDX files"):
        data.load("fashion-mnist", data_dir=tmp_path_factory.mktemp("empty"))


def test_fashion_mnist_limit_encodes_only_the_sampled_rows(fashion_dir):
    folder, arrays = fashion_dir
    images, labels = arrays["train"]
    loaded = data.load_with_rows("fashion-mnist", split="train", limit=4, data_dir=folder)
    rows = loaded.rows
    assert len(rows) == 4 and rows == sorted(rows)
    assert rows == data.sample_rows(7, 4, labels).tolist()
    assert loaded.dataset.num_rows == 4
    assert loaded.dataset["label"][:] == labels[rows].tolist()
    for position, row in enumerate(rows):
        np.testing.assert_array_equal(np.array(loaded.dataset[position]["image"]), images[row])
    # no limit (or one the split fits in): every row, in order, and no rows recorded
    assert data.load_with_rows("fashion-mnist", split="train", data_dir=folder).rows is None
    assert data.load_with_rows("fashion-mnist", "train", limit=7, data_dir=folder).rows is None


SIZES = {"a": 30, "b": 20, "c": 10}  # class sub-folders, read back sorted by class


@pytest.fixture(scope="module")
def sorted_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for name, count in SIZES.items():
        (root / name).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def _counts(dataset) -> dict[str, int]:
    names = dataset.features["label"].names
    return dict(Counter(names[label] for label in dataset["label"]))


def test_limit_samples_every_class_in_proportion(sorted_folder):
    full = data.load(sorted_folder)
    assert full["label"][:] == sorted(full["label"][:])  # the folder comes back class by class
    loaded = data.load_with_rows(sorted_folder, limit=12)
    assert _counts(loaded.dataset) == {"a": 6, "b": 4, "c": 2}
    assert loaded.rows == sorted(loaded.rows)  # the source's order is kept
    taken = full.select(loaded.rows)
    assert loaded.dataset["label"][:] == taken["label"][:]
    assert [np.array(image).tolist() for image in loaded.dataset["image"]] == [
        np.array(image).tolist() for image in taken["image"]
    ]
    # the old behaviour, on request: the first rows, one class
    assert _counts(data.load(sorted_folder, limit=12, sample="first")) == {"a": 12}


def test_sample_is_deterministic_and_first_is_the_old_slice(sorted_folder):
    once = data.load_with_rows(sorted_folder, limit=9)
    again = data.load_with_rows(sorted_folder, limit=9)
    assert once.rows == again.rows
    assert once.dataset["label"][:] == again.dataset["label"][:]
    other_seed = data.load_with_rows(sorted_folder, limit=9, seed=1)
    assert other_seed.rows != once.rows
    first = data.load_with_rows("digits", "test", limit=25, sample="first")
    old = data.load("digits", "test").select(range(25))
    assert first.rows == list(range(25))
    assert first.dataset["label"][:] == old["label"][:]
    assert [image.tobytes() for image in first.dataset["image"]] == [
        image.tobytes() for image in old["image"]
    ]


def test_sample_rows():
    labels = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])
    rows = data.sample_rows(100, 20, labels)
    assert len(set(rows.tolist())) == 20 and (np.diff(rows) > 0).all()
    assert np.bincount(labels[rows]).tolist() == [10, 6, 3, 1]
    # largest remainders; a label too rare for its share still shows up once
    assert np.bincount(labels[data.sample_rows(100, 7, labels)]).tolist() == [3, 2, 1, 1]
    assert np.bincount(labels[data.sample_rows(100, 4, labels)]).tolist() == [1, 1, 1, 1]
    # any hashable labels; the same arguments give the same rows, another seed others
    words = np.array(["cat", "dog"])[(labels >= 2).astype(int)]
    assert data.sample_rows(100, 10, words).tolist() == data.sample_rows(100, 10, words).tolist()
    assert Counter(words[data.sample_rows(100, 10, words)]) == {"cat": 8, "dog": 2}
    assert data.sample_rows(100, 10, seed=1).tolist() != data.sample_rows(100, 10).tolist()
    # without labels: a plain random sample, still sorted
    plain = data.sample_rows(100, 10)
    assert len(set(plain.tolist())) == 10 and (np.diff(plain) > 0).all()
    assert data.sample_rows(100, 3, sample="first").tolist() == [0, 1, 2]
    assert data.sample_rows(5, 9, labels[:5]).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ExplorerError, match="--sample must be one of random, first"):
        data.sample_rows(100, 3, sample="last")
    with pytest.raises(ExplorerError, match="--sample must be one of random, first"):
        data.load("digits", limit=3, sample="last")
