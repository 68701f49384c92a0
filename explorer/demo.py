"""`explorer demo`: the whole story offline, on scikit-learn's digits, in about half a minute.

finetune a small ViT from scratch (13 checkpoints) -> build --run -> animate (GIF, MP4) -> show.
Each step is the library call a user would make; the demo only picks the settings.
A second `explorer demo` reuses a finished training run and the cached embeddings.
The film is written into the enriched OUT folder, so `explorer publish` takes it along.
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
    """Write `out/run/` (checkpoints, log.csv) and `out/enriched/` (OUT of `explorer build`,
    with the film as `animation.gif` and `animation.mp4`), then open Spotlight (blocking) if
    `show`.

    Returns `out`. An existing `out` from an earlier demo is reused; `overwrite` starts afresh,
    but only in a folder an earlier demo made (or an empty one): any other folder raises
    `ExplorerError` and is left as it is.
    """
    from explorer.animate import animate
    from explorer.finetune import finetune
    from explorer.pipeline import build
    from explorer.runs import list_checkpoints

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not _is_demo_folder(out):
        raise ExplorerError(
            f"{out} exists and is not a folder of explorer demo: pick another out folder"
        )
    if overwrite:
        shutil.rmtree(out, ignore_errors=True)
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
        film = out / "enriched" / f"animation.{suffix}"
        say(f"3/4 rendering {film}")
        animate(out / "enriched", film, progress=progress)
    if show:
        from explorer.spotlight import serve

        say("4/4 opening Spotlight (Ctrl-C to stop)")
        serve(out / "enriched", layout="checkpoint_review")
    return out


def _is_demo_folder(out: Path) -> bool:
    """A folder an earlier demo made: its run folder holds explorer's training record."""
    from explorer.runs import RECORD_FILE

    return (out / "run" / RECORD_FILE).is_file() or (out / "run" / "log.csv").is_file()


def _checkpoints(run: Path, list_checkpoints) -> list:
    try:
        return list_checkpoints(run)
    except ExplorerError:
        return []
