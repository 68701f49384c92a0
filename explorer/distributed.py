"""Sharing the embedding work across processes, GPUs and machines with Hugging Face Accelerate.

Embedding every checkpoint is the expensive part of a build. Under `accelerate launch` (or
`explorer build --processes N`, which starts the same), the C units of work (the checkpoints of
a run, or the two models) are shared between the W processes in two parts:

1. the first (C // W) * W units go whole, round-robin: process r embeds units r, r + W, ...;
2. each of the C % W units left over is shared by images: process r embeds the r-th of W
   contiguous slices of the rows, and the main process joins the slices in row order.

So no process sits idle while another embeds the last checkpoint alone, and 2 models on 3
processes keep all three busy (`embed_share`). A checkpoint's embeddings go to its cache
(`checkpoint-N/explorer-cache/`; the main process writes those of a shared checkpoint, as one
process would have); the two models' embeddings go to the main process. The main process then
runs the ordinary single-process pipeline, which finds every embedding cached or kept, so the
output is the single-process output (an image's embedding does not depend on its batch, up to
float rounding of about 1e-6).

`launched(argv, processes)` is how `explorer build --processes N` starts the N processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer import runs
from explorer.embed import Embedded
from explorer.errors import ExplorerError

if TYPE_CHECKING:
    import datasets

    from explorer.cache import Embedder


@cache
def _state():
    from accelerate import PartialState

    # Without a GPU, cpu=True makes Accelerate join the processes over gloo (MULTI_CPU).
    return PartialState(cpu=not torch.cuda.is_available())


def world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) outside a distributed launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    state = _state()
    return state.process_index, state.num_processes


def local_device(device: str) -> str:
    """`cuda` means this process's own GPU under a launch (cuda:LOCAL_RANK)."""
    if device == "cuda" and world()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def wait_for_everyone() -> None:
    """Return when every process has come here (at once outside a launch)."""
    if world()[1] > 1:
        _state().wait_for_everyone()


def gather_on_main(part: object) -> list | None:
    """Every process's `part` (a picklable object, None allowed), in rank order, as a list on
    the main process; None on the others. Only the main process receives the parts."""
    rank, processes = world()
    if processes <= 1:
        return [part]
    import torch.distributed

    parts = [None] * processes if rank == 0 else None
    torch.distributed.gather_object(part, parts, dst=0)
    return parts


def embed_share(
    embedder: Embedder,
    images: datasets.Dataset,
    models: list[str | runs.Checkpoint],
    rank: int,
    processes: int,
) -> None:
    """Embed this process's share of `models` (the scheme is in the module's docstring).

    The first (len(models) // processes) * processes checkpoints or models go whole,
    round-robin; each one left over is shared by a slice of the rows per process, joined in
    row order on the main process. Checkpoints go to their caches; the models' embeddings are
    kept (`Embedder.keep`) on the main process. Returns when every process is done.
    """
    whole = len(models) // processes * processes
    kept = []  # (model, embedded) of the models (not checkpoints), for the main process
    for model in models[rank:whole:processes]:
        embedded = embedder.embeddings(model, images)
        if not isinstance(model, runs.Checkpoint):
            kept.append((model, embedded))
    for model in models[whole:]:
        n = images.num_rows
        rows = slice(n * rank // processes, n * (rank + 1) // processes)
        name = model.name if isinstance(model, runs.Checkpoint) else Path(model).name
        embedder.progress.say(
            f"{name}: images {rows.start}-{rows.stop - 1} of {n} in this process, "
            f"the others in {processes - 1} more"
        )
        part = embedder.embeddings(model, images, rows) if rows.start < rows.stop else None
        parts = gather_on_main(part)
        if rank == 0:
            embedder.keep(model, images, joined(parts))
    for share in gather_on_main(kept) or []:  # None on the other processes
        for model, embedded in share:
            embedder.keep(model, images, embedded)
    wait_for_everyone()


def joined(parts: list[Embedded | None]) -> Embedded:
    """One `Embedded` from the processes' row slices, in rank order (None: a process without
    rows)."""
    parts = [part for part in parts if part is not None]
    vectors = np.concatenate([part.vectors for part in parts])
    probabilities = (
        None
        if parts[0].probabilities is None
        else np.concatenate([part.probabilities for part in parts])
    )
    return Embedded(vectors, probabilities, parts[0].facts)


def launched(argv: list[str], processes: int, debug: bool = False) -> int | None:
    """Run `explorer ARGV` (less its --processes) in `processes` processes, when asked for
    more than one and not already one of a launch; its exit code, else None (this process is
    to do the work itself)."""
    if processes <= 1 or int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return None
    return launch(_without_option(argv, "--processes"), processes, debug=debug)


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv less `option VALUE` (or `option=VALUE`)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            kept.append(item)
    return kept


def launch(argv: list[str], processes: int, debug: bool = False) -> int:
    """Run `explorer ARGV` in `processes` processes under `accelerate launch`; its exit code.

    On GPUs each process takes one GPU; on the CPU they share the cores (gloo backend).
    A failed process's own message is shown; the launcher's traceback report only with `debug`.
    """
    if processes < 2:
        raise ExplorerError(f"processes must be at least 2 to share the work, not {processes}")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
        # --multi_gpu is Accelerate's torchrun launcher; on the CPU the processes use gloo
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",
        "-m", "explorer", *argv,
    ]  # fmt: skip
    # Split the cores between the processes rather than letting each take them all.
    threads = max(1, (os.cpu_count() or 1) // processes)
    environment = {"OMP_NUM_THREADS": str(threads), **os.environ}
    code = _run_quietly(command, environment, debug)
    if code != 0:
        print(
            f"explorer: error: a process of the {processes} failed (its message is above); "
            "finished checkpoints are cached: run the same command again to resume",
            file=sys.stderr,
        )
        return 2
    return 0


def _run_quietly(command: list[str], environment: dict, debug: bool) -> int:
    """Run `command`, passing its stderr through until the launcher starts a traceback."""
    process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE)
    hiding = False
    for chunk in iter(lambda: process.stderr.read1(65536), b""):
        if not debug and not hiding and b"Traceback (most recent call last)" in chunk:
            chunk, hiding = chunk.split(b"Traceback (most recent call last)")[0], True
        if not hiding or debug:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
    return process.wait()
