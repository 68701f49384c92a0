"""`explorer.build`: a dataset and two models, or every checkpoint of a run, in; one OUT folder out.

Read top to bottom: presets, then `build`, then its steps. Per embedding set (a model, or a
checkpoint) the work is: embed -> one k-NN graph -> outlier score, nearest neighbour, PCA
(aligned onto the previous set) and UMAP, all from that graph. OUT holds:

- `default/`: one row per image (see `explorer.columns.DEFAULT`);
- `timeline/`, `training_log/`: with `run=` only, one row per image per checkpoint, and the loss;
- `run.json`: inputs, versions, parameters and per-stage timings.

OUT is written as `OUT.partial/` and renamed into place at the end, so a killed build leaves
the previous OUT whole; with `run=`, embeddings are cached beside each checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import torch

from explorer import data, distributed, embed, enrich, neighbors, outliers, projection, runs
from explorer.errors import ExplorerError

# The seed article's datasets and models (need the Hub).
PRESETS = {
    "cifar10": ("cifar10", "google/vit-base-patch16-224-in21k",
                "aaraki/vit-base-patch16-224-in21k-finetuned-cifar10"),
    "cifar100": ("cifar100", "microsoft/swin-base-patch4-window7-224",
                 "MazenAmria/swin-tiny-finetuned-cifar100"),
    "mnist": ("mnist", "google/vit-base-patch16-224-in21k",
              "farleyknight/mnist-digit-classification-2022-09-04"),
    "beans": ("beans", "google/vit-base-patch16-224-in21k", "nateraw/vit-base-beans"),
}  # fmt: skip
KNN_K = 14  # neighbours per image besides itself: UMAP's 15 with self, and cleanlab's 10
CACHE_FOLDER = "explorer-cache"


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
    image_column: str | None = None,
    label_column: str | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    pooling: str = "auto",
    neighbors: str = "exact",
    annoy_trees: int = 100,
    nn_threshold: float = 0.3,
    timeline_umap: str = "aligned",
    overwrite: bool = False,
    skip_bad_images: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> datasets.Dataset:
    """Embed `dataset` with a foundation and a fine-tuned model (or every checkpoint of `run`)
    and write the enriched tables to `out`. Returns the default table.

    dataset: a Hub id, an image folder, a `save_to_disk` folder, `digits` or `fashion-mnist`.
    foundation/finetuned: Hub ids or local model folders. run: a folder of `checkpoint-<step>`
    folders (from `explorer finetune`): the first checkpoint serves as foundation, the last as
    fine-tuned. preset: the seed article's dataset and models. neighbors: `exact` (blocked
    exact cosine k-NN) or `annoy` (the seed's). nn_threshold: `nn_flag = nn_distance < it`.
    timeline_umap: `aligned` (each checkpoint's UMAP starts from the previous one) or `off`.
    An existing `out` is replaced with `overwrite`, or when it was built by the same request (a
    resumed run). skip_bad_images: drop unreadable images (listed in run.json) instead of failing.
    dtype: `bfloat16` or `float16` embed under autocast on a GPU; on the CPU `bfloat16` runs
        the model in bfloat16 (about 1.6x faster where the CPU has AVX512-BF16 or AMX).
    Under `accelerate launch` every process embeds its share of the checkpoints (or models) and
    only the main process writes OUT and returns the table; the others return None.
    """
    if preset is not None:
        if preset not in PRESETS:
            raise ExplorerError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        preset_dataset, preset_foundation, preset_finetuned = PRESETS[preset]
        dataset = dataset or preset_dataset
        foundation = foundation or preset_foundation
        finetuned = finetuned or preset_finetuned
    if dataset is None:
        raise ExplorerError("no dataset: give --dataset (or --preset)")
    if run is None and (foundation is None or finetuned is None):
        raise ExplorerError("give --foundation and --finetuned models, or --run with checkpoints")
    if run is not None and (foundation is not None or finetuned is not None):
        raise ExplorerError("give either --run or --foundation/--finetuned, not both")
    if neighbors not in ("exact", "annoy"):
        raise ExplorerError(f"--neighbors must be exact or annoy, not {neighbors!r}")
    if timeline_umap not in ("off", "aligned"):
        raise ExplorerError(f"--timeline-umap must be off or aligned, not {timeline_umap!r}")
    if pooling not in embed.POOLINGS:
        raise ExplorerError(
            f"--pooling must be one of {', '.join(embed.POOLINGS)}, not {pooling!r}"
        )
    device = embed.pick_device(device)
    embed.check_dtype(dtype, device)
    out = Path(out)
    request = {
        "dataset": str(dataset), "split": split, "limit": limit, "image_column": image_column,
        "label_column": label_column, "foundation": _text(foundation),
        "finetuned": _text(finetuned), "run": _text(run), "pooling": pooling,
        "neighbors": neighbors, "annoy_trees": annoy_trees, "nn_threshold": nn_threshold,
        "timeline_umap": timeline_umap, "skip_bad_images": skip_bad_images, "dtype": dtype,
    }  # fmt: skip
    rank, processes = distributed.world()
    if rank == 0:
        enrich.restore_interrupted(out)
    if not overwrite:
        _refuse_other_output(out, request)
    checkpoints = runs.list_checkpoints(run) if run is not None else None
    for model in [foundation, finetuned] if run is None else []:
        embed.load_config(model, trust_remote_code)  # a missing model fails before any work

    with _library_progress_bars_off():
        job = _Job(
            device=distributed.local_device(device),
            batch_size=batch_size,
            dtype=dtype,
            pooling=pooling,
            neighbors=neighbors,
            annoy_trees=annoy_trees,
            trust_remote_code=trust_remote_code,
            progress=progress and rank == 0,
        )
        with job.stage("load data"):
            images = data.load(dataset, split, limit, image_column, label_column, data_dir)
        first_model = foundation if checkpoints is None else checkpoints[0].path
        images, skipped = _readable(job, images, str(first_model), skip_bad_images)
        if images.num_rows < 3:
            raise ExplorerError(f"{images.num_rows} image(s) is too few: give at least 3")
        job.say(f"{images.num_rows} images from {dataset}")
        if processes > 1:
            models = [foundation, finetuned] if checkpoints is None else checkpoints
            _embed_share(job, images, models, rank, processes)
            if rank != 0:
                return None

        with _written_in_place(out) as partial:
            if checkpoints is None:
                default, models = _two_models(
                    job, images, str(foundation), str(finetuned), nn_threshold
                )
            else:
                default, models = _timeline(
                    job, images, checkpoints, nn_threshold, timeline_umap, partial
                )
                log = runs.read_log(run)
                if log["step"]:  # datasets cannot load back an empty table: none is no log
                    with job.stage("training log"):
                        enrich.save(datasets.Dataset.from_dict(log), partial / "training_log")
            with job.stage("write default"):
                enrich.save(default, partial / "default")
            record = {
                "explorer_version": _version(),
                "request": request,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "dataset": {
                    "source": str(dataset),
                    "split": split,
                    "limit": limit,
                    "num_rows": images.num_rows,
                    "labels": data.class_names(images),
                },
                "skipped_images": skipped,
                "models": models,
                "run": str(run) if run is not None else None,
                "checkpoints": job.checkpoints,
                "parameters": {
                    "k": outliers.DEFAULT_K,
                    "knn_neighbors": KNN_K,
                    "neighbors": neighbors,
                    "annoy_trees": annoy_trees if neighbors == "annoy" else None,
                    "nn_threshold": nn_threshold,
                    "timeline_umap": timeline_umap,
                    "batch_size": batch_size,
                    "device": job.device,
                    "umap_neighbors": projection.UMAP_NEIGHBORS,
                },
                "alignment": {
                    f"mean_displacement_{name}": float(np.mean(values))
                    for name, values in job.alignment.items()
                },
                "timings": job.timings,
                "versions": _versions(),
            }
            (partial / "run.json").write_text(json.dumps(record, indent=2) + "\n")
        job.say(f"wrote {out} in {sum(job.timings.values()):.1f} s")
        return datasets.load_from_disk(str(out / "default"))


def _text(value) -> str | None:
    return None if value is None else str(value)


def _refuse_other_output(out: Path, request: dict) -> None:
    """An OUT that exists is only rebuilt without --overwrite when the same request made it."""
    if not out.exists() or not any(out.iterdir()):
        return
    record = out / "run.json"
    previous = json.loads(record.read_text()).get("request") if record.exists() else None
    if previous is None:
        raise ExplorerError(f"{out} already exists: pass --overwrite to replace it")
    changed = sorted(key for key in request if previous.get(key) != request[key])
    if changed:
        raise ExplorerError(
            f"{out} holds another build (its {', '.join(changed)} differ): "
            "pass --overwrite to replace it, or pick another --out"
        )


def _readable(
    job: _Job, images: datasets.Dataset, model_path: str, skip_bad_images: bool
) -> tuple[datasets.Dataset, list[str]]:
    """Decode every image once for the first model (the pixels are kept for embedding); with
    `skip_bad_images`, drop those that cannot be read and return their names."""
    prep = embed.Preprocessing.from_model(model_path)
    try:
        job.pixels(images, prep)
        return images, []
    except embed.UnreadableImages as error:
        if not skip_bad_images:
            raise
        job.say(f"skipping {len(error.rows)} unreadable image(s): {', '.join(error.names[:5])}")
        bad = set(error.rows)
        images = images.select([row for row in range(images.num_rows) if row not in bad])
        job.pixels(images, prep)
        return images, error.names


@contextmanager
def _written_in_place(out: Path):
    """Yield `OUT.partial/` to write into; on success it replaces OUT, on failure it goes."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    enrich.replace_folder(partial, out)


@contextmanager
def _library_progress_bars_off():
    """Our own bars say what happens; datasets' and transformers' would repeat it per step."""
    from transformers.utils import logging as transformers_logging

    datasets_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
        if datasets_were_on:
            datasets.enable_progress_bars()


@dataclass
class _Job:
    """Settings shared by every step of one build, and what the steps record."""

    device: str
    batch_size: int
    dtype: str
    pooling: str
    neighbors: str
    annoy_trees: int
    trust_remote_code: bool
    progress: bool

    def __post_init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.checkpoints: list[dict] = []
        self.alignment: dict[str, float] = {}
        self._pixels: dict[str, tuple[torch.Tensor, str]] = {}
        self.embedded: dict[str, tuple] = {}  # by model path: what other processes embedded

    def say(self, message: str) -> None:
        if self.progress:
            print(f"explorer: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str):
        self.say(f"{name} ...")
        start = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)

    def pixels(self, images: datasets.Dataset, prep: embed.Preprocessing):
        """Decoded, resized pixels and their content hash, computed once per preprocessing."""
        key = prep.key()
        if key not in self._pixels:
            with self.stage("decode and resize images"):
                pixels = embed.prepare_pixels(images, prep, progress=self.progress)
                digest = hashlib.sha256(key.encode())
                digest.update(pixels.numpy().tobytes())
                self._pixels[key] = (pixels, digest.hexdigest())
        return self._pixels[key]

    def embed(
        self,
        model_path: str,
        images: datasets.Dataset,
        cache: Path | None = None,
        rows: slice = slice(None),
    ):
        """(embeddings, probabilities or None, model facts) of one model or checkpoint.

        With `cache` (a checkpoint folder) the result is read from, or written to, a safetensors
        file keyed by the pixels, the preprocessing, the pooling and the weights. With `rows`,
        only those rows (read from the cache when it is there, else embedded and not cached:
        the processes that share a checkpoint by images each give a slice, see `_embed_share`).
        """
        if model_path in self.embedded:
            return _rows_of(self.embedded[model_path], rows)
        prep = embed.Preprocessing.from_model(model_path)
        pixels, pixels_hash = self.pixels(images, prep)
        cache_file = None if cache is None else self._cache_file(pixels_hash, cache)
        if cache_file is not None and cache_file.exists():
            return _rows_of(_read_cache(cache_file), rows)
        with self.stage("embed"):
            model = embed.load_model(model_path, self.device, self.trust_remote_code)
            try:
                vectors, probabilities, pooling = embed.embed(
                    model, pixels[rows], prep, self.pooling, self.batch_size, self.progress,
                    desc=f"embed {Path(model_path).name}", dtype=self.dtype,
                )  # fmt: skip
            except ExplorerError as error:
                raise ExplorerError(f"{model_path}: {error}") from None
        facts = {
            "name": model_path,
            "model_type": model.config.model_type,
            "pooling": pooling,
            "dim": int(vectors.shape[1]),
            "id2label": _id2label(model) if probabilities is not None else None,
        }
        del model
        if cache_file is not None and rows == slice(None):
            _write_cache(cache_file, vectors, probabilities, facts)
        return vectors, probabilities, facts

    def keep(self, model_path: str, images: datasets.Dataset, cache: Path | None, result) -> None:
        """Keep what the processes embedded of a whole model or checkpoint as `embed` would
        have: in the checkpoint's cache with `cache` (unless cached already), else in memory
        for `embed` to return."""
        if cache is None:
            self.embedded[model_path] = result
            return
        _, pixels_hash = self.pixels(images, embed.Preprocessing.from_model(model_path))
        cache_file = self._cache_file(pixels_hash, cache)
        if not cache_file.exists():
            _write_cache(cache_file, *result)

    def _cache_file(self, pixels_hash: str, cache: Path) -> Path:
        """The cache file in checkpoint folder `cache`, keyed by everything that makes its
        embeddings: pixels and preprocessing (`pixels_hash`), pooling, dtype, weights."""
        key = hashlib.sha256(
            f"{pixels_hash}|{self.pooling}|{self.dtype}|{_weights_signature(cache)}".encode()
        ).hexdigest()[:20]
        return cache / CACHE_FOLDER / f"embeddings-{key}.safetensors"

    def geometry(
        self,
        vectors: np.ndarray,
        pca_reference: np.ndarray | None = None,
        umap_init: np.ndarray | None = None,
        umap: bool = True,
    ) -> dict[str, np.ndarray]:
        """One k-NN graph and everything drawn from it: `knn_indices`/`knn_distances` (N, k),
        `outlier_score`, `pca` (aligned onto `pca_reference` when given), `umap`."""
        k = min(KNN_K, len(vectors) - 1)
        with self.stage("k-NN"):
            if self.neighbors == "annoy":
                indices, distances = neighbors.annoy_knn(vectors, k, self.annoy_trees)
            else:
                indices, distances = neighbors.exact_knn(vectors, k, device=self.device)
        with self.stage("outlier scores"):
            if k < outliers.DEFAULT_K:
                warnings.warn(f"only {len(vectors)} images: outlier scores use k={k}", stacklevel=2)
            scores = outliers.outlier_scores(distances, min(outliers.DEFAULT_K, k))
        with self.stage("PCA"):
            pca = projection.pca_2d(vectors)
            if pca_reference is not None:
                aligned = projection.align(pca_reference, pca)
                self.alignment.setdefault("unaligned", []).append(_displacement(pca_reference, pca))
                self.alignment.setdefault("aligned", []).append(
                    _displacement(pca_reference, aligned)
                )
                pca = aligned
        result = {"knn_indices": indices, "knn_distances": distances,
                  "outlier_score": scores, "pca": pca}  # fmt: skip
        if umap:
            with self.stage("UMAP"):
                self_indices, self_distances = neighbors.with_self(indices, distances)
                result["umap"] = projection.umap_2d(
                    vectors, self_indices, self_distances, init=umap_init,
                    n_epochs=None if umap_init is None else 100,
                )  # fmt: skip
        return result


def _embed_share(
    job: _Job, images: datasets.Dataset, models: list, rank: int, processes: int
) -> None:
    """This process's share of the embedding (the scheme is in `explorer.distributed`): the
    first (len(models) // processes) * processes checkpoints or models whole, round-robin; then
    a slice of the rows of each one left over, joined in row order on the main process.
    Checkpoints go to their caches; the two models' embeddings are kept on the main process.
    Returns when all processes are done."""
    whole = len(models) // processes * processes
    kept = []  # (path, result) of the two models, for the main process
    for model in models[rank:whole:processes]:
        path, cache = _path_and_cache(model)
        result = job.embed(path, images, cache)
        if cache is None:
            kept.append((path, result))
    for model in models[whole:]:
        path, cache = _path_and_cache(model)
        n = images.num_rows
        rows = slice(n * rank // processes, n * (rank + 1) // processes)
        job.say(
            f"{Path(path).name}: images {rows.start}-{rows.stop - 1} of {n} in this process, "
            f"the others in {processes - 1} more"
        )
        part = job.embed(path, images, cache, rows) if rows.start < rows.stop else None
        parts = distributed.gather_on_main(part)
        if rank == 0:
            job.keep(path, images, cache, _joined(parts))
    for share in distributed.gather_on_main(kept) or []:  # None on the other processes
        for path, result in share:
            job.keep(path, images, None, result)
    distributed.wait_for_everyone()


def _path_and_cache(model) -> tuple[str, Path | None]:
    """A checkpoint is embedded into its cache; a model (of two) is not cached."""
    if isinstance(model, runs.Checkpoint):
        return str(model.path), model.path
    return str(model), None


def _joined(parts: list) -> tuple:
    """One (embeddings, probabilities, facts) from the processes' row slices, in rank order."""
    parts = [part for part in parts if part is not None]  # a process with no rows gave None
    vectors = np.concatenate([part[0] for part in parts])
    probabilities = None if parts[0][1] is None else np.concatenate([part[1] for part in parts])
    return vectors, probabilities, parts[0][2]


def _rows_of(result: tuple, rows: slice) -> tuple:
    vectors, probabilities, facts = result
    return vectors[rows], None if probabilities is None else probabilities[rows], facts


def _two_models(
    job: _Job, images: datasets.Dataset, foundation: str, finetuned: str, nn_threshold: float
) -> tuple[datasets.Dataset, dict]:
    found_vectors, _, found_facts = job.embed(foundation, images)
    ft_vectors, ft_probabilities, ft_facts = job.embed(finetuned, images)
    found = job.geometry(found_vectors)
    ft = job.geometry(ft_vectors, pca_reference=found["pca"])
    columns = _default_columns(found_vectors, ft_vectors, found, ft, nn_threshold)
    columns.update(_prediction_columns(images, ft_probabilities, ft_facts))
    with job.stage("assemble"):
        table = enrich.enriched_table(images, columns, ft["knn_indices"][:, 0])
    return table, {"foundation": found_facts, "finetuned": ft_facts}


def _timeline(
    job: _Job,
    images: datasets.Dataset,
    checkpoints: list[runs.Checkpoint],
    nn_threshold: float,
    timeline_umap: str,
    partial: Path,
) -> tuple[datasets.Dataset, dict]:
    """Every checkpoint in step order; only the first and last embeddings stay in memory."""
    n = images.num_rows
    frames, first, previous = [], None, None
    for checkpoint in checkpoints:
        job.say(f"checkpoint {checkpoint.name}")
        vectors, probabilities, facts = job.embed(str(checkpoint.path), images, checkpoint.path)
        if first is not None and vectors.shape[1] != first[0].shape[1]:
            raise ExplorerError(
                f"{checkpoint.name} gives {vectors.shape[1]}-d embeddings, "
                f"{checkpoints[0].name} {first[0].shape[1]}-d: a run's checkpoints must share "
                "an architecture"
            )
        geometry = job.geometry(
            vectors,
            pca_reference=None if previous is None else previous["pca"],
            umap_init=None if previous is None else previous.get("umap"),
            umap=timeline_umap == "aligned" or checkpoint in (checkpoints[0], checkpoints[-1]),
        )
        frame = {
            "row": np.arange(n),
            "step": np.full(n, checkpoint.step),
            "epoch": np.full(n, np.nan if checkpoint.epoch is None else checkpoint.epoch),
            "pca_x": geometry["pca"][:, 0],
            "pca_y": geometry["pca"][:, 1],
            "outlier_score": geometry["outlier_score"],
            "nn_id": geometry["knn_indices"][:, 0],
            "nn_distance": geometry["knn_distances"][:, 0],
        }
        if timeline_umap == "aligned":
            frame["umap_x"], frame["umap_y"] = geometry["umap"][:, 0], geometry["umap"][:, 1]
        predictions = _prediction_columns(images, probabilities, facts)
        if "pred_label" in predictions:
            frame["pred_label"] = predictions["pred_label"]
        frames.append(frame)
        job.checkpoints.append(
            {"name": checkpoint.name, "step": checkpoint.step, "epoch": checkpoint.epoch,
             "pooling": facts["pooling"]}
        )  # fmt: skip
        if first is None:
            first = (vectors, geometry, facts)
        last = (vectors, probabilities, geometry, facts)
        previous = geometry
    with job.stage("assemble"):
        names = data.class_names(images)
        class_label = datasets.ClassLabel(names=names) if names else None
        timeline = enrich.columns_table(
            {name: np.concatenate([frame[name] for frame in frames]) for name in frames[0]},
            class_label,
        )
        timeline = timeline.cast_column("epoch", datasets.Value("float32"))
        enrich.save(timeline, partial / "timeline")
        ft_vectors, ft_probabilities, ft, ft_facts = last
        columns = _default_columns(first[0], ft_vectors, first[1], ft, nn_threshold)
        columns.update(_prediction_columns(images, ft_probabilities, ft_facts))
        table = enrich.enriched_table(images, columns, ft["knn_indices"][:, 0])
    return table, {"foundation": first[2], "finetuned": ft_facts}


def _default_columns(
    found_vectors: np.ndarray,
    ft_vectors: np.ndarray,
    found: dict[str, np.ndarray],
    ft: dict[str, np.ndarray],
    nn_threshold: float,
) -> dict[str, np.ndarray]:
    nn_distance = ft["knn_distances"][:, 0]
    return {
        "embedding_foundation": found_vectors,
        "embedding_ft": ft_vectors,
        "outlier_score_found": found["outlier_score"],
        "outlier_score_ft": ft["outlier_score"],
        "nn_distance": nn_distance,
        "nn_flag": nn_distance < nn_threshold,
        "umap_found_x": found["umap"][:, 0],
        "umap_found_y": found["umap"][:, 1],
        "umap_ft_x": ft["umap"][:, 0],
        "umap_ft_y": ft["umap"][:, 1],
        "pca_found_x": found["pca"][:, 0],
        "pca_found_y": found["pca"][:, 1],
        "pca_ft_x": ft["pca"][:, 0],
        "pca_ft_y": ft["pca"][:, 1],
    }


def _prediction_columns(
    images: datasets.Dataset, probabilities: np.ndarray | None, facts: dict
) -> dict[str, np.ndarray]:
    """pred_label, pred_prob and, with labels, cleanlab's label_quality and is_label_issue.

    The head's classes are matched to the dataset's by name where the names agree, else by
    position where the counts agree; otherwise no prediction columns (with a warning).
    """
    if probabilities is None:
        return {}
    names = data.class_names(images)
    if names is None:
        predicted = probabilities.argmax(1)
        return {"pred_label": predicted, "pred_prob": probabilities.max(1)}
    head = [str(facts["id2label"][i]) for i in range(probabilities.shape[1])]
    if sorted(name.lower() for name in head) == sorted(name.lower() for name in names):
        position = {name.lower(): i for i, name in enumerate(head)}
        probabilities = probabilities[:, [position[name.lower()] for name in names]]
    elif len(head) != len(names):
        warnings.warn(
            f"the fine-tuned head has {len(head)} classes, the dataset {len(names)}: "
            "no prediction or label-quality columns",
            stacklevel=2,
        )
        return {}
    labels = np.asarray(images["label"])
    quality, issues = outliers.label_scores(labels, probabilities)
    return {
        "pred_label": probabilities.argmax(1),
        "pred_prob": probabilities.max(1),
        "label_quality": quality,
        "is_label_issue": issues,
    }


def _displacement(before: np.ndarray, after: np.ndarray) -> float:
    """Mean distance a point moves between two frames, in units of the first frame's spread."""
    spread = float(np.sqrt(((before - before.mean(0)) ** 2).sum(1).mean())) or 1.0
    return float(np.linalg.norm(after - before, axis=1).mean() / spread)


def _id2label(model: torch.nn.Module) -> dict[int, str]:
    return {int(i): str(name) for i, name in model.config.id2label.items()}


def _weights_signature(folder: Path) -> str:
    """Name, size and modification time of every weights file: a new save changes it."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def _write_cache(path: Path, vectors: np.ndarray, probabilities, facts: dict) -> None:
    from safetensors.numpy import save_file

    tensors = {"embeddings": np.ascontiguousarray(vectors)}
    if probabilities is not None:
        tensors["probabilities"] = np.ascontiguousarray(probabilities)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    save_file(tensors, str(temporary), metadata={"facts": json.dumps(facts)})
    temporary.replace(path)


def _read_cache(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as file:
        facts = json.loads(file.metadata()["facts"])
        vectors = file.get_tensor("embeddings")
        names = set(file.keys())
        probabilities = file.get_tensor("probabilities") if "probabilities" in names else None
    if facts.get("id2label"):
        facts["id2label"] = {int(i): name for i, name in facts["id2label"].items()}
    return vectors, probabilities, facts


def _version() -> str:
    import explorer

    return explorer.__version__


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
