"""What a run shows while it works: our own progress lines and stage timings; the libraries quiet.

`Progress.say` prints one `explorer: ...` line; `Progress.stage(name)` announces a stage and
adds its seconds to `Progress.timings` (which run.json records). `quiet_libraries()` turns
off the progress bars of datasets and transformers, which would repeat ours per step, and
with `notices=True` transformers' notices too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Progress lines on stderr (when `show`), and the seconds each named stage took."""

    def __init__(self, show: bool = True) -> None:
        self.show = show
        self.timings: dict[str, float] = {}  # stage -> seconds, summed over its runs

    def say(self, message: str) -> None:
        """Print `explorer: message` on stderr, when shown."""
        if self.show:
            print(f"explorer: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Say `name ...`, then add the block's seconds to `timings[name]` (when it succeeds)."""
        self.say(f"{name} ...")
        start = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)


@contextmanager
def quiet_libraries(*, notices: bool = False) -> Iterator[None]:
    """Within the block, no progress bars from datasets or transformers; with `notices`, no
    transformers notices below errors either (such as "no torchvision, using PIL" when an image
    processor is made, of which only the numbers are used). Restores what was on before."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets_bars = datasets.is_progress_bar_enabled()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    if notices:
        transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if transformers_bars:
            transformers_logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()
