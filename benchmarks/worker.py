"""Run one side of a benchmark in its own process and measure every call: wall, CPU, memory.

`Worker(make_side, **setup)` starts a process (spawn) that builds `make_side(**setup)` once
(imports, data: not measured) and then runs the side's methods on request. The parent drives two
workers in turn, so both sides are timed under the same load, yet each keeps its own memory:
a peak measured in one process is not hidden by memory the other side freed.

Each call reports a `Measured`:
- `wall`: seconds, time.perf_counter;
- `cpu`: user + system seconds of the process and of the child processes it waited for;
- `peak_mb`: peak RSS of the process, plus the private memory of its child processes (forked
  workers share the parent's pages; only what they add counts), during the call, above the
  process's RSS when the call started, in MiB. Sampled every 10 ms (children every 100 ms) and
  raised to the kernel's exact high-water mark (ru_maxrss) when the call set a new one;
- `others`: the share of the machine's CPUs that other processes used meanwhile (the machine is
  shared: above ~0.1 the call's timing is suspect).

`whole_process(command)` runs a command as one process and measures it whole, start-up and
imports included (`Whole`): wall seconds, its peak RSS (the kernel's high-water mark, from
os.wait4), the sampled peak of its process tree, and the sampled peak while each stage that an
`explorer: NAME ...` line on its stderr announced was running.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import resource
import subprocess
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MIB = 1024 * 1024
SAMPLE_EVERY = 0.01  # seconds between RSS samples
PRIVATE = ("Private_Clean", "Private_Dirty")
SETTLE = 0.3  # seconds of rest before each call: the other side's OpenMP threads stop spinning


@dataclass
class Measured:
    wall: float
    cpu: float
    peak_mb: float  # above the RSS at the call's start
    rss_mb: float  # the peak itself
    others: float  # share of the machine's CPUs that other processes used during the call


def cpu_seconds() -> float:
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def unique_bytes(process: psutil.Process) -> int:
    """Memory only this process holds (private pages): what it adds beside its parent."""
    try:
        rollup = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:] if ":" in line)
    return sum(int(fields.get(name, "0 kB").split()[0]) for name in PRIVATE) * 1024


class _PeakSampler(threading.Thread):
    """Highest memory of this process (RSS) plus its children (private pages) while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        children: list[psutil.Process] = []
        children_bytes, ticks = 0, 0
        while not self.done.wait(SAMPLE_EVERY):
            if ticks % 10 == 0:  # children: every 100 ms (listing them scans /proc)
                children = self.process.children(recursive=True)
                children_bytes = sum(unique_bytes(child) for child in children)
            ticks += 1
            self.peak = max(self.peak, self.process.memory_info().rss + children_bytes)


def measured_call(function, *args) -> tuple[Any, Measured]:
    """Run `function(*args)`; return its value and how long and how much memory it took."""
    sampler = _PeakSampler()
    start_rss, start_max = sampler.peak, max_rss_bytes()
    sampler.start()
    wall, cpu, busy = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
    value = function(*args)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    others = (machine_busy_seconds() - busy - cpu) / (wall * (os.cpu_count() or 1))
    sampler.done.set()
    sampler.join()
    peak = sampler.peak
    if max_rss_bytes() > start_max:  # a new high-water mark: the kernel's figure is exact
        peak = max(peak, max_rss_bytes())
    return value, Measured(
        wall, cpu, max(peak - start_rss, 0) / MIB, peak / MIB, min(max(others, 0.0), 1.0)
    )


def _serve(make_side, setup: dict, connection) -> None:
    side = make_side(**setup)
    connection.send(("ok", psutil.Process().memory_info().rss / MIB, None))
    while (message := connection.recv()) is not None:
        method, args = message
        time.sleep(SETTLE)
        try:
            value, measured = measured_call(getattr(side, method), *args)
            connection.send(("ok", value, measured))
        except Exception:
            connection.send(("error", traceback.format_exc(), None))
    connection.send(("ok", max_rss_bytes() / MIB, None))


class Worker:
    """A side in its own process. `call(method, *args)` -> (value, Measured). Not a daemon:
    the side may start processes of its own (explorer's animate does)."""

    def __init__(self, name: str, make_side, **setup) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(make_side, setup, theirs), name=name)
        self.process.start()
        self.baseline_mb = self._receive("start")  # RSS after imports and setup

    def _receive(self, what: str) -> Any:
        status, value, measured = self.connection.recv()
        if status == "error":
            raise RuntimeError(f"{self.name}.{what} failed in its worker:\n{value}")
        return value if measured is None else (value, measured)

    def call(self, method: str, *args) -> tuple[Any, Measured]:
        self.connection.send((method, args))
        return self._receive(method)

    def kill(self) -> None:
        """Stop the worker now, if it still runs (after an error)."""
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def close(self) -> float:
        """Stop the worker; return its peak RSS over its whole life, MiB."""
        self.connection.send(None)
        peak = self._receive("close")
        self.process.join()
        return peak


# ---------------------------------------------------------------------------------------------
# A whole process, measured from its start to its end
# ---------------------------------------------------------------------------------------------

STAGE_LINE = re.compile(r"^explorer: (.+) \.\.\.$")  # `Progress.stage` announcing a stage


@dataclass
class Whole:
    seconds: float  # wall, from starting the process to reaping it
    cpu: float  # user + system seconds of the process and the children it waited for
    peak_rss_mb: float  # the kernel's high-water mark of the process (and reaped children)
    tree_peak_mb: float  # sampled: the process's RSS plus its children's private memory
    stage_peaks_mb: dict[str, float] = field(default_factory=dict)  # sampled, per stage
    others: float = 0.0  # share of the machine's CPUs that other processes used meanwhile


def whole_process(command: list[str], *, env: dict | None = None, sample_every: float = 0.05):
    """Run `command` to its end; return a `Whole`. Raises RuntimeError with the end of its
    stderr when it fails. Its stderr is read for stage lines (run it without --quiet to
    have them); its stdout is discarded."""
    busy = machine_busy_seconds()
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    stage = ["start"]
    tail: deque[str] = deque(maxlen=40)
    peaks: dict[str, int] = {}

    def read_stderr() -> None:
        for line in process.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if match := STAGE_LINE.match(line):
                stage[0] = match.group(1)

    def sample() -> None:
        watched = psutil.Process(process.pid)
        children, children_bytes, ticks = [], 0, 0
        while process.returncode is None:
            try:
                if ticks % 10 == 0:
                    children = watched.children(recursive=True)
                    children_bytes = sum(unique_bytes(child) for child in children)
                total = watched.memory_info().rss + children_bytes
            except psutil.Error:  # the process ended between two looks
                return
            ticks += 1
            peaks[stage[0]] = max(peaks.get(stage[0], 0), total)
            time.sleep(sample_every)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_stderr, sample)]
    for thread in threads:
        thread.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    for thread in threads:
        thread.join()
    if process.returncode != 0:
        tail_text = "\n".join(tail)
        raise RuntimeError(f"{command} exited with {process.returncode}:\n{tail_text}")
    cpu = usage.ru_utime + usage.ru_stime
    others = (machine_busy_seconds() - busy - cpu) / (seconds * (os.cpu_count() or 1))
    return Whole(
        seconds=seconds,
        cpu=cpu,
        peak_rss_mb=usage.ru_maxrss * 1024 / MIB,
        tree_peak_mb=max(peaks.values(), default=0) / MIB,
        stage_peaks_mb={name: round(peak / MIB, 1) for name, peak in peaks.items()},
        others=min(max(others, 0.0), 1.0),
    )
