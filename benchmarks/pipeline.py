"""Benchmark: the seed articles' recipe against explorer, stage by stage, same images and models.

    .venv/bin/python benchmarks/pipeline.py --dataset fashion-mnist --limit 10000 --checkpoints 5
    .venv/bin/python benchmarks/pipeline.py --limit 2000 --checkpoints 2      # a quick check
    .venv/bin/python benchmarks/pipeline.py --knn-only [--n 60000 --dim 768]  # k-NN at scale

The model: a 6-layer, 192-wide ViT at 32 px (patch 4: 64 tokens + CLS), small enough for a CPU.
`--checkpoints K` copies of it, each from its own random seed, are saved with their
ViTImageProcessor (size 32) as `checkpoint-<step>/` folders of a temporary run folder with a
loss log, the shape `explorer build --run` reads (benchmarks/random_run.py).

Both sides do the same work on the same images and checkpoints, stage by stage
(seed recipe: benchmarks/seed_recipe.py; explorer: its library calls):

- embed: `datasets.map` with AutoImageProcessor (PIL) at batch 24, per checkpoint | explorer
  `embed.prepare_pixels` once, then `embed.load_model` + `embed.embed_pixels` per checkpoint;
- k-NN: cleanlab `OutOfDistribution().fit_score` + Annoy (angular, 100 trees,
  `get_nns_by_item`) | `neighbors.exact_knn` (k=14, the pipeline's) + `outliers.outlier_scores`;
- PCA: sklearn PCA + `scipy.spatial.procrustes` | `projection.pca_2d` + `projection.align`;
- UMAP: `umap.UMAP()` with its defaults | `projection.umap_2d` from the k-NN graph, the first
  checkpoint from a spectral layout, each later one from the previous map (100 epochs), as
  `explorer.build` does;
- frames: a matplotlib figure and PNG per checkpoint, then imageio's GIF | `animate.animate`.

explorer's opt-in `--dtype bfloat16` is timed too, on the embedding stage only (the rest of the
pipeline is the same), with its agreement with float32: cosine, nearest neighbour, k-NN overlap.

explorer also needs OUT for its frames: `explorer.build(run=...)` writes it once (timed on its
own; its run.json gives per-stage timings, and its table writing counts in explorer's end to end).

How it is measured (see benchmarks/worker.py): each side runs in its own process, started
once (imports and data loading are not timed); the two take turns call by call, so both meet
the same machine load, and each process's memory is its own. k-NN and PCA run --repeats times
over all checkpoints, frames 2 x --repeats + 1 times: stage time = median over repeats of the
sum over checkpoints. Embedding and UMAP take minutes, so they run once and their checkpoints
are the repeats: stage time = one-off work + K x median per-checkpoint time (one-off:
explorer's decode-and-resize before its first checkpoint, and its first UMAP, which starts from
a spectral layout with full epochs). A process's first UMAP pays numba's compilation: a
warm-up on each side pays it before the stages (its time is shown, and added in the "cold
process" line). End to end = the sum of the stage times, plus explorer's table writing (from
its build's run.json). Peak memory = RSS above the process's RSS when the call (end to end:
the first stage) began; worker processes count with the memory only they hold. The machine may
be shared: "others" is the most CPU other processes took during any call of a stage (share of
all CPUs; /proc/stat counts in 10 ms ticks, so it is rough for calls under a second). A busy
call inflates its own sample; the medians above shrug off one, not several.

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
from worker import Worker  # noqa: E402

from explorer import data, embed, neighbors, outliers, projection, runs  # noqa: E402
from explorer.geometry import KNN_K, UMAP_CONTINUED_EPOCHS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"
SIZE, FPS, TOP = (1280, 720), 4, 8
NN_THRESHOLD = 0.3
TARGETS = {"embed": 1.5, "k-NN": 5.0, "UMAP": 2.0, "frames": 3.0, "end to end": 2.0}
PEAK_FRACTION_TARGET = 0.70
STAGES = ("embed", "k-NN", "PCA", "UMAP", "frames")
# explorer's table assembly and writing, as run.json's timings name them
WRITING = ("assemble", "write timeline", "training log", "write default")


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

    def umap(self, i: int) -> None:
        seed_recipe.make_umap(self.vectors(i))

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

    def umap(self, i: int) -> None:
        indices, distances = neighbors.with_self(*self.graphs[i])
        previous = self.umap_xy.get(i - 1)
        self.umap_xy[i] = projection.umap_2d(
            self.embeddings[i],
            indices,
            distances,
            init=previous,
            n_epochs=None if previous is None else UMAP_CONTINUED_EPOCHS,  # as explorer.geometry
        )

    def build(self, out: str) -> dict:
        from explorer import build

        build(
            self.dataset,
            split="test",
            limit=self.limit,
            run=self.run,
            out=out,
            overwrite=True,
            progress=False,
        )
        return json.loads((Path(out) / "run.json").read_text())["timings"]

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
# The run
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


def per_checkpoint(calls: list, count: int, one_off: float = 0.0, skip_first: bool = False):
    """A stage run once: one-off seconds + `count` x the median of the per-checkpoint times.

    skip_first: the first call is the one-off (explorer's first UMAP); else `one_off` seconds
    of the first call are (explorer's decode-and-resize) and the rest of it is a sample.
    """
    walls = [m.wall for m in calls]
    if skip_first:
        walls = walls[1:]
    elif one_off:
        walls[0] -= one_off
    return {
        "seconds": round(one_off + (count * statistics.median(walls) if walls else 0.0), 3),
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
            f"  {stage:6} {name:8} {method}{args[:1]!s:8} {measured.wall:8.2f} s "
            f"(CPU {measured.cpu:7.2f} s, peak +{measured.peak_mb:7.1f} MiB, "
            f"others {measured.others:.0%})"
        )
        return value

    def both(self, stage: str, method: str, i: int, turn: int, repeat: int = 0) -> dict:
        """`method(i)` on both sides; who goes first alternates with `turn`."""
        order = ["seed", "explorer"] if turn % 2 == 0 else ["explorer", "seed"]
        return {name: self.call(name, stage, method, i, repeat=repeat) for name in order}


def drive(turns: Turns, k: int, repeats: int, work: Path) -> dict:
    """Every stage on both sides, in turn. Returns what the summary needs."""
    seed, ours = turns.sides["seed"], turns.sides["explorer"]
    raw: dict = {}
    say("warm-up: a first UMAP fit in each process (numba compilation), not timed")
    raw["warm"] = {name: side.call("warm_up")[0] for name, side in turns.sides.items()}
    say(f"  {raw['warm']}")

    say("embed")
    raw["parts"] = [turns.both("embed", "embed", i, turn=i)["explorer"] for i in range(k)]
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
        knn = [turns.both("k-NN", "knn", i, turn=r + i, repeat=r) for i in range(k)]
    raw["checks"] = [check_knn(vectors[i], knn[i]["seed"], knn[i]["explorer"]) for i in range(k)]

    say("PCA + Procrustes")
    for r in range(repeats):
        for i in range(k):
            turns.both("PCA", "pca", i, turn=r + i, repeat=r)

    say("UMAP")
    for i in range(k):
        turns.both("UMAP", "umap", i, turn=i)

    say("explorer.build(run=...), once: the OUT folder explorer's frames are drawn from")
    out = str(work / "OUT")
    raw["build"] = ours.call("build", out)
    say(f"  build {raw['build'][1].wall:.1f} s: {raw['build'][0]}")

    say("frames + GIF")
    for r in range(2 * repeats + 1):  # a second or two each: more repeats, a steadier median
        for name in ["seed", "explorer"] if r % 2 == 0 else ["explorer", "seed"]:
            gif = str(work / f"{name}.gif")
            arguments = (gif,) if name == "seed" else (out, gif)
            turns.call(name, "frames", "frames", *arguments, repeat=r)
    raw["baseline_mb"] = {name: side.baseline_mb for name, side in turns.sides.items()}
    raw["lifetime_peak_mb"] = {name: side.close() for name, side in turns.sides.items()}
    raw["calls"] = turns.calls
    return raw


def run_pipeline(args: argparse.Namespace) -> dict:
    k = args.checkpoints
    _quiet()
    work = Path(tempfile.mkdtemp(prefix="explorer-bench-"))
    try:
        run = make_run(work / "run", k)
        say(f"run folder {run}: {k} checkpoints")
        peak_before = matmul_peak()
        flops = model_flops_per_image(runs.list_checkpoints(run)[0].path)
        say(f"fp32 matmul peak {peak_before:.1f} GFLOP/s; model {flops / 1e6:.1f} MFLOP/image")
        setup = {"dataset": args.dataset, "limit": args.limit, "run": str(run)}
        seed, ours = Worker("seed", SeedSide, **setup), Worker("explorer", ExplorerSide, **setup)
        try:
            n_images = ours.call("n_images")[0]
            raw = drive(Turns(seed, ours), k, args.repeats, work)
        finally:
            seed.kill()
            ours.kill()
        peak = max(peak_before, matmul_peak())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise(args, raw, n_images, flops, (peak_before, peak))


def summarise(args, raw: dict, n_images: int, flops: float, peaks: tuple) -> dict:
    """Stage times, ratios, memory, GFLOP/s and checks, as written to pipeline.json."""
    k, calls, parts = args.checkpoints, raw["calls"], raw["parts"]
    decode = parts[0].get("decode and resize", 0.0)
    first_umap = calls["UMAP"]["explorer"][0][0].wall
    stages = {
        "embed": compare(
            per_checkpoint(calls["embed"]["seed"][0], k),
            per_checkpoint(calls["embed"]["explorer"][0], k, one_off=decode),
        ),
        "k-NN": compare(repeated(calls["k-NN"]["seed"]), repeated(calls["k-NN"]["explorer"])),
        "PCA": compare(repeated(calls["PCA"]["seed"]), repeated(calls["PCA"]["explorer"])),
        "UMAP": compare(
            per_checkpoint(calls["UMAP"]["seed"][0], k),
            per_checkpoint(
                calls["UMAP"]["explorer"][0], k - 1, one_off=first_umap, skip_first=True
            ),
        ),
        "frames": compare(repeated(calls["frames"]["seed"]), repeated(calls["frames"]["explorer"])),
    }
    build_timings, build = raw["build"]
    writing = sum(build_timings.get(name, 0.0) for name in WRITING)
    totals = {
        "seed": sum(stage["seed"]["seconds"] for stage in stages.values()),
        "explorer": sum(stage["explorer"]["seconds"] for stage in stages.values()) + writing,
    }
    end_to_end = {
        name: {
            "seconds": round(totals[name], 3),
            # highest RSS in any stage above the process's RSS after imports and data loading
            "peak_mb": round(
                max(m.rss_mb for stage in STAGES for run in calls[stage][name] for m in run)
                - raw["baseline_mb"][name],
                1,
            ),
            "process_peak_rss_mb": round(raw["lifetime_peak_mb"][name], 1),
        }
        for name in ("seed", "explorer")
    }
    end_to_end["ratio"] = round(totals["seed"] / totals["explorer"], 2)
    # The bfloat16 opt-in changes only the embedding stage: the same pipeline around it.
    bfloat16 = per_checkpoint(calls["embed bfloat16"]["explorer"][0], k)
    bfloat16["seconds"] = round(bfloat16["seconds"] + decode, 3)  # as the float32 line pays it
    bfloat16_total = (
        totals["explorer"] - stages["embed"]["explorer"]["seconds"] + bfloat16["seconds"]
    )
    end_to_end["explorer_bfloat16"] = {
        "seconds": round(bfloat16_total, 3),
        "ratio": round(totals["seed"] / bfloat16_total, 2),
    }
    # A fresh process also pays numba's compilation on its first UMAP (the warm-up measures it).
    cold = {name: totals[name] + raw["warm"][name] for name in totals}
    end_to_end["cold_process"] = {
        "seed_seconds": round(cold["seed"], 3),
        "explorer_seconds": round(cold["explorer"], 3),
        "ratio": round(cold["seed"] / cold["explorer"], 2),
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
        "stages": stages,
        "explorer_table_writing_seconds": round(writing, 3),
        "end_to_end": end_to_end,
        "explorer_build_once": {
            "seconds": round(build.wall, 3),
            "peak_mb": round(build.peak_mb, 1),
            "run_json_timings": build_timings,
        },
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
        "end to end, --dtype bfloat16": end_to_end["explorer_bfloat16"]["ratio"],
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
    sizes, stages = result["sizes"], result["stages"]
    print(
        f"\n{sizes['images']:,} {sizes['dataset']} images, {sizes['checkpoints']} checkpoints of "
        f"a 6-layer 192-wide ViT (32 px), {result['machine']['cpus']} CPUs "
        f"({result['machine']['cpu']}), repeats {sizes['repeats']}"
    )
    header = (
        f"{'stage':24} {'seed s':>9} {'explorer s':>11} {'ratio':>7} {'target':>7} "
        f"{'met':>4} {'seed MiB':>9} {'explorer MiB':>13} {'others':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, stage in stages.items():
        target = result["targets"].get(name)
        print(
            f"{name:24} {stage['seed']['seconds']:9.2f} {stage['explorer']['seconds']:11.2f} "
            f"{stage['ratio']:6.2f}x {target['target'][3:] if target else '':>7} "
            f"{('yes' if target['met'] else 'NO') if target else '':>4} "
            f"{stage['seed']['peak_mb']:9.1f} {stage['explorer']['peak_mb']:13.1f} "
            f"{stage['outside_load']:7.0%}"
        )
    writing = result["explorer_table_writing_seconds"]
    print(f"{'write tables (explorer)':24} {'':>9} {writing:11.2f}")
    e2e, target = result["end_to_end"], result["targets"]["end to end"]
    print(
        f"{'end to end':24} {e2e['seed']['seconds']:9.2f} {e2e['explorer']['seconds']:11.2f} "
        f"{e2e['ratio']:6.2f}x {target['target'][3:]:>7} {'yes' if target['met'] else 'NO':>4} "
        f"{e2e['seed']['peak_mb']:9.1f} {e2e['explorer']['peak_mb']:13.1f}"
    )
    for name, line in (
        ("embed", result["embedding"]["explorer_bfloat16"]),
        ("end to end", e2e["explorer_bfloat16"]),
    ):
        target = result["targets"][f"{name}, --dtype bfloat16"]
        print(
            f"{name + ', bfloat16':24} {'':>9} {line['seconds']:11.2f} {line['ratio']:6.2f}x "
            f"{target['target'][3:]:>7} {'yes' if target['met'] else 'NO':>4}"
        )
    cold = e2e["cold_process"]
    print(
        f"{'  + first-UMAP compile':24} {cold['seed_seconds']:9.2f} "
        f"{cold['explorer_seconds']:11.2f} {cold['ratio']:6.2f}x"
    )
    emb = result["embedding"]
    print(
        f"\nembedding: {emb['model_mflop_per_image']} MFLOP/image; fp32 matmul peak "
        f"{emb['fp32_peak_gflops']} GFLOP/s; seed {emb['seed_gflops']} GFLOP/s "
        f"({emb['seed_fraction_of_peak']:.0%}), explorer {emb['explorer_gflops']} GFLOP/s "
        f"({emb['explorer_fraction_of_peak']:.0%}; forward alone "
        f"{emb['explorer_forward_only_gflops']} GFLOP/s); explorer parts "
        f"{emb['explorer_parts_seconds']}"
    )
    build = result["explorer_build_once"]
    print(f"explorer.build(run=...) once: {build['seconds']:.1f} s, peak +{build['peak_mb']} MiB")
    print(
        "UMAP warm-up (numba compile + a 4,500-point fit), in the cold-process line only: "
        f"{result['umap_warm_up_seconds']}"
    )
    print(f"checks per checkpoint: {json.dumps(result['checks'])}")
    agreement = result["embedding"]["explorer_bfloat16"]["agreement_with_float32"]
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


def save(section: str, result: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[section] = result
    temporary = RESULTS.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(saved, indent=2) + "\n")
    temporary.replace(RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--knn-only", action="store_true", help="only the k-NN scale check")
    parser.add_argument("--n", type=int, default=60_000, help="--knn-only: rows")
    parser.add_argument("--dim", type=int, default=768, help="--knn-only: dimensions")
    args = parser.parse_args()
    if args.knn_only:
        result = run_knn_only(args)
        save("knn_scale", result)
        print_knn(result)
    else:
        result = run_pipeline(args)
        save("pipeline", result)
        print_pipeline(result)
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
