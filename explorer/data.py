"""Where the images come from: every source becomes a `datasets.Dataset` of `image` and `label`.

Sources, tried in this order:

- `digits`: scikit-learn's built-in 8x8 digits (offline), split 75/25 into train/test;
- `fashion-mnist`: the IDX files of Debian's `dataset-fashion-mnist` (or `data_dir`), else the Hub;
- a folder saved with `save_to_disk` (a Dataset or a DatasetDict);
- a local image folder: class sub-folders, or files plus `metadata.csv` (datasets' imagefolder);
- anything else is a Hub dataset id, loaded with `datasets.load_dataset`.

The result always has an `image` column (`datasets.Image`) and, when the source has labels,
a `label` column (`datasets.ClassLabel`); other columns are dropped. A `limit` keeps a seeded
sample stratified by label (`sample_rows`), or the first rows with `sample="first"`.
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import numpy as np
from PIL import Image

from explorer import offline
from explorer.errors import ExplorerError

IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist")
DIGITS_TEST_FRACTION = 0.25
SAMPLES = ("random", "first")
SAMPLE_SEED = 0  # fixed: finetune and build draw the same rows for the same arguments


class Loaded(NamedTuple):
    """What `load_with_rows` returns: the dataset and the source rows it holds."""

    dataset: datasets.Dataset
    rows: list[int] | None  # rows of the source split, ascending; None: all of it, in order


def load(
    source: str | Path,
    split: str | None = None,
    limit: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | Path | None = None,
    sample: str = "random",
    seed: int = SAMPLE_SEED,
) -> datasets.Dataset:
    """Load one split of `source` as a Dataset with `image` (and `label` where there is one).

    `split` defaults to `test` where the source has one, else its only split. `limit` keeps N
    rows: with `sample="random"` (the default) a seeded sample stratified by label (see
    `sample_rows`), with `sample="first"` the first N. Raises ExplorerError for a source that
    does not exist or has no images. `load_with_rows` also says which source rows were taken.
    """
    return load_with_rows(
        source, split, limit, image_column, label_column, data_dir, sample=sample, seed=seed
    ).dataset


def load_with_rows(
    source: str | Path,
    split: str | None = None,
    limit: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | Path | None = None,
    sample: str = "random",
    seed: int = SAMPLE_SEED,
) -> Loaded:
    """`load`, returning Loaded(dataset, rows): `rows` are the indices in the source split of
    the rows kept, ascending (None without a `limit`, or when it covers the whole split)."""
    if limit is not None and limit < 1:
        raise ExplorerError(f"--limit must be at least 1, not {limit}")
    if sample not in SAMPLES:
        raise ExplorerError(f"--sample must be one of {', '.join(SAMPLES)}, not {sample!r}")
    source = str(source)
    local = read_fashion_mnist(data_dir) if source in FASHION_MNIST_NAMES else {}
    if local:
        # Only the rows asked for become PNGs: encoding all 70,000 takes seconds.
        split = _split_key(local, split, source)
        images, labels = local[split]
        rows = _rows(len(labels), limit, labels, sample, seed)
        if rows is not None:
            images, labels = images[rows], labels[rows]
        dataset = _from_arrays(images, labels, FASHION_MNIST_CLASSES, split)
        image_column, label_column = _find_columns(dataset, source, image_column, label_column)
    else:
        dataset = _load_any(source, split, data_dir)
        image_column, label_column = _find_columns(dataset, source, image_column, label_column)
        labels = _labels_for_sampling(dataset, label_column) if limit is not None else None
        rows = _rows(dataset.num_rows, limit, labels, sample, seed)
        if rows is not None:
            dataset = dataset.select(rows)
    dataset = _normalise_columns(dataset, image_column, label_column)
    return Loaded(dataset, None if rows is None else [int(row) for row in rows])


def sample_rows(
    num_rows: int,
    n: int,
    labels: Sequence | np.ndarray | None = None,
    *,
    sample: str = "random",
    seed: int = SAMPLE_SEED,
) -> np.ndarray:
    """Which `n` of `num_rows` rows to keep: their indices, ascending (all rows when n >= num_rows).

    sample `first`: rows 0..n-1. sample `random`: a sample drawn with `seed`; with `labels`
    (one per row, any hashable values) it is stratified: each label gets its share of n (largest
    remainders), and every label at least one row when n is at least the number of labels.
    The same arguments always give the same rows.
    """
    if n >= num_rows:
        return np.arange(num_rows)
    if sample == "first":
        return np.arange(n)
    if sample != "random":
        raise ExplorerError(f"--sample must be one of {', '.join(SAMPLES)}, not {sample!r}")
    rng = np.random.default_rng(seed)
    codes = _label_codes(labels) if labels is not None else None
    if codes is None or len(codes) != num_rows:
        return np.sort(rng.choice(num_rows, size=n, replace=False))
    classes, counts = np.unique(codes, return_counts=True)
    share = n * counts / num_rows
    take = np.floor(share).astype(int)
    # the rows the floors left over go to the largest remainders (ties: the lower label)
    take[np.argsort(take - share, kind="stable")[: n - take.sum()]] += 1
    if n >= len(classes):  # a label too rare for a whole row still shows up once
        for missing in np.flatnonzero(take == 0):
            take[np.argmax(take)] -= 1
            take[missing] = 1
    chosen = [
        rng.choice(np.flatnonzero(codes == label), size=count, replace=False)
        for label, count in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _rows(
    num_rows: int, limit: int | None, labels: Any, sample: str, seed: int
) -> np.ndarray | None:
    """The rows `limit` keeps, or None for all of them (no limit, or one the split fits in)."""
    if limit is None or limit >= num_rows:
        return None
    return sample_rows(num_rows, limit, labels, sample=sample, seed=seed)


def _label_codes(labels: Sequence | np.ndarray) -> np.ndarray | None:
    """Labels as integer codes (in order of first appearance); None for unhashable ones."""
    codes: dict = {}
    try:
        return np.array([codes.setdefault(label, len(codes)) for label in labels], dtype=np.int64)
    except TypeError:  # a list per row (multi-label): sampled unstratified
        return None


def _labels_for_sampling(dataset: datasets.Dataset, label_column: str | None) -> list | None:
    # only the label column is read: the images stay on disk
    return None if label_column is None else dataset[label_column][:]


def _load_any(source: str, split: str | None, data_dir: str | Path | None) -> datasets.Dataset:
    if source == "digits":
        return _pick_split(load_digits(), split, source)
    if source in FASHION_MNIST_NAMES:
        return _load_hub(FASHION_MNIST_HUB_ID, split)  # the IDX files are not there
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _pick_split(datasets.load_from_disk(str(path)), split, source)
        return _pick_split(_load_image_folder(path), split, source)
    if path.exists():
        raise ExplorerError(f"{source} is a file: give a dataset folder, a Hub id or 'digits'")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ExplorerError(
            f"dataset folder {source} does not exist: check the path, or give a Hub id or 'digits'"
        )
    return _load_hub(source, split)


def _load_hub(source: str, split: str | None) -> datasets.Dataset:
    offline.use_cache_if_offline()
    try:
        loaded = datasets.load_dataset(source, split=split)
    except Exception as error:  # the hub client raises many types; all mean the same to a user
        raise ExplorerError(
            f"could not load dataset {source!r} from the Hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}); "
            "check the id and your connection, or give a local folder or 'digits'"
        ) from error
    return _pick_split(loaded, split, source)


def _load_image_folder(path: Path) -> datasets.DatasetDict:
    metadata = path / "metadata.csv"
    if metadata.exists():
        _check_metadata_paths(path, metadata)
    try:
        return datasets.load_dataset("imagefolder", data_dir=str(path))
    except Exception as error:
        raise ExplorerError(
            f"no images found in {path}: use class sub-folders of image files, "
            "or image files plus a metadata.csv"
        ) from error


def _check_metadata_paths(root: Path, metadata: Path) -> None:
    """Refuse file names in metadata.csv that point outside the dataset folder."""
    import pandas as pd

    root = root.resolve()
    names = pd.read_csv(metadata).get("file_name", [])
    for name in names:
        if not (root / str(name)).resolve().is_relative_to(root):
            raise ExplorerError(
                f"metadata.csv names {name!r}, which is outside {root}: "
                "file names must be relative paths inside the dataset folder"
            )


def _pick_split(loaded: Any, split: str | None, source: str) -> Any:
    """One split of a DatasetDict (or of any mapping of split names); a Dataset as it is."""
    if isinstance(loaded, datasets.Dataset):
        return loaded
    return loaded[_split_key(loaded, split, source)]


def _split_key(loaded: Any, split: str | None, source: str) -> str:
    """The split of `loaded` (a mapping of split names) that `split` means: None means test
    where there is one, else the only split."""
    if split is None:
        split = "test" if "test" in loaded else (next(iter(loaded)) if len(loaded) == 1 else None)
        if split is None:
            raise ExplorerError(
                f"{source} has splits {', '.join(loaded)} and none is 'test': pick one with --split"
            )
    if split not in loaded:
        raise ExplorerError(f"{source} has no split {split!r}: choose one of {', '.join(loaded)}")
    return split


def _find_columns(
    dataset: datasets.Dataset, source: str, image_column: str | None, label_column: str | None
) -> tuple[str, str | None]:
    """The names of the image column and the label column (None: no labels) of `dataset`."""
    features = dataset.features
    image_column = image_column or next(
        (name for name in IMAGE_COLUMNS if name in features),
        next((n for n, f in features.items() if isinstance(f, datasets.Image)), None),
    )
    if image_column is None or image_column not in features:
        raise ExplorerError(
            f"{source} has no image column (columns: {', '.join(features)}): "
            "name it with --image-column"
        )
    if not _holds_images(features[image_column]):
        raise ExplorerError(
            f"column {image_column!r} of {source} holds {_kind(features[image_column])}, not "
            f"images: name the image column with --image-column (columns: {', '.join(features)})"
        )
    if label_column is not None and label_column not in features:
        raise ExplorerError(
            f"{source} has no column {label_column!r} (columns: {', '.join(features)})"
        )
    label_column = label_column or next(
        (name for name in LABEL_COLUMNS if name in features),
        next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), None),
    )
    if label_column == image_column:
        raise ExplorerError(
            f"column {label_column!r} of {source} cannot be both the images and the labels: "
            "name the label column with --label-column"
        )
    return image_column, label_column


def _holds_images(feature: Any) -> bool:
    """Whether a column of `feature` can be read as images: images, file paths or bytes."""
    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string", "binary", "large_binary")
    return isinstance(feature, dict) and bool(feature) and set(feature) <= {"bytes", "path"}


def _kind(feature: Any) -> str:
    """A column's type in words, for messages."""
    if isinstance(feature, datasets.ClassLabel):
        return "class labels"
    if isinstance(feature, datasets.Value):
        return f"{feature.dtype} values"
    if isinstance(feature, (datasets.List, datasets.LargeList, list)):
        return "lists"
    return f"{type(feature).__name__} values"


def _normalise_columns(
    dataset: datasets.Dataset, image_column: str, label_column: str | None
) -> datasets.Dataset:
    """Keep only the two columns, named `image` (a datasets.Image) and `label` (a ClassLabel)."""
    if label_column is not None and not isinstance(
        dataset.features[label_column], (datasets.ClassLabel, datasets.Value)
    ):
        # several labels per image (a list), or no labels at all: not class labels
        warnings.warn(
            f"label column {label_column!r} holds {_kind(dataset.features[label_column])}, not "
            "one class per image: it is left out (no label, label_str or label scores)",
            stacklevel=4,
        )
        label_column = None
    keep = [image_column] + ([label_column] if label_column else [])
    dataset = dataset.select_columns(keep)
    if image_column != "image":
        dataset = dataset.rename_column(image_column, "image")
    if not isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image())
    if label_column is None:
        return dataset
    if label_column != "label":
        dataset = dataset.rename_column(label_column, "label")
    if not isinstance(dataset.features["label"], datasets.ClassLabel):
        dataset = _to_class_label(dataset)
    return dataset


def _to_class_label(dataset: datasets.Dataset) -> datasets.Dataset:
    """Integer or string labels become a ClassLabel (names sorted; integers keep their value)."""
    values = dataset["label"]
    if all(isinstance(value, (int, np.integer)) for value in values):
        names = [str(i) for i in range(int(max(values)) + 1)]
        return dataset.cast_column("label", datasets.ClassLabel(names=names))
    return dataset.class_encode_column("label")


def _png(pixels: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _from_arrays(
    images: np.ndarray, labels: np.ndarray, names: list[str], split: str | None = None
) -> datasets.Dataset:
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    return datasets.Dataset.from_dict(
        {"image": [_png(pixels) for pixels in images], "label": labels.astype(np.int64)},
        features=features,
        split=split,
    )


def load_digits() -> datasets.DatasetDict:
    """scikit-learn's 1,797 8x8 digits as grayscale PNGs, split 75/25 (stratified, seed 0)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # values run 0..16
    train, test = train_test_split(
        np.arange(len(images)),
        test_size=DIGITS_TEST_FRACTION,
        random_state=0,
        stratify=digits.target,
    )
    names = [str(i) for i in range(10)]
    return datasets.DatasetDict(
        {
            split: _from_arrays(images[rows], digits.target[rows], names, split)
            for split, rows in (("train", np.sort(train)), ("test", np.sort(test)))
        }
    )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def read_fashion_mnist(data_dir: str | Path | None = None) -> dict[str, tuple[np.ndarray, ...]]:
    """Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist) as {split: (images (N, 28, 28)
    uint8, labels (N,))}; empty when they are not there (ExplorerError if `data_dir` was given)."""
    folder = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        found = sorted(folder.glob(f"{prefix}-images-idx3-ubyte*"))
        labels = sorted(folder.glob(f"{prefix}-labels-idx1-ubyte*"))
        if found and labels:
            splits[split] = (_read_idx(found[0]), _read_idx(labels[0]))
    if not splits and data_dir:
        raise ExplorerError(
            f"no Fashion-MNIST IDX files in {folder}: expected t10k-images-idx3-ubyte.gz and "
            "friends (apt-get install dataset-fashion-mnist)"
        )
    return splits


def class_names(dataset: datasets.Dataset) -> list[str] | None:
    """The label names of a loaded dataset, or None when it has no labels."""
    feature = dataset.features.get("label")
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def split_name(dataset: datasets.Dataset) -> str | None:
    """The split a loaded dataset was taken from (`test`, `train`, ...), where known."""
    return None if dataset.split is None else str(dataset.split)


def same_source(first: str | Path, second: str | Path) -> bool:
    """Whether two dataset sources, as `load` takes them, name the same data: the same folder,
    the same Hub id or built-in name (either spelling of fashion-mnist)."""
    first, second = str(first), str(second)
    if first in FASHION_MNIST_NAMES and second in FASHION_MNIST_NAMES:
        return True
    paths = Path(first).expanduser(), Path(second).expanduser()
    if paths[0].exists() and paths[1].exists():
        return paths[0].resolve() == paths[1].resolve()
    return first == second
