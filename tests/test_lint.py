"""The codebase stays ruff-clean and ruff-formatted: the checks a developer runs
(`ruff check . && ruff format --check .`), as tests CI runs."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff() -> str:
    """The ruff installed beside this Python (the project's pinned floor), else the one on PATH."""
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.exists() else shutil.which("ruff") or "ruff"


def test_ruff_check_is_clean():
    result = subprocess.run([ruff(), "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_check_is_clean():
    result = subprocess.run(
        [ruff(), "format", "--check", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
