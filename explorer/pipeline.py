"""`explorer.build`: a dataset and two models, or every checkpoint of a run, in; one OUT folder out.

Read top to bottom: `build` takes the settings, `build_with` is the pipeline, and each of its
steps follows it, in order:

1. check the settings (`explorer.config.BuildConfig`) and whether OUT may be replaced;
2. load the images and decode them once (`_load_images`);
3. embed each model or checkpoint (`explorer.cache.Embedder`, which caches a checkpoint's
   embeddings beside it; under `accelerate launch` the processes share this step,
   `explorer.distributed.embed_share`), and the reference set the scores are measured
   against (`explorer.reference`, `_load_reference`: the main process embeds it);
4. compute each embedding set's geometry (`explorer.geometry`): one k-NN graph and the
   searches against the reference, then the outlier score, nearest neighbour, PCA (aligned
   onto the previous set) and UMAP;
5. the review's columns (`_review`: the combined outlier score of the embedding views and
   the images' own pixel properties (`explorer.properties`), near-duplicates, leaks),
   assemble the tables (`explorer.enrich`, `explorer.predictions`) and write OUT (`_write`).

OUT holds:

- `default/`: one row per image (see `explorer.columns.DEFAULT`);
- `timeline/`, `training_log/`: with `run=` only, one row per image per checkpoint, and the loss;
- `checkpoints/`: with `run=` only, one row per checkpoint (`explorer.trajectory`);
- `run.json`: inputs, versions, parameters and per-stage timings (`_record`).

OUT is written as `OUT.partial/` and renamed into place at the end (`explorer.files`), so a
killed build leaves the previous OUT whole.
"""

from __future__ import annotations

import json
import platform
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import torch

from explorer import (
    data,
    distributed,
    duplicates,
    dynamics,
    embed,
    enrich,
    files,
    outliers,
    output,
    predictions,
    projection,
    properties,
    runs,
)
from explorer import reference as references
from explorer.cache import Embedder
from explorer.config import BuildConfig
from explorer.embed import Embedded, ModelFacts
from explorer.errors import ExplorerError
from explorer.geometry import KNN_K, Geometry, geometry, mean_displacements
from explorer.predictions import prediction_columns
from explorer.progress import Progress, quiet_libraries
from explorer.reference import Reference
from explorer.trajectory import Trajectory

MIN_IMAGES = 3  # the fewest a k-NN graph with UMAP makes sense of


def build(
    dataset: str | Path | None = None,
    *,
    out: str | Path,
    foundation: str | Path | None = None,
    finetuned: str | Path | None = None,
    run: str | Path | None = None,
    reference: str | None = None,
    reference_limit: int = references.DEFAULT_LIMIT,
    preset: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    sample: str = "random",
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    pooling: str = "auto",
    knn: str = "exact",
    annoy_trees: int = 100,
    nn_threshold: float | None = None,
    timeline_umap: str = "aligned",
    overwrite: bool = False,
    skip_bad_images: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> datasets.Dataset | None:
    """Embed `dataset` with a foundation and a fine-tuned model (or every checkpoint of `run`)
    and write the enriched tables to the folder `out`.

    Parameters
    ----------
    dataset : str or Path or None, default=None
        A Hub id, an image folder, a `save_to_disk` folder, `digits` or `fashion-mnist`.
    out : str or Path
        The OUT folder to write. An existing one is replaced with `overwrite`, or when the same
        request built it (a resumed build).
    foundation, finetuned : str or Path or None, default=None
        Hub ids or local model folders; both, or neither with `run`.
    run : str or Path or None, default=None
        A folder of `checkpoint-<step>` folders (from `explorer finetune`): every checkpoint is
        embedded; the first serves as foundation, the last as fine-tuned.
    reference : str or None, default=None
        What outlier scores and leaks are measured against (`explorer.reference`):
        `"SRC[:SPLIT]"` (a dataset as `dataset` takes it; SPLIT defaults to train), `"none"`
        (within the reviewed images, as the seeds did), or None: the data `run` was trained
        on, else `dataset`'s train split when another split is reviewed, else none.
    reference_limit : int, default=5000
        Reference images at most: a seeded sample stratified by label.
    preset : {"cifar10", "cifar100", "mnist", "beans"} or None, default=None
        The seed article's dataset and models, for those not given.
    split, limit, sample, image_column, label_column, data_dir
        Which images: see `explorer.data.load`. With `limit`, `sample="random"` (default)
        takes a seeded sample stratified by label, `"first"` the first rows; run.json
        records the source rows taken.
    batch_size : int, default=64
    device : {"auto", "cpu", "cuda"}, default="auto"
        `auto`: CUDA when there is one.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        `bfloat16` or `float16` embed under autocast on a GPU; on the CPU `bfloat16` runs the
        model in bfloat16 (about 1.6x faster where the CPU has AVX512-BF16 or AMX).
    pooling : {"auto", "cls", "mean", "pooler"}, default="auto"
        See `explorer.embed.resolve_pooling`.
    knn : {"exact", "annoy"}, default="exact"
        Blocked exact cosine k-NN, or the seed's Annoy index of `annoy_trees` trees.
    annoy_trees : int, default=100
    nn_threshold : float or None, default=None
        None: `nn_flag` = the image has a near-duplicate (`duplicate_count > 0`). A number:
        `nn_flag = nn_distance < nn_threshold`, on cosine distance (the seed's 0.3 on Annoy's
        angular distance is 0.045 here).
    timeline_umap : {"aligned", "off"}, default="aligned"
        `aligned`: each checkpoint's UMAP starts from the previous one's; `off`: UMAP for the
        first and last checkpoint only.
    overwrite : bool, default=False
        Replace an existing OUT of another request. Only an OUT of explorer build (one with
        run.json) is replaced; any other non-empty folder is refused, and so is an
        `OUT.partial` or `OUT.old` that explorer did not make (`explorer.files`).
    skip_bad_images : bool, default=False
        Drop unreadable images (listed in run.json) instead of failing.
    trust_remote_code : bool, default=False
        Run model code from the Hub.
    progress : bool, default=True
        Progress lines and bars on stderr.

    Returns
    -------
    datasets.Dataset or None
        The default table. Under `accelerate launch` every process embeds its share of the
        checkpoints (or models) and only the main process writes OUT and returns the table;
        the others return None.

    Raises
    ------
    ExplorerError
        For bad settings, a missing dataset or model, unreadable images, or an OUT that holds
        another build (without `overwrite`); nothing is written then.
    """
    config = BuildConfig.with_preset(
        preset,
        dataset=dataset, split=split, limit=limit, sample=sample, image_column=image_column,
        label_column=label_column, foundation=foundation, finetuned=finetuned, run=run,
        reference=reference, reference_limit=reference_limit,
        pooling=pooling, knn=knn, annoy_trees=annoy_trees, nn_threshold=nn_threshold,
        timeline_umap=timeline_umap, skip_bad_images=skip_bad_images, dtype=dtype,
        data_dir=data_dir, batch_size=batch_size, device=device,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
    return build_with(config, out, overwrite=overwrite, progress=progress)


def build_with(
    config: BuildConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> datasets.Dataset | None:
    """`build` from a `BuildConfig`: the pipeline. Parameters and result as for `build`."""
    # 1. The settings, and whether OUT may be replaced
    device = embed.pick_device(config.device)
    embed.check_dtype(config.dtype, device)
    config = replace(config, device=distributed.local_device(device))
    out = Path(out)
    rank, processes = distributed.world()
    if rank == 0:
        files.restore_interrupted(out)
    _refuse_other_output(out, config.request(), overwrite)
    files.check_siblings(out)  # OUT.partial, OUT.old: explorer's own, or left alone
    checkpoints = runs.list_checkpoints(config.run) if config.run is not None else None
    for model in [config.foundation, config.finetuned] if checkpoints is None else []:
        embed.load_config(model, config.trust_remote_code)  # a missing model fails before work

    shown = Progress(progress and rank == 0)
    with quiet_libraries():
        # 2. The images; 3. their embeddings, by every process under a launch
        embedder = Embedder(config, shown)
        first_model = config.foundation if checkpoints is None else checkpoints[0].path
        images, rows, skipped, kept = _load_images(config, embedder, first_model)
        if rank == 0:
            _warn_of_labels(config, images, rows)
        if processes > 1:
            models = [config.foundation, config.finetuned] if checkpoints is None else checkpoints
            distributed.embed_share(embedder, images, models, rank, processes)
            if rank != 0:
                return None
        # 3 (what is not embedded yet, and the reference set), 4 and 5, on the main process
        against = _load_reference(config, embedder, kept, first_model)
        with files.written_in_place(out) as partial:
            if checkpoints is None:
                tables = _two_models(config, embedder, images, against)
            else:
                tables = _timeline(config, embedder, images, checkpoints, against)
            if against is not None:  # the reference's own stages, apart
                for name, seconds in against.embedder.progress.timings.items():
                    shown.timings[f"reference {name}"] = seconds
            _write(tables, partial, shown)
            record = _record(config, images, rows, skipped, tables, shown.timings)
            (partial / output.RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        shown.say(f"wrote {out} in {sum(shown.timings.values()):.1f} s")
        return datasets.load_from_disk(str(out / "default"))


def _refuse_other_output(out: Path, request: dict, overwrite: bool) -> None:
    """An OUT that exists is only rebuilt when explorer made it (run.json) and, without
    --overwrite, when the same request made it: a folder of anything else is never deleted."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not output.is_output(out):
        raise ExplorerError(
            f"{out} already exists and is not an output of explorer build (no "
            f"{output.RUN_RECORD}): pick another --out (--overwrite replaces only those)"
        )
    if overwrite:
        return
    previous = output.read(out).run.get("request")
    if previous is None:
        raise ExplorerError(f"{out} holds an older build: pass --overwrite to replace it")
    changed = sorted(key for key in request if previous.get(key) != request[key])
    if changed:
        raise ExplorerError(
            f"{out} holds another build (its {', '.join(changed)} differ): "
            "pass --overwrite to replace it, or pick another --out"
        )


# ---------------------------------------------------------------------------------------------
# 2. The images
# ---------------------------------------------------------------------------------------------


def _load_images(
    config: BuildConfig, embedder: Embedder, first_model: str | Path
) -> tuple[datasets.Dataset, list[int] | None, list[str], np.ndarray]:
    """The dataset's images, each decoded once for the first model (the pixels are kept for
    embedding); the source rows taken (None: all); the names of the unreadable ones dropped
    with `skip_bad_images`; the source rows of the images kept (int64)."""
    shown = embedder.progress
    with shown.stage("load data"):
        images, rows = data.load_with_rows(
            config.dataset, config.split, config.limit, config.image_column,
            config.label_column, config.data_dir, sample=config.sample,
        )  # fmt: skip
    preprocessing = embed.Preprocessing.from_model(str(first_model))
    skipped: list[str] = []
    kept = np.arange(images.num_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    try:
        embedder.pixels(images, preprocessing)
    except embed.UnreadableImages as error:
        if not config.skip_bad_images:
            raise
        shown.say(f"skipping {len(error.rows)} unreadable image(s): {', '.join(error.names[:5])}")
        bad = set(error.rows)
        images = images.select([row for row in range(images.num_rows) if row not in bad])
        kept = np.delete(kept, error.rows)
        embedder.pixels(images, preprocessing)
        skipped = error.names
    if images.num_rows < MIN_IMAGES:
        raise ExplorerError(f"{images.num_rows} image(s) is too few: give at least {MIN_IMAGES}")
    shown.say(f"{images.num_rows} images from {config.dataset}")
    return images, rows, skipped, kept


@dataclass(frozen=True)
class _Against:
    """The reference set of a build and the embedder of its images (its own pixels, caches
    and stage timings)."""

    reference: Reference
    embedder: Embedder

    def embeddings(self, model: str | runs.Checkpoint) -> np.ndarray:
        return self.embedder.embeddings(model, self.reference.images).vectors


def _load_reference(
    config: BuildConfig, embedder: Embedder, kept: np.ndarray, first_model: str | Path
) -> _Against | None:
    """The reference set (`explorer.reference`), decoded once; None without one."""
    shown = embedder.progress
    choice, line = references.choose(
        config.reference, dataset=config.dataset, split=config.split, run=config.run,
        image_column=config.image_column, label_column=config.label_column,
        data_dir=config.data_dir,
    )  # fmt: skip
    shown.say(line)
    if choice is None:
        return None
    with shown.stage("load reference"):
        reference = references.load(
            choice, config.reference_limit, dataset=config.dataset, split=config.split,
            data_dir=config.data_dir, reviewed_rows=kept,
        )  # fmt: skip
    against = _Against(reference, Embedder(config, Progress(shown.show)))
    preprocessing = embed.Preprocessing.from_model(str(first_model))
    try:
        against.embedder.pixels(reference.images, preprocessing)
    except embed.UnreadableImages as error:
        if not config.skip_bad_images:
            raise ExplorerError(f"reference set: {error}") from None
        shown.say(f"skipping {len(error.rows)} unreadable reference image(s)")
        against = _Against(reference.without(error.rows), against.embedder)
        against.embedder.pixels(against.reference.images, preprocessing)
    shown.say(f"{len(against.reference.rows)} reference images")
    return against


def _scored_labels(images: datasets.Dataset) -> np.ndarray | None:
    """The given labels, int (N,), where cleanlab can score them; None without labels or
    where it cannot (`predictions.unscorable`: -1, a single class; `_warn_of_labels` says)."""
    names = data.class_names(images)
    if names is None:
        return None
    labels = np.asarray(images["label"])
    return None if predictions.unscorable(labels, len(names)) else labels


def _in_sample(
    config: BuildConfig, images: datasets.Dataset, rows: list[int] | None
) -> bool | None:
    """Whether the run's model was trained on some of the images reviewed: from the training
    record of `explorer finetune` (same source, same split, shared rows). None where explorer
    cannot know: two models, or a run without the record."""
    trained = runs.read_training_data(config.run) if config.run is not None else None
    if trained is None:
        return None
    split = config.split or data.split_name(images)
    if not data.same_source(trained["source"], config.dataset) or trained["split"] != split:
        return False
    if trained.get("rows") is None or rows is None:  # all of the split on one side
        return True
    return not set(trained["rows"]).isdisjoint(rows)


def _warn_of_labels(config: BuildConfig, images: datasets.Dataset, rows: list[int] | None) -> None:
    """One line each, before the work: labels cleanlab cannot score, and label scores that
    will be in-sample."""
    names = data.class_names(images)
    if names is None:
        return
    labels = np.asarray(images["label"])
    reason = predictions.unscorable(labels, len(names))
    if reason is not None:
        unnamed = "; the unlabelled images get no label_str" if (labels == -1).any() else ""
        warnings.warn(f"no label_quality or is_label_issue: {reason}{unnamed}", stacklevel=3)
    elif _in_sample(config, images, rows):
        warnings.warn(
            f"{config.run} was trained on these images ({config.dataset}, split "
            f"{config.split or data.split_name(images)}): their label scores are in-sample and "
            "overconfident; review a split it did not train on for honest ones",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------
# 3 and 4. Embeddings and their geometry, per model or checkpoint; 5. the tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """What the embedding and geometry steps give the writer and run.json."""

    default: datasets.Dataset
    models: dict[str, ModelFacts]  # foundation, finetuned
    alignment: dict[str, float]  # mean displacements (`geometry.mean_displacements`)
    review: dict  # the reference and the thresholds of the review columns (`_review`)
    timeline: datasets.Dataset | None = None
    training_log: dict[str, list[float]] | None = None
    checkpoints: list[dict] = field(default_factory=list)  # name, step, epoch, pooling
    checkpoint_table: datasets.Dataset | None = None  # OUT/checkpoints (`Trajectory`)
    label_issues: str | None = None  # the method that made is_label_issue


def _geometry(
    config: BuildConfig,
    embedder: Embedder,
    vectors: np.ndarray,
    previous: Geometry | None = None,
    umap: str = "new",
    against: _Against | None = None,
    model: str | runs.Checkpoint | None = None,
) -> Geometry:
    """`geometry` of `vectors` (by `model`), against the reference's embeddings by it."""
    reference = None if against is None else against.embeddings(model)
    return geometry(
        vectors, previous, knn=config.knn, annoy_trees=config.annoy_trees,
        device=config.device, umap=umap, progress=embedder.progress, reference=reference,
        exclude=None if against is None else against.reference.exclude,
    )  # fmt: skip


def _two_models(
    config: BuildConfig, embedder: Embedder, images: datasets.Dataset, against: _Against | None
) -> _Tables:
    found = embedder.embeddings(config.foundation, images)
    ft = embedder.embeddings(config.finetuned, images)
    found_map = _geometry(config, embedder, found.vectors, against=against, model=config.foundation)
    # The fine-tuned map starts from the foundation's and is aligned onto it: side by side,
    # the two maps share their orientation
    ft_map = _geometry(
        config, embedder, ft.vectors, previous=found_map, umap="continued", against=against,
        model=config.finetuned,
    )  # fmt: skip
    review, reviewed = _review(
        config, embedder, images, against,
        {"foundation": (config.foundation, found, found_map),
         "finetuned": (config.finetuned, ft, ft_map)},
    )  # fmt: skip
    with embedder.progress.stage("training dynamics"):
        k = min(dynamics.DEFAULT_K, found_map.knn_indices.shape[1])
        moved = {"movement": dynamics.movement(found_map.knn_indices, ft_map.knn_indices, k=k)}
        issues = _label_issues(ft, images)
    with embedder.progress.stage("assemble"):
        default = _default_table(
            images, (found, found_map), (ft, ft_map), review,
            {**moved, **({} if issues is None else {"is_label_issue": issues.flags})},
        )  # fmt: skip
    return _Tables(
        default,
        models={"foundation": found.facts, "finetuned": ft.facts},
        alignment=mean_displacements([ft_map.moved]),
        review=reviewed,
        label_issues=None if issues is None else issues.method,
    )


def _label_issues(ft: Embedded, images: datasets.Dataset) -> predictions.LabelIssues | None:
    """A two-model build's is_label_issue and its method (`predictions.label_issues`), as
    `prediction_columns` makes it; None without a head, labels or matching classes."""
    names = data.class_names(images)
    if ft.probabilities is None or names is None or ft.facts.id2label is None:
        return None
    with warnings.catch_warnings():  # prediction_columns warns of unmatched classes already
        warnings.simplefilter("ignore")
        matched = predictions.matched_probabilities(ft.probabilities, ft.facts.id2label, names)
    if matched is None:
        return None
    labels = _scored_labels(images)
    return None if labels is None else predictions.label_issues(labels, matched)


def _timeline(
    config: BuildConfig,
    embedder: Embedder,
    images: datasets.Dataset,
    checkpoints: list[runs.Checkpoint],
    against: _Against | None,
) -> _Tables:
    """Every checkpoint in step order; only the first and last embeddings stay in memory."""
    names = data.class_names(images)
    frames, moves, described = [], [], []
    first = last = None  # (Embedded, Geometry) of the first and the latest checkpoint
    labels = _scored_labels(images)
    trajectory = Trajectory(labels, names, runs.read_log(config.run))  # training dynamics
    for checkpoint in checkpoints:
        embedder.progress.say(f"checkpoint {checkpoint.name}")
        embedded = embedder.embeddings(checkpoint, images)
        if first is not None and embedded.facts.dim != first[0].facts.dim:
            raise ExplorerError(
                f"{checkpoint.name} gives {embedded.facts.dim}-d embeddings, "
                f"{checkpoints[0].name} {first[0].facts.dim}-d: a run's checkpoints must share "
                "an architecture"
            )
        # Without timeline UMAPs the first and last checkpoints still get theirs (OUT/default).
        mapped = config.timeline_umap == "aligned" or checkpoint in (
            checkpoints[0], checkpoints[-1],
        )  # fmt: skip
        previous = None if last is None else last[1]
        shape = _geometry(
            config, embedder, embedded.vectors, previous, "continued" if mapped else "off",
            against, checkpoint,
        )  # fmt: skip
        frames.append(_frame(checkpoint, embedded, shape, names, config.timeline_umap))
        with embedder.progress.stage("training dynamics"):
            frames[-1].update(
                trajectory.add(checkpoint, embedded, shape, frames[-1].get("is_outlier"))
            )
        described.append(
            {"name": checkpoint.name, "step": checkpoint.step, "epoch": checkpoint.epoch,
             "pooling": embedded.facts.pooling}
        )  # fmt: skip
        if shape.moved is not None:
            moves.append(shape.moved)
        first = first or (embedded, shape)
        last = (embedded, shape)
    review, reviewed = _review(
        config, embedder, images, against,
        {"foundation": (checkpoints[0], *first), "finetuned": (checkpoints[-1], *last)},
    )  # fmt: skip
    with embedder.progress.stage("training dynamics"):
        per_image, issue_method = trajectory.image_columns()
        checkpoint_table = trajectory.checkpoint_table()
    with embedder.progress.stage("assemble"):
        class_label = datasets.ClassLabel(names=names) if names else None
        timeline = enrich.columns_table(
            {name: np.concatenate([frame[name] for frame in frames]) for name in frames[0]},
            class_label,
        )
        timeline = timeline.cast_column("epoch", datasets.Value("float32"))
        default = _default_table(images, first, last, review, per_image)
    return _Tables(
        default,
        models={"foundation": first[0].facts, "finetuned": last[0].facts},
        alignment=mean_displacements(moves),
        review=reviewed,
        timeline=timeline,
        training_log=runs.read_log(config.run),
        checkpoints=described,
        checkpoint_table=checkpoint_table,
        label_issues=issue_method,
    )


def _frame(
    checkpoint: runs.Checkpoint,
    embedded: Embedded,
    shape: Geometry,
    class_names: list[str] | None,
    timeline_umap: str,
) -> dict[str, np.ndarray]:
    """One checkpoint's rows of the timeline table, one per image."""
    n = len(embedded.vectors)
    frame = {
        "row": np.arange(n),
        "step": np.full(n, checkpoint.step),
        "epoch": np.full(n, np.nan if checkpoint.epoch is None else checkpoint.epoch),
        "pca_x": shape.pca[:, 0],
        "pca_y": shape.pca[:, 1],
        "outlier_score": shape.outlier_score,
        "is_outlier": outliers.combined_scores([shape.view])[1],
        "nn_id": shape.knn_indices[:, 0],
        "nn_distance": shape.knn_distances[:, 0],
    }
    if timeline_umap == "aligned":
        frame["umap_x"], frame["umap_y"] = shape.umap[:, 0], shape.umap[:, 1]
    predicted = prediction_columns(embedded.probabilities, embedded.facts.id2label, class_names)
    if "pred_label" in predicted:
        frame["pred_label"] = predicted["pred_label"]
    return frame


def _review(
    config: BuildConfig,
    embedder: Embedder,
    images: datasets.Dataset,
    against: _Against | None,
    views: dict[str, tuple[str | runs.Checkpoint, Embedded, Geometry]],
) -> tuple[dict[str, np.ndarray], dict]:
    """What a reviewer looks for, as columns of OUT/default: the combined outlier score, the
    near-duplicate groups (`explorer.duplicates`, in the view that tells edited copies from
    other images best), `nn_flag`, and against a reference its nearest image and the leaks.
    Also run.json's `reference` and `review` (the thresholds).

    views: {"foundation": ..., "finetuned": ...}, each (model, its embeddings, their geometry).
    """
    with embedder.progress.stage("near-duplicates"):
        # each view's threshold is capped by the reference's own nearest-neighbour distances
        calibrations = {
            name: _near_threshold(config, images, embedded.vectors, model, shape.view[1][:, 0])
            for name, (model, embedded, shape) in views.items()
        }
        view = duplicates.best_view(calibrations)
        model, _, shape = views[view]
        calibration = calibrations[view]
        pixels = _pixels(embedder, images, model)
        hashes, signatures = duplicates.pixel_hashes(pixels), duplicates.pixel_signatures(pixels)
        if against is None:  # the set is its own reference, as for the outlier scores
            base, base_nearest = signatures, shape.knn_indices[:, 0]
        else:
            reference_pixels = _pixels(against.embedder, against.reference.images, model)
            base = duplicates.pixel_signatures(reference_pixels)
            base_nearest = shape.reference_own_indices[:, 0]
        alike = duplicates.pixel_threshold(base, base_nearest)
        near_pairs = duplicates.near(
            shape.knn_distances,
            calibration,
            duplicates.correlations(signatures, signatures, shape.knn_indices) >= alike,
        )
        group, count = duplicates.groups(shape.knn_indices, near_pairs, hashes)
    with embedder.progress.stage("image properties"):
        pixel_view = _property_view(images, against, embedder.progress.show)
    score, is_outlier, cut = outliers.combined_scores(
        [part.view for _, _, part in views.values()] + [pixel_view]
    )
    nn_distance = views["finetuned"][2].knn_distances[:, 0]
    columns = {
        "outlier_score": score,
        "is_outlier": is_outlier,
        "outlier_score_pixels": outliers.outlier_scores(
            pixel_view[0], reference_distances=pixel_view[1]
        ),
        "nn_flag": count > 0 if config.nn_threshold is None else nn_distance < config.nn_threshold,
        "duplicate_group": group,
        "duplicate_count": count,
    }
    calibrated = {
        name: {key: None if np.isinf(value) else value for key, value in asdict(found).items()}
        for name, found in calibrations.items()
    }
    record = {
        "reference": None if against is None else against.reference.record(),
        "review": {
            "near_duplicate_view": view,  # foundation or finetuned: nn_reference_* are in it
            "near_duplicate_threshold": calibration.threshold,  # cosine distance, in that view
            # or nearer than its from_copies where the pictures correlate above this
            "near_duplicate_pixel_correlation": alike,
            "near_duplicate_calibration": calibrated,  # per view: from copies, cap, caught
            "near_duplicate_calibration_images": len(duplicates.calibration_rows(len(hashes))),
            "outlier_threshold_z": cut,  # is_outlier: combined robust z above it
            "outlier_quantile": outliers.OUTLIER_QUANTILE,
        },
    }
    if against is not None:
        nearest, distance = shape.reference_indices[:, 0], shape.reference_distances[:, 0]
        near_nearest = duplicates.near(
            distance, calibration, duplicates.correlations(signatures, base, nearest) >= alike
        )
        columns["nn_reference_id"] = against.reference.rows[nearest]
        columns["nn_reference_distance"] = distance
        columns["is_leak"] = duplicates.leaks(
            near_nearest,
            hashes,
            duplicates.pixel_hashes(reference_pixels),
            against.reference.exclude >= 0,
        )
    return columns, record


def _property_view(
    images: datasets.Dataset, against: _Against | None, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The pixel-property view (`explorer.properties`): the reviewed images' k-NN distances to
    the reference's properties (leave-one-out), and the reference's own; without a reference,
    the reviewed images' among themselves, twice. The images are decoded again as stored, not
    taken from the model's resized pixels: blur and noise are measured at their own size."""
    mine = properties.image_properties(
        _each_image(images), count=images.num_rows, progress=progress
    )
    if against is None:
        return properties.property_distances(mine)
    reference = against.reference.images
    theirs = properties.image_properties(
        _each_image(reference), count=reference.num_rows, progress=progress
    )
    return properties.property_distances(mine, theirs, exclude=against.reference.exclude)


def _each_image(images: datasets.Dataset) -> Iterator:
    """The PIL images of `images`, decoded a batch at a time rather than all at once."""
    for batch in images.select_columns(["image"]).iter(batch_size=256):
        yield from batch["image"]


def _near_threshold(
    config: BuildConfig,
    images: datasets.Dataset,
    vectors: np.ndarray,
    model: str | runs.Checkpoint,
    neighbour_distances: np.ndarray,
) -> duplicates.Calibration:
    """The near-duplicate distance in `model`'s view, calibrated on edited copies of a seeded
    sample of the images (`duplicates.near_threshold`)."""
    rows = duplicates.calibration_rows(images.num_rows)
    copies = duplicates.edited_copies(images.select(rows)["image"])
    table = datasets.Dataset.from_dict(
        {"image": copies}, features=datasets.Features({"image": datasets.Image()})
    )
    # embedded as they are, not through the cache: a few hundred copies are not worth a file
    path = str(model.path if isinstance(model, runs.Checkpoint) else model)
    preprocessing = embed.Preprocessing.from_model(path)
    edited = embed.embed_model(
        path, embed.prepare_pixels(table, preprocessing, progress=False), preprocessing,
        device=config.device, pooling=config.pooling, batch_size=config.batch_size,
        dtype=config.dtype, trust_remote_code=config.trust_remote_code, progress=False,
    )  # fmt: skip
    return duplicates.near_threshold(vectors[rows], edited.vectors, neighbour_distances)


def _pixels(
    embedder: Embedder, images: datasets.Dataset, model: str | runs.Checkpoint
) -> np.ndarray:
    """The decoded pixels of `images` for `model`, as the embedder keeps them (uint8)."""
    path = model.path if isinstance(model, runs.Checkpoint) else model
    return embedder.pixels(images, embed.Preprocessing.from_model(str(path)))[0].numpy()


def _default_table(
    images: datasets.Dataset,
    foundation: tuple[Embedded, Geometry],
    finetuned: tuple[Embedded, Geometry],
    review: dict[str, np.ndarray],
    dynamics_columns: dict[str, np.ndarray] | None = None,
) -> datasets.Dataset:
    """OUT/default: the images beside both embeddings, their geometry, the review's columns
    (`_review`), the predictions and the training dynamics (`dynamics_columns`, whose
    `is_label_issue`, where given, replaces the one made from the fine-tuned model alone)."""
    (found, found_map), (ft, ft_map) = foundation, finetuned
    columns = {
        "embedding_foundation": found.vectors,
        "embedding_ft": ft.vectors,
        "outlier_score_found": found_map.outlier_score,
        "outlier_score_ft": ft_map.outlier_score,
        "nn_distance": ft_map.knn_distances[:, 0],
        **review,
        "umap_found_x": found_map.umap[:, 0],
        "umap_found_y": found_map.umap[:, 1],
        "umap_ft_x": ft_map.umap[:, 0],
        "umap_ft_y": ft_map.umap[:, 1],
        "pca_found_x": found_map.pca[:, 0],
        "pca_found_y": found_map.pca[:, 1],
        "pca_ft_x": ft_map.pca[:, 0],
        "pca_ft_y": ft_map.pca[:, 1],
    }
    names = data.class_names(images)
    labels = _scored_labels(images)
    dynamics_columns = dynamics_columns or {}
    with warnings.catch_warnings():
        if "is_label_issue" in dynamics_columns:  # the fallback warned of is not used
            warnings.filterwarnings("ignore", message="cleanlab's find_label_issues cannot run")
        columns.update(prediction_columns(ft.probabilities, ft.facts.id2label, names, labels))
    columns.update(dynamics_columns)
    return enrich.enriched_table(images, columns, ft_map.knn_indices[:, 0])


# ---------------------------------------------------------------------------------------------
# 5. Writing OUT
# ---------------------------------------------------------------------------------------------


def _write(tables: _Tables, folder: Path, shown: Progress) -> None:
    """The tables into `folder`: timeline and training log first, the default table last."""
    if tables.timeline is not None:
        with shown.stage("write timeline"):
            enrich.save(tables.timeline, folder / "timeline")
    if tables.training_log and tables.training_log["step"]:
        # datasets cannot load back an empty table: a run without a log gets none
        with shown.stage("training log"):
            enrich.save(datasets.Dataset.from_dict(tables.training_log), folder / "training_log")
    if tables.checkpoint_table is not None:
        with shown.stage("write checkpoints"):
            enrich.save(tables.checkpoint_table, folder / "checkpoints")
    with shown.stage("write default"):
        enrich.save(tables.default, folder / "default")


def _record(
    config: BuildConfig,
    images: datasets.Dataset,
    rows: list[int] | None,
    skipped: list[str],
    tables: _Tables,
    timings: dict[str, float],
) -> dict:
    """run.json: what was asked, what was read, the models, the parameters, timings, versions."""
    import explorer

    return {
        "explorer_version": explorer.__version__,
        "request": config.request(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "source": config.dataset,
            "split": config.split,
            "limit": config.limit,
            "sample": config.sample,
            "sample_seed": data.SAMPLE_SEED,
            "rows": rows,  # the source rows taken, before unreadable ones were dropped
            "num_rows": images.num_rows,
            "labels": data.class_names(images),
            # the run's model was trained on some of these images (None: cannot know)
            "in_sample": _in_sample(config, images, rows),
        },
        "skipped_images": skipped,
        "models": {role: asdict(facts) for role, facts in tables.models.items()},
        "run": config.run,
        "checkpoints": tables.checkpoints,
        "parameters": {
            "k": outliers.DEFAULT_K,
            "knn_neighbors": KNN_K,
            **config.parameters(),
            "umap_neighbors": projection.UMAP_NEIGHBORS,
        },
        "alignment": tables.alignment,
        "label_issues": {"method": tables.label_issues},  # what made is_label_issue
        **tables.review,
        "timings": timings,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import cleanlab
    import sklearn
    import transformers
    import umap

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "cleanlab": cleanlab.__version__,
        "umap-learn": umap.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }
