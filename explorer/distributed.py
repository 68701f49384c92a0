"""Sharing the embedding work across processes, GPUs and machines with Hugging Face Accelerate.

Embedding every checkpoint is the expensive part of a build. Under `accelerate launch` (or
`explorer build --processes N`, which starts the same), each process embeds its share of the
checkpoints into their caches (`checkpoint-N/explorer-cache/`); the main process then runs the
ordinary single-process pipeline, which finds every embedding cached. The output is therefore
the single-process output. With two models instead of a run, each process embeds its share of
the two and the results are gathered on the main process.
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


def gather(objects: list) -> list:
    """Concatenate every process's list of (picklable) objects, in rank order, on all ranks."""
    if world()[1] <= 1:
        return objects
    from accelerate.utils import gather_object

    return gather_object(objects)


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
