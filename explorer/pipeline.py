"""`explorer.build`: a dataset and two models, or every checkpoint of a run, in; one OUT folder out.

Read top to bottom: `build` takes the settings, `build_with` is the pipeline, and each of its
steps follows it, in order:

1. check the settings (`explorer.config.BuildConfig`) and whether OUT may be replaced;
2. load the images and decode them once (`_load_images`);
3. embed each model or checkpoint (`explorer.cache.Embedder`, which caches a checkpoint's
   embeddings beside it; under `accelerate launch` the processes share this step,
   `explorer.distributed.embed_share`);
4. compute each embedding set's geometry (`explorer.geometry`): one k-NN graph, then the
   outlier score, nearest neighbour, PCA (aligned onto the previous set) and UMAP;
5. assemble the tables (`explorer.enrich`, `explorer.predictions`) and write OUT (`_write`).

OUT holds:

- `default/`: one row per image (see `explorer.columns.DEFAULT`);
- `timeline/`, `training_log/`: with `run=` only, one row per image per checkpoint, and the loss;
- `run.json`: inputs, versions, parameters and per-stage timings (`_record`).

OUT is written as `OUT.partial/` and renamed into place at the end (`explorer.files`), so a
killed build leaves the previous OUT whole.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import torch

from explorer import data, distributed, embed, enrich, files, outliers, output, projection, runs
from explorer.cache import Embedder
from explorer.config import BuildConfig
from explorer.embed import Embedded, ModelFacts
from explorer.errors import ExplorerError
from explorer.geometry import KNN_K, Geometry, geometry, mean_displacements
from explorer.predictions import prediction_columns
from explorer.progress import Progress, quiet_libraries

MIN_IMAGES = 3  # the fewest a k-NN graph with UMAP makes sense of


def build(
    dataset: str | Path | None = None,
    *,
    out: str | Path,
    foundation: str | Path | None = None,
    finetuned: str | Path | None = None,
    run: str | Path | None = None,
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
    nn_threshold: float = 0.3,
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
    nn_threshold : float, default=0.3
        `nn_flag = nn_distance < nn_threshold`, on cosine distance.
    timeline_umap : {"aligned", "off"}, default="aligned"
        `aligned`: each checkpoint's UMAP starts from the previous one's; `off`: UMAP for the
        first and last checkpoint only.
    overwrite : bool, default=False
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
    if not overwrite:
        _refuse_other_output(out, config.request())
    checkpoints = runs.list_checkpoints(config.run) if config.run is not None else None
    for model in [config.foundation, config.finetuned] if checkpoints is None else []:
        embed.load_config(model, config.trust_remote_code)  # a missing model fails before work

    shown = Progress(progress and rank == 0)
    with quiet_libraries():
        # 2. The images; 3. their embeddings, by every process under a launch
        embedder = Embedder(config, shown)
        first_model = config.foundation if checkpoints is None else checkpoints[0].path
        images, rows, skipped = _load_images(config, embedder, first_model)
        if processes > 1:
            models = [config.foundation, config.finetuned] if checkpoints is None else checkpoints
            distributed.embed_share(embedder, images, models, rank, processes)
            if rank != 0:
                return None
        # 3 (what is not embedded yet), 4 and 5, on the main process
        with files.written_in_place(out) as partial:
            if checkpoints is None:
                tables = _two_models(config, embedder, images)
            else:
                tables = _timeline(config, embedder, images, checkpoints)
            _write(tables, partial, shown)
            record = _record(config, images, rows, skipped, tables, shown.timings)
            (partial / output.RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        shown.say(f"wrote {out} in {sum(shown.timings.values()):.1f} s")
        return datasets.load_from_disk(str(out / "default"))


def _refuse_other_output(out: Path, request: dict) -> None:
    """An OUT that exists is only rebuilt without --overwrite when the same request made it."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    previous = output.read(out).run.get("request") if output.is_output(out) else None
    if previous is None:
        raise ExplorerError(f"{out} already exists: pass --overwrite to replace it")
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
) -> tuple[datasets.Dataset, list[int] | None, list[str]]:
    """The dataset's images, each decoded once for the first model (the pixels are kept for
    embedding); the source rows taken (None: all); the names of the unreadable ones dropped
    with `skip_bad_images`."""
    shown = embedder.progress
    with shown.stage("load data"):
        images, rows = data.load_with_rows(
            config.dataset, config.split, config.limit, config.image_column,
            config.label_column, config.data_dir, sample=config.sample,
        )  # fmt: skip
    preprocessing = embed.Preprocessing.from_model(str(first_model))
    skipped: list[str] = []
    try:
        embedder.pixels(images, preprocessing)
    except embed.UnreadableImages as error:
        if not config.skip_bad_images:
            raise
        shown.say(f"skipping {len(error.rows)} unreadable image(s): {', '.join(error.names[:5])}")
        bad = set(error.rows)
        images = images.select([row for row in range(images.num_rows) if row not in bad])
        embedder.pixels(images, preprocessing)
        skipped = error.names
    if images.num_rows < MIN_IMAGES:
        raise ExplorerError(f"{images.num_rows} image(s) is too few: give at least {MIN_IMAGES}")
    shown.say(f"{images.num_rows} images from {config.dataset}")
    return images, rows, skipped


# ---------------------------------------------------------------------------------------------
# 3 and 4. Embeddings and their geometry, per model or checkpoint; 5. the tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """What the embedding and geometry steps give the writer and run.json."""

    default: datasets.Dataset
    models: dict[str, ModelFacts]  # foundation, finetuned
    alignment: dict[str, float]  # mean displacements (`geometry.mean_displacements`)
    timeline: datasets.Dataset | None = None
    training_log: dict[str, list[float]] | None = None
    checkpoints: list[dict] = field(default_factory=list)  # name, step, epoch, pooling


def _geometry(
    config: BuildConfig,
    embedder: Embedder,
    vectors: np.ndarray,
    previous: Geometry | None = None,
    umap: str = "new",
) -> Geometry:
    return geometry(
        vectors, previous, knn=config.knn, annoy_trees=config.annoy_trees,
        device=config.device, umap=umap, progress=embedder.progress,
    )  # fmt: skip


def _two_models(config: BuildConfig, embedder: Embedder, images: datasets.Dataset) -> _Tables:
    found = embedder.embeddings(config.foundation, images)
    ft = embedder.embeddings(config.finetuned, images)
    found_map = _geometry(config, embedder, found.vectors)
    ft_map = _geometry(config, embedder, ft.vectors, previous=found_map)
    with embedder.progress.stage("assemble"):
        default = _default_table(images, (found, found_map), (ft, ft_map), config.nn_threshold)
    return _Tables(
        default,
        models={"foundation": found.facts, "finetuned": ft.facts},
        alignment=mean_displacements([ft_map.moved]),
    )


def _timeline(
    config: BuildConfig,
    embedder: Embedder,
    images: datasets.Dataset,
    checkpoints: list[runs.Checkpoint],
) -> _Tables:
    """Every checkpoint in step order; only the first and last embeddings stay in memory."""
    names = data.class_names(images)
    frames, moves, described = [], [], []
    first = last = None  # (Embedded, Geometry) of the first and the latest checkpoint
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
            config, embedder, embedded.vectors, previous, "continued" if mapped else "off"
        )
        frames.append(_frame(checkpoint, embedded, shape, names, config.timeline_umap))
        described.append(
            {"name": checkpoint.name, "step": checkpoint.step, "epoch": checkpoint.epoch,
             "pooling": embedded.facts.pooling}
        )  # fmt: skip
        if shape.moved is not None:
            moves.append(shape.moved)
        first = first or (embedded, shape)
        last = (embedded, shape)
    with embedder.progress.stage("assemble"):
        class_label = datasets.ClassLabel(names=names) if names else None
        timeline = enrich.columns_table(
            {name: np.concatenate([frame[name] for frame in frames]) for name in frames[0]},
            class_label,
        )
        timeline = timeline.cast_column("epoch", datasets.Value("float32"))
        default = _default_table(images, first, last, config.nn_threshold)
    return _Tables(
        default,
        models={"foundation": first[0].facts, "finetuned": last[0].facts},
        alignment=mean_displacements(moves),
        timeline=timeline,
        training_log=runs.read_log(config.run),
        checkpoints=described,
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
        "nn_id": shape.knn_indices[:, 0],
        "nn_distance": shape.knn_distances[:, 0],
    }
    if timeline_umap == "aligned":
        frame["umap_x"], frame["umap_y"] = shape.umap[:, 0], shape.umap[:, 1]
    predicted = prediction_columns(embedded.probabilities, embedded.facts.id2label, class_names)
    if "pred_label" in predicted:
        frame["pred_label"] = predicted["pred_label"]
    return frame


def _default_table(
    images: datasets.Dataset,
    foundation: tuple[Embedded, Geometry],
    finetuned: tuple[Embedded, Geometry],
    nn_threshold: float,
) -> datasets.Dataset:
    """OUT/default: the images beside both embeddings, their geometry and the predictions."""
    (found, found_map), (ft, ft_map) = foundation, finetuned
    nn_distance = ft_map.knn_distances[:, 0]
    columns = {
        "embedding_foundation": found.vectors,
        "embedding_ft": ft.vectors,
        "outlier_score_found": found_map.outlier_score,
        "outlier_score_ft": ft_map.outlier_score,
        "nn_distance": nn_distance,
        "nn_flag": nn_distance < nn_threshold,
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
    labels = np.asarray(images["label"]) if names is not None else None
    columns.update(prediction_columns(ft.probabilities, ft.facts.id2label, names, labels))
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
