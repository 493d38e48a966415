"""Benchmarks write their files row by row (``_common.ResultsWriter``): a run killed by a
time limit, as ``gpu_check.sh`` steps can be, still leaves the rows it had measured."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from _bench_helpers import BENCHMARKS, ROOT

sys.path.insert(0, str(BENCHMARKS))
from _common import ResultsWriter  # noqa: E402


def _ratios(rows: list[dict]) -> None:
    for r in rows:
        r["ratio"] = r["ms"] / rows[0]["ms"]


def test_every_row_rewrites_the_files_then_finish_marks_them_complete(tmp_path: Path) -> None:
    writer = ResultsWriter("toy", {"device": "cpu"}, tmp_path, ("case", "ms", "ratio"),
                           derive=_ratios)
    writer.add({"case": "a", "ms": 2.0, "_bytes": 10})
    first = json.loads((tmp_path / "toy.json").read_text())
    assert first["metadata"]["complete"] is False and first["metadata"]["rows_done"] == 1
    assert first["rows"] == [{"case": "a", "ms": 2.0, "ratio": 1.0}]  # `_` keys left out
    writer.add({"case": "b", "ms": 3.0, "_bytes": 20})
    second = json.loads((tmp_path / "toy.json").read_text())
    assert [r["ratio"] for r in second["rows"]] == [1.0, 1.5]
    assert "| b | 3.00 | 1.50 |" in (tmp_path / "toy.md").read_text()
    assert "_bytes" in writer.rows[0] and "ratio" not in writer.rows[0]  # copies derived
    assert not list(tmp_path.glob("*.tmp"))  # replaced atomically
    writer.finish({"device": "cpu", "summary": 1}, notes=["final"])
    final = json.loads((tmp_path / "toy.json").read_text())
    assert final["metadata"]["complete"] is True and len(final["rows"]) == 2


def test_a_killed_run_leaves_the_rows_it_had(tmp_path: Path) -> None:
    """ops.py over every op at a generous per-measurement budget takes minutes; kill it
    once its first rows are on disk."""
    cmd = [sys.executable, str(BENCHMARKS / "ops.py"), "--device", "cpu", "--threads", "1",
           "--quick", "--budget", "0.3", "--repeats", "100", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path, data = tmp_path / "ops.json", None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if path.is_file():
                data = json.loads(path.read_text())
                if data["metadata"]["rows_done"] >= 2:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    data = json.loads(path.read_text())  # what the killed run left
    assert data["metadata"]["complete"] is False and data["metadata"]["rows_done"] >= 2
    rows = data["rows"]
    assert rows[0]["op"] == "conv3x3" and all(r["fwd_bwd_ms"] > 0 for r in rows)
    assert rows[0]["ratio_vs_conv3x3"] == 1.0  # derived columns in the partial file too
    assert "partial:" in (tmp_path / "ops.md").read_text()
