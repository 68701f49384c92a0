"""The enriched tables: numpy columns in, typed `datasets.Dataset` out, saved without loss.

`columns_table` turns numpy columns into a typed table (the timeline is one); `enriched_table`
puts the computed columns beside the images (with `nn_image`, the nearest neighbour's image,
taken from the same table without decoding anything). `save` writes a table whole or not at
all (`explorer.files`), so a killed run never leaves half a table.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from explorer.files import written_in_place

# The order of the default table's columns; names follow the seed article.
DEFAULT_ORDER = [
    "image", "label", "label_str", "embedding_foundation", "embedding_ft",
    "outlier_score", "is_outlier", "outlier_score_found", "outlier_score_ft",
    "outlier_score_pixels",
    "nn_id", "nn_image", "nn_distance", "nn_flag", "duplicate_group", "duplicate_count",
    "nn_reference_id", "nn_reference_distance", "is_leak",
    "umap_found_x", "umap_found_y", "umap_ft_x", "umap_ft_y",
    "pca_found_x", "pca_found_y", "pca_ft_x", "pca_ft_y",
    "pred_label", "pred_prob", "label_quality", "is_label_issue",
    "confidence", "variability", "correctness", "region", "forgetting_events", "learned_step",
    "movement",
]  # fmt: skip


def _feature(name: str, values: np.ndarray, class_label: datasets.ClassLabel | None):
    if name == "pred_label" and class_label is not None:
        return class_label
    if values.ndim == 2:
        return datasets.List(datasets.Value("float32"), length=values.shape[1])
    if values.dtype.kind in "US":
        return datasets.Value("string")
    if values.dtype == bool:
        return datasets.Value("bool")
    if np.issubdtype(values.dtype, np.integer):
        return datasets.Value("int64")
    return datasets.Value("float32")


def columns_table(
    columns: dict[str, np.ndarray], class_label: datasets.ClassLabel | None = None
) -> datasets.Dataset:
    """A Dataset of numpy columns: 2-D float arrays become fixed-length float32 lists,
    `pred_label` becomes `class_label`, other floats float32, integers int64, str string."""
    import pyarrow as pa

    features = datasets.Features(
        {name: _feature(name, values, class_label) for name, values in columns.items()}
    )
    # Straight to Arrow: Dataset.from_dict goes through Python lists, which for two
    # 60,000 x 768 embedding columns took 26 s and 5 GB; this takes 1 s and copies once.
    arrow = {
        name: pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
        if values.ndim == 2
        else pa.array(values)
        for name, values in columns.items()
    }
    return datasets.Dataset(pa.table(arrow).cast(features.arrow_schema))


def self_contained(images: datasets.Dataset) -> datasets.Dataset:
    """Images stored as paths to files (an image folder) get their bytes embedded, so the saved
    table still opens after the source folder moves."""
    from datasets.table import embed_table_storage

    first = images.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))[0]
    if first["image"].get("bytes"):
        return images
    return images.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)


def enriched_table(
    images: datasets.Dataset, columns: dict[str, np.ndarray], nn_id: np.ndarray
) -> datasets.Dataset:
    """The default table: `images` (image, optional label) beside `columns`, plus `label_str`
    and `nn_image` (the image in row `nn_id` of each row). Columns in DEFAULT_ORDER first."""
    images = self_contained(images)
    class_label = images.features.get("label")
    parts = [images]
    if isinstance(class_label, datasets.ClassLabel):
        labels = np.asarray(images["label"])
        if (labels >= 0).any():  # -1 means unlabelled: no name (a split without any: no column)
            named = [class_label.names[label] if label >= 0 else None for label in labels]
            string = datasets.Features({"label_str": datasets.Value("string")})
            parts.append(datasets.Dataset.from_dict({"label_str": named}, features=string))
    else:
        class_label = None
    parts.append(columns_table({**columns, "nn_id": nn_id}, class_label))
    nn_images = images.select_columns(["image"]).select(nn_id).flatten_indices()
    parts.append(nn_images.rename_column("image", "nn_image"))
    table = datasets.concatenate_datasets(parts, axis=1)
    order = [name for name in DEFAULT_ORDER if name in table.column_names]
    return table.select_columns(order + [n for n in table.column_names if n not in order])


def save(table: datasets.Dataset, path: str | Path) -> Path:
    """`save_to_disk` into the folder `path`, through a temporary sibling and a rename."""
    with written_in_place(path) as partial:
        table.save_to_disk(str(partial))
    return Path(path)
