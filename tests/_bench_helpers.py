"""Shared by the ``benchmarks/*.py --quick`` smoke tests: run a script, read its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<name>.py`` on the CPU with one torch thread, plus ``args``."""
    # One thread: on a busy shared CPU, multi-threaded tiny convolutions can be 100x slower.
    cmd = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--device", "cpu", "--threads", "1"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def quick_run(name: str, out: Path, *args: str) -> tuple[dict, Path]:
    """``--quick`` run writing to ``out``; must exit 0. The parsed ``<name>.json`` and ``out``."""
    proc = run_benchmark(name, "--quick", *args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / f"{name}.json").read_text()), out
