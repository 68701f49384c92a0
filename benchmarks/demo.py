"""Benchmark: how long the README's `explorer demo` takes, Spotlight aside.

    .venv/bin/python benchmarks/demo.py [--repeats 3]

Each repeat is one whole `explorer demo --no-show --overwrite --out TMP` process (fine-tune on
digits, build over every checkpoint with its reference, film), timed from its start to its end
(benchmarks/worker.py, `whole_process`). Results go to benchmarks/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from worker import whole_process  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "demo.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="(default: %(default)s)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="explorer-demo-bench-"))
    try:
        command = [sys.executable, "-m", "explorer", "demo", "--no-show", "--overwrite",
                   "--out", str(work / "demo")]  # fmt: skip
        samples = [whole_process(command) for _ in range(args.repeats)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "explorer demo --no-show --overwrite --out TMP",
        "repeats": args.repeats,
        "seconds": round(statistics.median(w.seconds for w in samples), 1),
        "seconds_samples": [round(w.seconds, 1) for w in samples],
        "peak_rss_mb": round(statistics.median(w.peak_rss_mb for w in samples), 1),
        "outside_load": round(max(w.others for w in samples), 2),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
