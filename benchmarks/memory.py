"""Benchmark: peak memory of a whole `explorer build --run` at 60,000 images x 768 dims x 12
checkpoints.

    .venv/bin/python benchmarks/memory.py        # 60,000 Fashion-MNIST train images, 3 repeats
    .venv/bin/python benchmarks/memory.py --limit 1000 --checkpoints 3 --repeats 1  # a check
    .venv/bin/python benchmarks/memory.py --repeats 1 --append  # one more build, kept with the rest

The run: --checkpoints checkpoints of a 1-layer, 768-wide ViT at 32 px (patch 4) with a
10-class head (benchmarks/random_run.py), and its loss log.

The embeddings: embedding 720,000 images with that model takes hours on a 2-core CPU, so by
default the checkpoints' embedding caches are filled first with synthetic ones (768-d float32
vectors clustered by label and drifting from checkpoint to checkpoint, and softmax
probabilities), written by explorer's own `cache.Embedder.keep` at the keys the build reads.
The build then reads them from the caches, as any re-run does, and does all that follows (k-NN,
outlier scores, PCA, UMAP, duplicates, predictions, tables) on them. Each repeat checks that no
checkpoint was embedded. `--embed` clears the caches before each repeat instead, so that every
build embeds every checkpoint (the peak while embedding is then in `stage_peaks_mb["embed"]`).

Each repeat is one whole process, measured from its start to its end (benchmarks/worker.py,
`whole_process`):

    python -m explorer build --run RUN --dataset fashion-mnist --split train --limit 60000
        --out OUT --overwrite

peak RSS = the kernel's high-water mark of the process (os.wait4, what `/usr/bin/time -v`
reports as "Maximum resident set size"); the peak per stage is sampled every 50 ms and
attributed to the stage its last `explorer: NAME ...` line announced.

Results go to benchmarks/results/memory.json (written after every repeat).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import signal
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from random_run import make_run  # noqa: E402
from worker import whole_process  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "memory.json"
VIT_768 = dict(
    image_size=32,
    patch_size=4,
    num_channels=3,
    hidden_size=768,
    num_hidden_layers=1,
    num_attention_heads=12,
    intermediate_size=3072,
)
CLASSES = 10


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fill_caches(run: str, dataset: str, split: str, limit: int) -> None:
    """Write synthetic embeddings into every checkpoint's cache, where `explorer build` with
    these settings (and the other settings' defaults) looks for them."""
    from dataclasses import replace

    import numpy as np

    from explorer import data, embed, runs
    from explorer.cache import Embedder
    from explorer.config import BuildConfig
    from explorer.embed import Embedded
    from explorer.progress import Progress

    config = BuildConfig.with_preset(None, dataset=dataset, split=split, limit=limit, run=run)
    config = replace(config, device=embed.pick_device(config.device))  # as build_with does
    embedder = Embedder(config, Progress(False))
    images = data.load(dataset, split, limit)
    checkpoints = runs.list_checkpoints(run)
    embedder.pixels(images, embed.Preprocessing.from_model(checkpoints[0].path))
    labels = np.asarray(images["label"])
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLASSES, VIT_768["hidden_size"])).astype(np.float32)
    noise = rng.standard_normal((len(labels), VIT_768["hidden_size"]), dtype=np.float32)
    for i, checkpoint in enumerate(checkpoints):
        separation = (i + 1) / len(checkpoints)  # classes drift apart as training goes on
        vectors = separation * centres[labels] + noise
        logits = rng.normal(size=(len(labels), CLASSES)).astype(np.float32)
        logits[np.arange(len(labels)), labels] += 3 * separation
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        facts = embedder.embeddings(checkpoint, images, rows=slice(0, 2)).facts  # the real ones
        embedder.keep(checkpoint, images, Embedded(vectors, probabilities, facts))
        say(f"  cache of {checkpoint.name} filled")


def clear_caches(run: Path) -> None:
    for cache in run.glob("checkpoint-*/explorer-cache"):
        shutil.rmtree(cache)


def embeddings_kind(args: argparse.Namespace) -> str:
    return "embedded by each build" if args.embed else "synthetic, read from the caches"


def summary(args: argparse.Namespace, samples: list, timings: dict, earlier: dict) -> dict:
    """The result JSON over this invocation's builds and, with --append, the builds `earlier`
    (the results file's previous content) measured with the same settings."""
    peaks = earlier.get("peak_rss_samples_mb", []) + [round(w.peak_rss_mb, 1) for w in samples]
    seconds = earlier.get("seconds_samples", []) + [round(w.seconds, 1) for w in samples]
    stage_peaks = dict(earlier.get("stage_peaks_mb", {}))
    for w in samples:
        for stage, peak in w.stage_peaks_mb.items():
            stage_peaks[stage] = round(max(stage_peaks.get(stage, 0.0), peak), 1)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "build_command": args.build_command,
        "dataset": args.dataset,
        "split": args.split,
        "images": args.limit,
        "checkpoints": args.checkpoints,
        "model": {"type": "vit", **VIT_768, "num_labels": CLASSES},
        "embeddings": embeddings_kind(args),
        "repeats": len(peaks),
        "peak_rss_mb": round(statistics.median(peaks), 1),
        "peak_rss_samples_mb": peaks,
        "process_tree_peak_mb": round(
            max([earlier.get("process_tree_peak_mb", 0.0)] + [w.tree_peak_mb for w in samples]), 1
        ),
        "stage_peaks_mb": stage_peaks,
        "seconds": round(statistics.median(seconds), 1),
        "seconds_samples": seconds,
        "outside_load": round(
            max([earlier.get("outside_load", 0.0)] + [w.others for w in samples]), 2
        ),
        "run_json_timings": timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    parser.add_argument("--split", default="train", help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=60_000, help="images (default: %(default)s)")
    parser.add_argument("--checkpoints", type=int, default=12, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="whole builds (default: 3)")
    parser.add_argument(
        "--embed", action="store_true", help="embed in every build instead of synthetic caches"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="JSON file to write (default: benchmarks/results/memory.json)",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the builds already in --results (same settings) and add --repeats more",
    )
    args = parser.parse_args()
    earlier = json.loads(args.results.read_text()) if args.append else {}
    settings = ("dataset", "split", "images", "checkpoints", "embeddings")
    mine = {"dataset": args.dataset, "split": args.split, "images": args.limit,
            "checkpoints": args.checkpoints, "embeddings": embeddings_kind(args)}  # fmt: skip
    if earlier and any(earlier.get(k) != mine[k] for k in settings):
        raise SystemExit(f"--append: {args.results} was measured with other settings")
    # a SIGTERM ends the run through `finally`: the caches (GBs at full size) are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="explorer-memory-"))
    try:
        run = make_run(work / "run", args.checkpoints, classes=CLASSES, vit=VIT_768)
        command = [sys.executable, "-m", "explorer", "build", "--run", str(run), "--dataset",
                   args.dataset, "--split", args.split, "--limit", str(args.limit), "--out",
                   str(work / "OUT"), "--overwrite"]  # fmt: skip
        args.build_command = " ".join(["explorer", *command[3:]])
        if not args.embed:
            say("filling the embedding caches with synthetic embeddings")
            fill = multiprocessing.get_context("spawn").Process(
                target=fill_caches, args=(str(run), args.dataset, args.split, args.limit)
            )
            fill.start()
            fill.join()
            if fill.exitcode != 0:
                raise SystemExit("filling the caches failed")
        samples = []
        for r in range(args.repeats):
            if args.embed:
                clear_caches(run)
            whole = whole_process(command)
            timings = json.loads((work / "OUT" / "run.json").read_text())["timings"]
            if not args.embed and "embed" in timings:
                raise SystemExit("the build embedded: the synthetic caches were not read")
            samples.append(whole)
            say(
                f"  build {r + 1}: {whole.seconds:.1f} s, peak RSS {whole.peak_rss_mb:.0f} MiB, "
                f"per stage {whole.stage_peaks_mb}, others {whole.others:.0%}"
            )
            result = summary(args, samples, timings, earlier)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{args.limit:,} images x {VIT_768['hidden_size']} dims x {args.checkpoints} checkpoints: "
        f"peak RSS median {result['peak_rss_mb']:.0f} MiB over {result['repeats']} builds "
        f"{result['peak_rss_samples_mb']}; per stage {result['stage_peaks_mb']}"
    )
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
