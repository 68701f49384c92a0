"""Benchmark: the seed articles' recipe against explorer, end to end and stage by stage.

    .venv/bin/python benchmarks/pipeline.py --dataset fashion-mnist --limit 10000 --checkpoints 5
    .venv/bin/python benchmarks/pipeline.py --limit 500 --checkpoints 2 --repeats 1  # a check
    .venv/bin/python benchmarks/pipeline.py --knn-only [--n 60000 --dim 768]  # k-NN at scale

The model: a 6-layer, 192-wide ViT at 32 px (patch 4: 64 tokens + CLS), small enough for a CPU.
`--checkpoints K` copies of it, each from its own random seed, are saved with their
ViTImageProcessor (size 32) as `checkpoint-<step>/` folders of a temporary run folder with a
loss log, the shape `explorer build --run` reads (benchmarks/random_run.py).

End to end: each side is one whole process, started --repeats times, timed from its start to
its end (Python's start-up, imports and data loading included), its memory the process's
peak RSS (the kernel's high-water mark, os.wait4):
- seed: `python benchmarks/seed_recipe.py RUN ...`: per checkpoint the article's embedding,
  cleanlab's outlier score, Annoy's nearest neighbour, PCA + Procrustes and UMAP, then one PNG
  per checkpoint and the GIF;
- explorer: `python benchmarks/explorer_side.py RUN ...`: `explorer.build(run=...)` (embedding
  caches cleared first), then `explorer.animate` (PCA maps, as the seed's frames); and the
  same with `--dtype bfloat16`.
The sides take turns (seed, explorer, explorer bfloat16; the next repeat in reverse order), so
both meet the same machine load. The seed's UMAP runs as many epochs as explorer's (see
below), so the ratio is speed, not less work.

Stage by stage, both sides do the same work on the same images and checkpoints
(seed recipe: benchmarks/seed_recipe.py; explorer: its library calls):

- embed: `datasets.map` with AutoImageProcessor (PIL) at batch 24, per checkpoint | explorer
  `embed.prepare_pixels` once, then `embed.load_model` + `embed.embed_pixels` per checkpoint;
- k-NN: cleanlab `OutOfDistribution().fit_score` + Annoy (angular, 100 trees,
  `get_nns_by_item`) | `neighbors.exact_knn` (k=14, the pipeline's) + `outliers.outlier_scores`;
- PCA: sklearn PCA + `scipy.spatial.procrustes` | `projection.pca_2d` + `projection.align`;
- UMAP, same epochs: `umap.UMAP(n_epochs=E)` | `projection.umap_2d` from the k-NN graph, as
  `explorer.build` runs it: the first checkpoint from a spectral layout with
  `projection.umap_2d`'s epochs (200 above 4,096 points), each later one started from the
  previous map for UMAP_CONTINUED_EPOCHS (100). E is the same per checkpoint on both sides;
  explorer's later maps skip the spectral layout (part of what starting from the previous
  map saves);
- UMAP, umap-learn's defaults: `umap.UMAP()` | `projection.umap_2d` from a spectral layout
  with umap-learn's default epochs (500 up to 10,000 points, 200 above), every checkpoint;
- frames: a matplotlib figure and PNG per checkpoint, then imageio's GIF | `animate.animate`
  on the OUT of the last end-to-end run.

explorer's opt-in `--dtype bfloat16` is timed on the embedding stage too, with its agreement
with float32: cosine, nearest neighbour, k-NN overlap.

How stages are measured (see benchmarks/worker.py): each side runs in its own process, started
once (imports and data loading are not timed); the two take turns call by call. k-NN, PCA and
both UMAP lines run --repeats times over all checkpoints, frames 2 x --repeats + 1 times:
stage time = median over repeats of the sum over checkpoints. Embedding takes minutes, so it
runs once and its checkpoints are the repeats (the same model shape on the same images): stage
time = one-off work + K x median per-checkpoint time (one-off: explorer's decode-and-resize
before its first checkpoint). A process's first UMAP pays numba's compilation: a warm-up on
each side pays it before the stages (end to end, each process pays its own). Stage peak memory
= RSS above the process's RSS when the call began. The machine may be shared: "others" is the
most CPU other processes took during any call of a stage (share of all CPUs; /proc/stat counts
in 10 ms ticks, so it is rough for calls under a second).

The embedding's GFLOP/s: model FLOPs (torch.utils.flop_counter.FlopCounterMode on one batch,
eager attention so that attention's matrix products count) x images x checkpoints / stage time,
against the fp32 peak of a 4096 x 4096 torch matmul measured in the same run.

Results go to benchmarks/results/pipeline.json (the `pipeline` or `knn_scale` section).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import seed_recipe  # noqa: E402
from random_run import VIT, make_run  # noqa: E402
from worker import Worker, whole_process  # noqa: E402

from explorer import data, embed, neighbors, outliers, projection, runs  # noqa: E402
from explorer.geometry import KNN_K, UMAP_CONTINUED_EPOCHS  # noqa: E402
from explorer.projection import LARGE_MAP, LARGE_MAP_EPOCHS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"
SIZE, FPS, TOP = (1280, 720), 4, 8
NN_THRESHOLD = 0.3
TARGETS = {"embed": 1.5, "k-NN": 5.0, "UMAP, same epochs": 2.0, "frames": 3.0, "end to end": 2.0}
PEAK_FRACTION_TARGET = 0.70
BENCHMARKS = Path(__file__).resolve().parent


def umap_default_epochs(n: int) -> int:
    """umap-learn's epochs when none are given: 500 up to 10,000 points, 200 above."""
    return 500 if n <= 10_000 else 200


def explorer_umap_epochs(n: int, k: int) -> list[int]:
    """The epochs `explorer.build` gives the UMAP of each of k checkpoints of n images: the first
    from a spectral layout (`projection.umap_2d`'s default), each later one continued."""
    first = LARGE_MAP_EPOCHS if n > LARGE_MAP else umap_default_epochs(n)
    return [first] + [UMAP_CONTINUED_EPOCHS] * (k - 1)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The two sides: one method per stage, each run in its own worker process
# ---------------------------------------------------------------------------------------------


def _quiet() -> None:
    """No progress bars or notices from the libraries, on either side."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def _warm_up_umap(fit) -> float:
    """One small UMAP fit of >4,096 points (NN-descent's size), paying numba's compilation."""
    start = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(4500, 16)).astype(np.float32)
    fit(x)
    return time.perf_counter() - start


class SeedSide:
    """The seed articles' recipe, stage by stage (benchmarks/seed_recipe.py)."""

    def __init__(self, dataset: str, limit: int, run: str) -> None:
        _quiet()
        self.images = data.load(dataset, split="test", limit=limit)
        self.df = self.images.to_pandas()
        self.checkpoints = runs.list_checkpoints(run)
        self.labels = np.asarray(self.images["label"])
        self.names = self.images.features["label"].names
        log = runs.read_log(run)
        self.log = (log["step"], log["loss"])
        self.embeddings, self.pca_xy, self.scores = {}, {}, {}

    def warm_up(self) -> float:
        import umap

        return _warm_up_umap(lambda x: umap.UMAP(n_epochs=5).fit_transform(x))

    def embed(self, i: int) -> dict:
        path = str(self.checkpoints[i].path)
        self.embeddings[i] = seed_recipe.huggingface_embedding(self.df, modelname=path)
        return {}

    def vectors(self, i: int) -> np.ndarray:
        return np.stack(self.embeddings[i]["embedding"].to_numpy()).astype(np.float32)

    def knn(self, i: int) -> dict:
        df = self.df.assign(embedding=self.embeddings[i]["embedding"])
        scores = seed_recipe.outlier_score_by_embeddings_cleanlab(df)["outlier_score_embedding"]
        nn = seed_recipe.nearest_neighbor_annoy(df, threshold=NN_THRESHOLD, tree_size=100)
        self.scores[i] = scores.to_numpy()
        return {"scores": self.scores[i], "nn_id": nn["nn_id"].to_numpy()}

    def pca(self, i: int) -> None:
        self.pca_xy[i] = seed_recipe.make_pca(self.vectors(i), self.pca_xy.get(i - 1))

    def umap(self, i: int, epochs: int | None) -> None:
        """The seed's UMAP of checkpoint i; `epochs` None: umap-learn's default."""
        seed_recipe.make_umap(self.vectors(i), n_epochs=epochs)

    def frames(self, gif: str) -> int:
        frames = [(c.step, self.pca_xy[i], self.scores[i]) for i, c in enumerate(self.checkpoints)]
        return seed_recipe.make_frames(
            frames, self.images, self.labels, self.names, self.log, gif, size=SIZE, fps=FPS, top=TOP
        )


class ExplorerSide:
    """explorer's library calls for the same stages, as `explorer.build(run=...)` chains them."""

    def __init__(self, dataset: str, limit: int, run: str) -> None:
        _quiet()
        self.dataset, self.limit, self.run = dataset, limit, run
        self.images = data.load(dataset, split="test", limit=limit)
        self.checkpoints = runs.list_checkpoints(run)
        self.prep = embed.Preprocessing.from_model(self.checkpoints[0].path)
        self.pixels = None
        self.embeddings, self.graphs, self.pca_xy, self.umap_xy = {}, {}, {}, {}
        self.bfloat16: dict[int, np.ndarray] = {}

    def n_images(self) -> int:
        return self.images.num_rows

    def warm_up(self) -> float:
        def fit(x):
            indices, distances = neighbors.with_self(*neighbors.exact_knn(x, KNN_K))
            projection.umap_2d(x, indices, distances)

        return _warm_up_umap(fit)

    def embed(self, i: int, dtype: str = "float32") -> dict:
        """Checkpoint i's embeddings; `bfloat16` (the opt-in) keeps them apart, for the checks."""
        parts = {}
        start = time.perf_counter()
        if self.pixels is None:  # once per run: the same pixels serve every checkpoint
            self.pixels = embed.prepare_pixels(self.images, self.prep, progress=False)
            parts["decode and resize"] = time.perf_counter() - start
        start = time.perf_counter()
        model = embed.load_model(self.checkpoints[i].path)
        parts["load model"] = time.perf_counter() - start
        start = time.perf_counter()
        vectors, _, _ = embed.embed_pixels(
            model, self.pixels, self.prep, progress=False, dtype=dtype
        )
        parts["forward"] = time.perf_counter() - start
        (self.embeddings if dtype == "float32" else self.bfloat16)[i] = vectors
        return parts

    def bfloat16_agreement(self, i: int) -> dict:
        """How far checkpoint i's bfloat16 embeddings are from float32's: cosine, neighbours."""
        exact, fast = self.embeddings[i], self.bfloat16[i]
        cosine = (
            (exact * fast).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
        )
        exact_nn = neighbors.exact_knn(exact, KNN_K)[0]
        fast_nn = neighbors.exact_knn(fast, KNN_K)[0]
        overlap = [len(set(a) & set(b)) / KNN_K for a, b in zip(exact_nn, fast_nn, strict=True)]
        return {
            "min_cosine": float(cosine.min()),
            "same_nearest_neighbour": float(np.mean(exact_nn[:, 0] == fast_nn[:, 0])),
            "knn_overlap": float(np.mean(overlap)),
        }

    def vectors(self, i: int) -> np.ndarray:
        return self.embeddings[i]

    def knn(self, i: int) -> dict:
        indices, distances = neighbors.exact_knn(self.embeddings[i], KNN_K)
        scores = outliers.outlier_scores(distances, outliers.DEFAULT_K)
        nn_id, nn_distance = indices[:, 0], distances[:, 0]
        nn_flag = nn_distance < NN_THRESHOLD  # noqa: F841 (the seed computes it too)
        self.graphs[i] = (indices, distances)
        return {"scores": scores, "nn_id": nn_id, "distances": distances}

    def pca(self, i: int) -> None:
        points = projection.pca_2d(self.embeddings[i])
        self.pca_xy[i] = points if i == 0 else projection.align(self.pca_xy[i - 1], points)

    def umap(self, i: int, epochs: int | None) -> None:
        """Checkpoint i's UMAP from its k-NN graph. `epochs` None: as `explorer.build` runs it
        (the first from a spectral layout, each later one from the previous map, continued);
        else from a spectral layout for that many epochs (umap-learn's defaults line)."""
        indices, distances = neighbors.with_self(*self.graphs[i])
        if epochs is not None:
            projection.umap_2d(self.embeddings[i], indices, distances, n_epochs=epochs)
            return
        previous = self.umap_xy.get(i - 1) if i > 0 else None
        self.umap_xy[i] = projection.umap_2d(
            self.embeddings[i],
            indices,
            distances,
            init=previous,
            n_epochs=None if previous is None else UMAP_CONTINUED_EPOCHS,  # as explorer.geometry
        )

    def frames(self, out: str, gif: str) -> int:
        from explorer.animate import animate

        animate(out, gif, projection="pca", fps=FPS, size=SIZE, top_outliers=TOP, progress=False)
        return len(self.checkpoints)


# ---------------------------------------------------------------------------------------------
# Machine measurements: fp32 matmul peak, model FLOPs
# ---------------------------------------------------------------------------------------------


def matmul_peak(n: int = 4096, repeats: int = 8) -> float:
    """Best GFLOP/s of an n x n fp32 torch matmul (2 n^3 FLOPs) over `repeats` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def model_flops_per_image(checkpoint: Path, batch: int = 24) -> float:
    """FLOPs of one image through the model, counted on one batch (matrix products only)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
    pixels = torch.randn(batch, 3, VIT["image_size"], VIT["image_size"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values=pixels)
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------------------------------------
# Checks: same embeddings on both sides, exact neighbours, cleanlab's scores
# ---------------------------------------------------------------------------------------------


def brute_force_knn(x: np.ndarray, k: int, rows: np.ndarray | None = None):
    """Exact cosine k-NN in float64 by numpy, for `rows` (default all): (indices, distances)."""
    unit = x.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    rows = np.arange(len(x)) if rows is None else rows
    indices = np.empty((len(rows), k), np.int64)
    distances = np.empty((len(rows), k))
    for start in range(0, len(rows), 1000):
        block = rows[start : start + 1000]
        d = 1 - unit[block] @ unit.T
        d[np.arange(len(block)), block] = np.inf
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1, kind="stable")
        indices[start : start + 1000] = np.take_along_axis(part, order, 1)
        distances[start : start + 1000] = np.take_along_axis(d, indices[start : start + 1000], 1)
    return indices, distances


def check_knn(vectors: np.ndarray, seed: dict, ours: dict) -> dict:
    """explorer's k-NN against float64 brute force; both sides' scores and nearest neighbours."""
    exact_indices, exact = brute_force_knn(vectors, KNN_K)
    nn_exact = exact[:, 0]
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    annoy_nn = 1 - (unit * unit[seed["nn_id"]]).sum(1)
    return {
        "explorer_max_distance_error": float(np.abs(ours["distances"] - exact).max()),
        "explorer_nn_is_exact": float(np.mean(ours["distances"][:, 0] <= nn_exact + 1e-6)),
        "explorer_same_nn_index": float(np.mean(ours["nn_id"] == exact_indices[:, 0])),
        "annoy_nn_is_exact": float(np.mean(annoy_nn <= nn_exact + 1e-6)),
        "outlier_score_max_diff_vs_cleanlab": float(np.abs(ours["scores"] - seed["scores"]).max()),
    }


# ---------------------------------------------------------------------------------------------
# End to end: each side one whole process, timed and measured whole
# ---------------------------------------------------------------------------------------------


def clear_caches(run: Path) -> None:
    """Remove explorer's embedding caches from the run's checkpoints: every build embeds."""
    for cache in run.glob("checkpoint-*/explorer-cache"):
        shutil.rmtree(cache)


def end_to_end_commands(args, run: Path, work: Path, epochs: list[int]) -> dict[str, list[str]]:
    """The command line of each side's whole process."""
    source = ["--dataset", args.dataset, "--limit", str(args.limit)]
    seed = [sys.executable, str(BENCHMARKS / "seed_recipe.py"), str(run), *source]
    seed += ["--gif", str(work / "seed.gif"), "--umap-epochs", ",".join(map(str, epochs))]
    ours = [sys.executable, str(BENCHMARKS / "explorer_side.py"), str(run), *source]
    return {
        "seed": seed,
        "explorer": ours + ["--out", str(work / "OUT"), "--gif", str(work / "explorer.gif")],
        "explorer bfloat16": ours
        + ["--out", str(work / "OUT-bf16"), "--gif", str(work / "bf16.gif")]
        + ["--dtype", "bfloat16"],
    }


def run_end_to_end(commands: dict[str, list[str]], run: Path, repeats: int) -> dict[str, list]:
    """Each side's process `repeats` times, taking turns (reversed every other repeat)."""
    measured: dict[str, list] = {name: [] for name in commands}
    for r in range(repeats):
        for name in list(commands) if r % 2 == 0 else list(reversed(commands)):
            if name.startswith("explorer"):
                clear_caches(run)
            whole = whole_process(commands[name])
            measured[name].append(whole)
            say(
                f"  end to end {name:17} {whole.seconds:8.2f} s (CPU {whole.cpu:7.1f} s), "
                f"peak RSS {whole.peak_rss_mb:7.1f} MiB, others {whole.others:.0%}"
            )
    return measured


def whole_summary(samples: list) -> dict:
    """Medians over a side's whole processes (peak RSS too), with every sample."""
    return {
        "seconds": round(statistics.median(w.seconds for w in samples), 3),
        "cpu_seconds": round(statistics.median(w.cpu for w in samples), 3),
        "samples": [round(w.seconds, 3) for w in samples],
        "peak_rss_mb": round(statistics.median(w.peak_rss_mb for w in samples), 1),
        "peak_rss_samples_mb": [round(w.peak_rss_mb, 1) for w in samples],
        "process_tree_peak_mb": round(max(w.tree_peak_mb for w in samples), 1),
        "outside_load": round(max(w.others for w in samples), 2),
    }


# ---------------------------------------------------------------------------------------------
# Stage by stage: both sides in worker processes, taking turns call by call
# ---------------------------------------------------------------------------------------------


def repeated(calls: list[list]) -> dict:
    """A stage run --repeats times over all checkpoints: median over repeats of the sum."""
    return {
        "seconds": round(statistics.median(sum(m.wall for m in run) for run in calls), 3),
        "cpu_seconds": round(statistics.median(sum(m.cpu for m in run) for run in calls), 3),
        "samples": [round(sum(m.wall for m in run), 3) for run in calls],
        "peak_mb": round(max(m.peak_mb for run in calls for m in run), 1),
        "outside_load": round(max(m.others for run in calls for m in run), 2),
    }


def per_checkpoint(calls: list, count: int, one_off: float = 0.0) -> dict:
    """A stage run once: one-off seconds + `count` x the median of the per-checkpoint times
    (`one_off` seconds of the first call are one-off work: explorer's decode-and-resize)."""
    walls = [m.wall for m in calls]
    walls[0] -= one_off
    return {
        "seconds": round(one_off + count * statistics.median(walls), 3),
        "cpu_seconds": round(sum(m.cpu for m in calls), 3),
        "samples": [round(m.wall, 3) for m in calls],
        "peak_mb": round(max(m.peak_mb for m in calls), 1),
        "outside_load": round(max(m.others for m in calls), 2),
    }


def compare(seed: dict, ours: dict) -> dict:
    return {
        "seed": seed,
        "explorer": ours,
        "ratio": round(seed["seconds"] / ours["seconds"], 2),
        # the most CPU other processes took during any call of the stage (share of the machine)
        "outside_load": max(seed["outside_load"], ours["outside_load"]),
    }


class Turns:
    """The two workers, called in turn; every call's Measured kept per stage, side and repeat."""

    def __init__(self, seed: Worker, ours: Worker) -> None:
        self.sides = {"seed": seed, "explorer": ours}
        self.calls: dict[str, dict[str, list[list]]] = {}

    def call(self, name: str, stage: str, method: str, *args, repeat: int = 0):
        value, measured = self.sides[name].call(method, *args)
        repeats = self.calls.setdefault(stage, {}).setdefault(name, [])
        while len(repeats) <= repeat:
            repeats.append([])
        repeats[repeat].append(measured)
        say(
            f"  {stage:6} {name:8} {method}{args[:2]!s:12} {measured.wall:8.2f} s "
            f"(CPU {measured.cpu:7.2f} s, peak +{measured.peak_mb:7.1f} MiB, "
            f"others {measured.others:.0%})"
        )
        return value

    def both(self, stage: str, method: str, args: dict, turn: int, repeat: int = 0) -> dict:
        """`method(*args[side])` on both sides; who goes first alternates with `turn`."""
        order = ["seed", "explorer"] if turn % 2 == 0 else ["explorer", "seed"]
        return {name: self.call(name, stage, method, *args[name], repeat=repeat) for name in order}


def same(*args) -> dict:
    """The same arguments for both sides."""
    return {"seed": args, "explorer": args}


def drive(turns: Turns, k: int, repeats: int, out: Path, epochs: list[int], n: int) -> dict:
    """Every stage on both sides, in turn. Returns what the summary needs."""
    seed, ours = turns.sides["seed"], turns.sides["explorer"]
    raw: dict = {}
    say("warm-up: a first UMAP fit in each process (numba compilation), not timed")
    raw["warm"] = {name: side.call("warm_up")[0] for name, side in turns.sides.items()}
    say(f"  {raw['warm']}")

    say("embed")
    raw["parts"] = [turns.both("embed", "embed", same(i), turn=i)["explorer"] for i in range(k)]
    vectors = [ours.call("vectors", i)[0] for i in range(k)]
    raw["embedding_diff"] = max(
        float(np.abs(ours_v - seed.call("vectors", i)[0]).max()) for i, ours_v in enumerate(vectors)
    )
    say("embed with --dtype bfloat16 (explorer's opt-in), against the seed's float32 above")
    for i in range(k):
        turns.call("explorer", "embed bfloat16", "embed", i, "bfloat16")
    raw["bfloat16"] = [ours.call("bfloat16_agreement", i)[0] for i in range(k)]

    say("k-NN, outlier scores, nearest neighbour")
    for r in range(repeats):
        knn = [turns.both("k-NN", "knn", same(i), turn=r + i, repeat=r) for i in range(k)]
    raw["checks"] = [check_knn(vectors[i], knn[i]["seed"], knn[i]["explorer"]) for i in range(k)]

    say("PCA + Procrustes")
    for r in range(repeats):
        for i in range(k):
            turns.both("PCA", "pca", same(i), turn=r + i, repeat=r)

    say(f"UMAP, the same epochs on both sides: {epochs}")
    for r in range(repeats):
        for i in range(k):
            args = {"seed": (i, epochs[i]), "explorer": (i, None)}
            turns.both("UMAP, same epochs", "umap", args, turn=r + i, repeat=r)
    say(f"UMAP, umap-learn's defaults ({umap_default_epochs(n)} epochs from a spectral layout)")
    for r in range(repeats):
        for i in range(k):
            args = {"seed": (i, None), "explorer": (i, umap_default_epochs(n))}
            turns.both("UMAP, umap-learn's defaults", "umap", args, turn=r + i, repeat=r)

    say("frames + GIF")
    work = out.parent
    for r in range(2 * repeats + 1):  # a second or two each: more repeats, a steadier median
        for name in ["seed", "explorer"] if r % 2 == 0 else ["explorer", "seed"]:
            gif = str(work / f"stage-{name}.gif")
            arguments = (gif,) if name == "seed" else (str(out), gif)
            turns.call(name, "frames", "frames", *arguments, repeat=r)
    raw["calls"] = turns.calls
    for side in turns.sides.values():
        side.close()
    return raw


def run_pipeline(args: argparse.Namespace) -> dict:
    k = args.checkpoints
    _quiet()
    work = Path(tempfile.mkdtemp(prefix="explorer-bench-"))
    try:
        run = make_run(work / "run", k)
        n_images = data.load(args.dataset, split="test", limit=args.limit).num_rows
        epochs = explorer_umap_epochs(n_images, k)
        say(f"run folder {run}: {k} checkpoints; {n_images} images; UMAP epochs {epochs}")
        peak_before = matmul_peak()
        flops = model_flops_per_image(runs.list_checkpoints(run)[0].path)
        say(f"fp32 matmul peak {peak_before:.1f} GFLOP/s; model {flops / 1e6:.1f} MFLOP/image")

        say(f"end to end: each side one whole process, {args.repeats} times")
        commands = end_to_end_commands(args, run, work, epochs)
        whole = run_end_to_end(commands, run, args.repeats)
        timings = json.loads((work / "OUT" / "run.json").read_text())["timings"]

        say("stage by stage")
        setup = {"dataset": args.dataset, "limit": args.limit, "run": str(run)}
        seed, ours = Worker("seed", SeedSide, **setup), Worker("explorer", ExplorerSide, **setup)
        try:
            raw = drive(Turns(seed, ours), k, args.repeats, work / "OUT", epochs, n_images)
        finally:
            seed.kill()
            ours.kill()
        peak = max(peak_before, matmul_peak())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw.update(whole=whole, timings=timings, epochs=epochs, commands=commands)
    return summarise(args, raw, n_images, flops, (peak_before, peak))


def summarise(args, raw: dict, n_images: int, flops: float, peaks: tuple) -> dict:
    """Stage times, ratios, memory, GFLOP/s and checks, as written to pipeline.json."""
    k, calls, parts = args.checkpoints, raw["calls"], raw["parts"]
    decode = parts[0].get("decode and resize", 0.0)
    stages = {
        "embed": compare(
            per_checkpoint(calls["embed"]["seed"][0], k),
            per_checkpoint(calls["embed"]["explorer"][0], k, one_off=decode),
        ),
    }
    for name in ("k-NN", "PCA", "UMAP, same epochs", "UMAP, umap-learn's defaults", "frames"):
        stages[name] = compare(repeated(calls[name]["seed"]), repeated(calls[name]["explorer"]))
    stages["UMAP, same epochs"]["epochs_per_checkpoint"] = raw["epochs"]
    stages["UMAP, umap-learn's defaults"]["epochs_per_checkpoint"] = [
        umap_default_epochs(n_images)
    ] * k

    whole = {name: whole_summary(samples) for name, samples in raw["whole"].items()}
    seed, ours, fast = whole["seed"], whole["explorer"], whole["explorer bfloat16"]
    end_to_end = {
        "seed": seed,
        "explorer": ours,
        "explorer_bfloat16": fast,
        "ratio": round(seed["seconds"] / ours["seconds"], 2),
        "ratio_bfloat16": round(seed["seconds"] / fast["seconds"], 2),
        "peak_rss_ratio": round(seed["peak_rss_mb"] / ours["peak_rss_mb"], 2),
        "seed_umap_epochs": raw["epochs"],
        "commands": {name: " ".join(command) for name, command in raw["commands"].items()},
    }

    peak_before, peak = peaks
    forward = statistics.median(p["forward"] for p in parts)
    embedding = {
        "model_mflop_per_image": round(flops / 1e6, 2),
        "fp32_peak_gflops": round(peak, 1),
        "fp32_peak_gflops_first_measure": round(peak_before, 1),
        "explorer_forward_only_gflops": round(flops * n_images / 1e9 / forward, 1),
        "explorer_parts_seconds": {
            name: round(statistics.median(p[name] for p in parts if name in p), 3)
            for name in parts[0]
        },
        "max_abs_embedding_diff_seed_vs_explorer": raw["embedding_diff"],
    }
    for name in ("seed", "explorer"):
        gflops = flops * n_images * k / 1e9 / stages["embed"][name]["seconds"]
        embedding[f"{name}_gflops"] = round(gflops, 1)
        embedding[f"{name}_fraction_of_peak"] = round(gflops / peak, 3)
    bfloat16 = per_checkpoint(calls["embed bfloat16"]["explorer"][0], k)
    bfloat16["seconds"] = round(bfloat16["seconds"] + decode, 3)  # as the float32 line pays it
    embedding["explorer_bfloat16"] = {
        **bfloat16,
        "ratio": round(stages["embed"]["seed"]["seconds"] / bfloat16["seconds"], 2),
        "gflops": round(flops * n_images * k / 1e9 / bfloat16["seconds"], 1),
        "agreement_with_float32": {
            key: [round(a[key], 5) for a in raw["bfloat16"]] for key in raw["bfloat16"][0]
        },
    }
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine(),
        "sizes": {
            "dataset": args.dataset,
            "images": n_images,
            "checkpoints": k,
            "repeats": args.repeats,
            "model": {"type": "vit", **VIT},
            "embedding_dim": VIT["hidden_size"],
        },
        "end_to_end": end_to_end,
        "stages": stages,
        "explorer_run_json_timings": raw["timings"],
        "umap_warm_up_seconds": {name: round(s, 2) for name, s in raw["warm"].items()},
        "embedding": embedding,
        "checks": {key: [c[key] for c in raw["checks"]] for key in raw["checks"][0]},
        "targets": targets(stages, end_to_end, embedding),
    }


def targets(stages: dict, end_to_end: dict, embedding: dict) -> dict:
    result = {
        name: {
            "target": f">= {goal}x",
            "achieved": stages[name]["ratio"],
            "met": stages[name]["ratio"] >= goal,
        }
        for name, goal in TARGETS.items()
        if name in stages
    }
    opt_in = {
        "end to end": end_to_end["ratio"],
        "embed, --dtype bfloat16": embedding["explorer_bfloat16"]["ratio"],
        "end to end, --dtype bfloat16": end_to_end["ratio_bfloat16"],
    }
    for name, ratio in opt_in.items():
        goal = TARGETS[name.split(",")[0]]
        result[name] = {"target": f">= {goal}x", "achieved": ratio, "met": ratio >= goal}
    fraction = embedding["explorer_fraction_of_peak"]
    result["embed fraction of fp32 peak"] = {
        "target": f">= {PEAK_FRACTION_TARGET:.0%}",
        "achieved": fraction,
        "met": fraction >= PEAK_FRACTION_TARGET,
    }
    return result


def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import psutil

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def print_pipeline(result: dict) -> None:
    sizes, stages, e2e = result["sizes"], result["stages"], result["end_to_end"]
    print(
        f"\n{sizes['images']:,} {sizes['dataset']} images, {sizes['checkpoints']} checkpoints of "
        f"a 6-layer 192-wide ViT (32 px), {result['machine']['cpus']} CPUs "
        f"({result['machine']['cpu']}), repeats {sizes['repeats']}"
    )
    header = (
        f"{'':32} {'seed s':>9} {'explorer s':>11} {'ratio':>7} {'seed MiB':>9} "
        f"{'explorer MiB':>13} {'others':>7}"
    )
    print(header)
    print("-" * len(header))
    seed = e2e["seed"]
    for name, line in (
        ("end to end", e2e["explorer"]),
        ("end to end, bfloat16", e2e["explorer_bfloat16"]),
    ):
        others = max(seed["outside_load"], line["outside_load"])
        print(
            f"{name:32} {seed['seconds']:9.1f} {line['seconds']:11.1f} "
            f"{seed['seconds'] / line['seconds']:6.2f}x {seed['peak_rss_mb']:9.0f} "
            f"{line['peak_rss_mb']:13.0f} {others:7.0%}"
        )
    for name, stage in stages.items():
        print(
            f"{name:32} {stage['seed']['seconds']:9.2f} {stage['explorer']['seconds']:11.2f} "
            f"{stage['ratio']:6.2f}x {stage['seed']['peak_mb']:9.1f} "
            f"{stage['explorer']['peak_mb']:13.1f} {stage['outside_load']:7.0%}"
        )
    bfloat16 = result["embedding"]["explorer_bfloat16"]
    print(f"{'embed, bfloat16':32} {'':>9} {bfloat16['seconds']:11.2f} {bfloat16['ratio']:6.2f}x")
    print("(end to end: whole processes, peak RSS; stages: peak above the call's start)")
    for name, target in result["targets"].items():
        print(f"target {name}: {target['target']}, {target['achieved']}, met: {target['met']}")
    emb = result["embedding"]
    print(
        f"\nembedding: {emb['model_mflop_per_image']} MFLOP/image; fp32 matmul peak "
        f"{emb['fp32_peak_gflops']} GFLOP/s; seed {emb['seed_gflops']} GFLOP/s "
        f"({emb['seed_fraction_of_peak']:.0%}), explorer {emb['explorer_gflops']} GFLOP/s "
        f"({emb['explorer_fraction_of_peak']:.0%}; forward alone "
        f"{emb['explorer_forward_only_gflops']} GFLOP/s); explorer parts "
        f"{emb['explorer_parts_seconds']}"
    )
    print(
        f"explorer's run.json timings (last end-to-end run): {result['explorer_run_json_timings']}"
    )
    print(f"UMAP warm-up (numba compile + a 4,500-point fit): {result['umap_warm_up_seconds']}")
    print(f"checks per checkpoint: {json.dumps(result['checks'])}")
    agreement = bfloat16["agreement_with_float32"]
    print(f"bfloat16 against float32 embeddings, per checkpoint: {json.dumps(agreement)}")


# ---------------------------------------------------------------------------------------------
# --knn-only: exact k-NN of 60,000 x 768 embeddings
# ---------------------------------------------------------------------------------------------


class KnnSide:
    """Random-but-clustered float32 embeddings and explorer's exact k-NN over them."""

    def __init__(self, n: int, dim: int, clusters: int = 100, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(clusters, dim)).astype(np.float32)
        self.x = centres[rng.integers(clusters, size=n)]
        self.x += 0.6 * rng.standard_normal(size=(n, dim), dtype=np.float32)

    def knn(self, k: int) -> None:
        self.result = neighbors.exact_knn(self.x, k)

    def check(self, k: int, sample: int = 500) -> dict:
        rows = np.random.default_rng(1).choice(len(self.x), sample, replace=False)
        exact_indices, exact = brute_force_knn(self.x, k, rows)
        indices, distances = self.result[0][rows], self.result[1][rows]
        return {
            "rows_checked": sample,
            "max_distance_error": float(np.abs(distances - exact).max()),
            "same_nn_index": float(np.mean(indices[:, 0] == exact_indices[:, 0])),
        }


def run_knn_only(args: argparse.Namespace) -> dict:
    n, dim, k = args.n, args.dim, KNN_K
    worker = Worker("knn", KnnSide, n=n, dim=dim)
    samples = []
    for _ in range(args.repeats):
        _, measured = worker.call("knn", k)
        samples.append(measured)
        say(
            f"  exact_knn {n:,} x {dim}, k={k}: {measured.wall:.2f} s "
            f"(CPU {measured.cpu:.2f} s), peak +{measured.peak_mb:.1f} MiB"
        )
    check, _ = worker.call("check", k)
    worker.close()
    seconds = statistics.median(m.wall for m in samples)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine(),
        "n": n,
        "dim": dim,
        "k": k,
        "repeats": args.repeats,
        "seconds": round(seconds, 3),
        "samples": [round(m.wall, 3) for m in samples],
        "peak_mb": round(max(m.peak_mb for m in samples), 1),
        "input_mb": round(n * dim * 4 / 2**20, 1),
        "n_by_n_float32_mb": round(n * n * 4 / 2**20, 1),
        "similarity_gflops": round(2 * n * n * dim / seconds / 1e9, 1),
        "check": check,
    }


def print_knn(result: dict) -> None:
    print(
        f"\nexact_knn of {result['n']:,} x {result['dim']} float32 (k={result['k']}): "
        f"median {result['seconds']:.2f} s over {result['repeats']} "
        f"({result['similarity_gflops']} GFLOP/s, counting all N x N x D products), peak "
        f"+{result['peak_mb']:.0f} MiB (input {result['input_mb']:.0f} MiB; an N x N float32 "
        f"matrix would be {result['n_by_n_float32_mb']:.0f} MiB); check {result['check']}"
    )


# ---------------------------------------------------------------------------------------------


def save(section: str, result: dict, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[section] = result
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(saved, indent=2) + "\n")
    temporary.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=10_000, help="images (default: %(default)s)")
    parser.add_argument("--checkpoints", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="whole processes per side, and repeats of each short stage (default: %(default)s)",
    )
    parser.add_argument("--knn-only", action="store_true", help="only the k-NN scale check")
    parser.add_argument("--n", type=int, default=60_000, help="--knn-only: rows (default: 60000)")
    parser.add_argument(
        "--dim", type=int, default=768, help="--knn-only: dimensions (default: 768)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="JSON file to add the result to (default: benchmarks/results/pipeline.json)",
    )
    args = parser.parse_args()
    if args.knn_only:
        result = run_knn_only(args)
        save("knn_scale", result, args.results)
        print_knn(result)
    else:
        result = run_pipeline(args)
        save("pipeline", result, args.results)
        print_pipeline(result)
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
