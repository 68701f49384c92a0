"""Sharing the embedding work across processes, GPUs and machines with Hugging Face Accelerate.

Embedding every checkpoint is the expensive part of a build. Under `accelerate launch` (or
`explorer build --processes N`, which starts the same), the C units of work (the checkpoints of
a run, or the two models) are shared between the W processes in two parts:

1. the first (C // W) * W units go whole, round-robin: process r embeds units r, r + W, ...;
2. each of the C % W units left over is shared by images: process r embeds the r-th of W
   contiguous slices of the rows, and the main process joins the slices in row order.

So no process sits idle while another embeds the last checkpoint alone, and 2 models on 3
processes keep all three busy. A checkpoint's embeddings go to its cache
(`checkpoint-N/explorer-cache/`; the main process writes those of a shared checkpoint, as one
process would have); the two models' embeddings go to the main process. The main process then
runs the ordinary single-process pipeline, which finds every embedding cached or kept, so the
output is the single-process output (an image's embedding does not depend on its batch, up to
float rounding of about 1e-6).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache

import torch

from explorer.errors import ExplorerError


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
    if world()[1] > 1:
        _state().wait_for_everyone()


def gather_on_main(part):
    """Every process's `part` (a picklable object, None allowed), in rank order, as a list on
    the main process; None on the others. Only the main process receives the parts."""
    rank, processes = world()
    if processes <= 1:
        return [part]
    import torch.distributed

    parts = [None] * processes if rank == 0 else None
    torch.distributed.gather_object(part, parts, dst=0)
    return parts


def launch(argv: list[str], processes: int, debug: bool = False) -> int:
    """Run `explorer ARGV` in `processes` processes under `accelerate launch`; its exit code.

    On GPUs each process takes one GPU; on the CPU they share the cores (gloo backend).
    A failed process's own message is shown; the launcher's traceback report only with `debug`.
    """
    if processes < 2:
        raise ExplorerError(f"--processes must be at least 2 to share the work, not {processes}")
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
