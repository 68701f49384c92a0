"""`explorer demo`: the whole story offline, on scikit-learn's digits, in about a minute.

finetune a small ViT from scratch (13 checkpoints) -> build --run -> animate (GIF, MP4) -> show.
Each step is the library call a user would make; the demo only picks the settings.
A second `explorer demo` reuses a finished training run and the cached embeddings.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from explorer.errors import ExplorerError

DATASET = "digits"
# A ViT this small learns digits from scratch on two CPU cores in about a minute.
TRAINING = {"model": "tiny-vit", "save_steps": 40, "max_steps": 480, "batch_size": 32}


def demo(
    out: str | Path = "explorer-demo",
    show: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write `out/run/` (checkpoints, log.csv), `out/enriched/` (OUT of `explorer build`),
    `out/animation.gif` and `out/animation.mp4`, then open Spotlight (blocking) if `show`.

    Returns `out`. An existing `out` from an earlier demo is reused; `overwrite` starts afresh.
    """
    from explorer.animate import animate
    from explorer.finetune import finetune
    from explorer.pipeline import build
    from explorer.runs import list_checkpoints

    out = Path(out)
    if overwrite:
        shutil.rmtree(out, ignore_errors=True)
    elif out.exists() and any(out.iterdir()) and not (out / "run").exists():
        raise ExplorerError(f"{out} exists and is not a demo folder: pick another --out")
    run = out / "run"

    def say(message: str) -> None:
        if progress:
            print(f"explorer demo: {message}", file=sys.stderr, flush=True)

    last_step = TRAINING["max_steps"]
    if run.exists() and any(c.step == last_step for c in _checkpoints(run, list_checkpoints)):
        say(f"reusing the training run in {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)  # an unfinished run: train again
        say(f"1/4 fine-tuning a small ViT on {DATASET} -> {run}")
        finetune(DATASET, out=run, split="train", eval_split="test", progress=progress, **TRAINING)
    say(f"2/4 enriching the test split at every checkpoint -> {out / 'enriched'}")
    build(DATASET, run=run, split="test", out=out / "enriched", overwrite=True, progress=progress)
    for suffix in ("gif", "mp4"):
        say(f"3/4 rendering {out / f'animation.{suffix}'}")
        animate(out / "enriched", out / f"animation.{suffix}", progress=progress)
    if show:
        from explorer.spotlight import serve

        say("4/4 opening Spotlight (Ctrl-C to stop)")
        serve(out / "enriched", layout="checkpoint_review")
    return out


def _checkpoints(run: Path, list_checkpoints) -> list:
    try:
        return list_checkpoints(run)
    except ExplorerError:
        return []
