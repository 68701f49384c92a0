"""Against which images is an image odd? The reference set: what the model learned from.

Outlier scores, leaks and the nearest training image are measured against a reference set of
images, not only among the reviewed images themselves (where a cluster of similar odd images
hides itself: they are each other's neighbours). Read top to bottom:

1. `choose`: which set. Given (`SRC[:SPLIT]`, SPLIT `train` when left out, or `none`), else by
   default: for a build from a run, the data the run was trained on (`explorer finetune`
   records it); for two models, the source's `train` split when the reviewed split is another
   one; otherwise none, and the scores stay the seeds' self-referential ones.
2. `load`: a seeded sample of at most `limit` of those images, stratified by label, and which
   reviewed images are among them (same source, split and source row): those are scored
   leave-one-out, never their own neighbour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from explorer import data, runs
from explorer.errors import ExplorerError

NONE = "none"  # `reference="none"`: no reference set
DEFAULT_LIMIT = 5000  # reference images at most: the scale of k-NN distances settles well below
DEFAULT_SPLIT = "train"  # SRC without :SPLIT


@dataclass(frozen=True)
class Choice:
    """Which images make the reference, as `data.load_with_rows` takes them."""

    source: str
    split: str | None  # None: a source without splits (a saved single table)
    why: str  # how it was chosen: given, the run's training data, the train split
    limit: int | None = None  # the training run's own limit (None: the whole split)
    sample: str = "random"  # how the training run sampled its `limit`
    seed: int = data.SAMPLE_SEED
    image_column: str | None = None
    label_column: str | None = None
    data_dir: str | None = None


@dataclass(frozen=True)
class Reference:
    """The reference images and how they relate to the reviewed ones."""

    choice: Choice
    images: datasets.Dataset  # image (and label), at most the reference limit
    rows: np.ndarray  # int64 (R,): their rows in the source split, ascending
    exclude: np.ndarray  # int64 (N,): each reviewed image's position in `images`, or -1
    limit: int  # the reference images asked for at most

    def without(self, positions: list[int]) -> Reference:
        """The same reference without the images at `positions` (unreadable ones)."""
        keep = np.setdiff1d(np.arange(len(self.rows)), positions)
        moved = np.full(len(self.rows), -1, dtype=np.int64)
        moved[keep] = np.arange(len(keep))
        exclude = np.where(self.exclude >= 0, moved[self.exclude.clip(min=0)], -1)
        return Reference(
            self.choice, self.images.select(keep), self.rows[keep], exclude, self.limit
        )

    def record(self) -> dict:
        """run.json's `reference`."""
        return {
            "source": self.choice.source,
            "split": self.choice.split,
            "chosen": self.choice.why,
            "limit": self.limit,  # reference_limit
            "training_limit": self.choice.limit,  # the run's own, where it recorded one
            "num_rows": int(len(self.rows)),
            "shared_with_reviewed": int((self.exclude >= 0).sum()),
        }


def parse(text: str) -> tuple[str, str | None]:
    """`SRC[:SPLIT]` as (source, split); SPLIT is `train` when left out (None for a saved single
    table, which has no splits). A colon followed by a path is part of the source."""
    source, colon, split = text.rpartition(":")
    if not colon or not source or not split or "/" in split or "\\" in split:
        source, split = text, DEFAULT_SPLIT
    if _split_names(source, None) is None:
        split = None
    return source, split


def choose(
    reference: str | None,
    *,
    dataset: str,
    split: str | None,
    run: str | None,
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | None = None,
) -> tuple[Choice | None, str]:
    """The reference for a build of `dataset` (`split`) from `run` or two models.

    reference: `SRC[:SPLIT]`, `none`, or None for the default (see the module's docstring).
    Returns (the choice, or None for no reference; a line saying what was chosen and why).
    """
    reading = {"image_column": image_column, "label_column": label_column, "data_dir": data_dir}
    if reference == NONE:
        return None, "no reference set (reference none): outliers are measured within the set"
    if reference is not None:
        source, ref_split = parse(reference)
        same = _same_source(source, dataset)
        choice = Choice(source, ref_split, "given", **(reading if same else {}))
        return choice, f"reference set: {_name(choice)}"
    if run is not None:
        trained = runs.read_training_data(run)
        if trained is None:
            return None, _no_reference(f"{run} records no training data (explorer-run.json)")
        choice = Choice(
            trained["source"], trained["split"], "the run's training data",
            limit=trained.get("limit"), sample=trained.get("sample", "random"),
            seed=trained.get("seed", data.SAMPLE_SEED), image_column=trained.get("image_column"),
            label_column=trained.get("label_column"), data_dir=trained.get("data_dir"),
        )  # fmt: skip
        return choice, f"reference set: {_name(choice)}, the data the run was trained on"
    names = _split_names(dataset, data_dir)
    reviewed = resolved_split(dataset, split, data_dir)
    if names is None or DEFAULT_SPLIT not in names or reviewed == DEFAULT_SPLIT:
        return None, _no_reference(f"{dataset} has no train split besides the reviewed one")
    choice = Choice(dataset, DEFAULT_SPLIT, "the train split", **reading)
    return choice, f"reference set: {_name(choice)}"


def load(
    choice: Choice,
    limit: int,
    *,
    dataset: str,
    split: str | None,
    data_dir: str | None,
    reviewed_rows: np.ndarray,
) -> Reference:
    """At most `limit` images of `choice` (a seeded sample stratified by label), and which of
    the reviewed images (source rows `reviewed_rows` of `dataset`, `split`) they hold.

    The sample is drawn from the images the run trained on: from the whole split when it
    trained on all of it, else from its own sample.
    """
    if limit < 1:
        raise ExplorerError(f"reference_limit must be at least 1, not {limit}")
    reading = (choice.image_column, choice.label_column, choice.data_dir)
    if choice.limit is None or choice.limit <= limit:
        taken = min(limit, choice.limit) if choice.limit is not None else limit
        sample = choice.sample if choice.limit is not None else "random"
        images, rows = data.load_with_rows(
            choice.source, choice.split, taken, *reading, sample=sample, seed=choice.seed
        )
        rows = np.arange(images.num_rows) if rows is None else np.asarray(rows)
    else:  # a sample of the run's own sample
        trained, trained_rows = data.load_with_rows(
            choice.source, choice.split, choice.limit, *reading, sample=choice.sample,
            seed=choice.seed,
        )  # fmt: skip
        labels = trained["label"] if "label" in trained.column_names else None
        kept = data.sample_rows(trained.num_rows, limit, labels)
        images = trained.select(kept)
        rows = (
            np.arange(trained.num_rows)[kept]
            if trained_rows is None
            else np.asarray(trained_rows)[kept]
        )
    rows = rows.astype(np.int64)
    exclude = np.full(len(reviewed_rows), -1, dtype=np.int64)
    if _same_source(choice.source, dataset) and choice.split == resolved_split(
        dataset, split, data_dir
    ):
        position = np.searchsorted(rows, reviewed_rows).clip(max=len(rows) - 1)
        shared = rows[position] == reviewed_rows
        exclude[shared] = position[shared]
    return Reference(choice, images, rows, exclude, limit)


def resolved_split(source: str, split: str | None, data_dir: str | None = None) -> str | None:
    """The split `data.load` reads for `split`: as given, else test where the source has one,
    else its only split; None for a source without splits (or whose splits are unknown)."""
    if split is not None:
        return split
    names = _split_names(source, data_dir)
    if not names:
        return None
    return "test" if "test" in names else (names[0] if len(names) == 1 else None)


def _split_names(source: str, data_dir: str | None) -> list[str] | None:
    """The splits of `source` as `data.load` sees them; None for a saved single table, or when
    they cannot be found out."""
    if source == "digits" or source in data.FASHION_MNIST_NAMES:
        return ["train", "test"]
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists():
            return list(json.loads((path / "dataset_dict.json").read_text())["splits"])
        if (path / "dataset_info.json").exists():
            return None
        source = str(path)
    try:
        if path.is_dir():
            return list(datasets.get_dataset_split_names("imagefolder", data_dir=source))
        from explorer import offline

        offline.use_cache_if_offline()
        return list(datasets.get_dataset_split_names(source))
    except Exception:  # the Hub client raises many types: the splits are then unknown
        return None


def _same_source(a: str, b: str) -> bool:
    if a == b:
        return True
    return (
        Path(a).expanduser().exists()
        and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    )


def _name(choice: Choice) -> str:
    return choice.source if choice.split is None else f"{choice.source}:{choice.split}"


def _no_reference(why: str) -> str:
    return (
        f"no reference set ({why}): outliers are measured within the set, as the seeds did, "
        "which misses clusters of similar odd images; give reference SRC[:SPLIT] to fix"
    )
