"""data.load on the built-in sources: what comes back, row for row."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

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

    train = data.load("fashion-mnist", split="train", limit=3, data_dir=folder)
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
