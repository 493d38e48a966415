"""Crashes mid-write: the target keeps its old content, the leftover temp file is swept at
the next start (unless its writer is alive), and the chaos script runs end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nas.run import KILL_IN_WRITE, RunDir, atomic_write_text, remove_stale_temp_files

REPO = Path(__file__).resolve().parents[2]


def test_kill_inside_a_write_keeps_the_old_file_and_the_next_start_sweeps(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, '{"old": true}')
    code = ("import sys; from nas.run import atomic_write_text\n"
            "atomic_write_text(sys.argv[1], '{\"new\": true}')\n")
    env = {**os.environ, KILL_IN_WRITE: "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"old": True}
    [leftover] = list(tmp_path.glob(".*.tmp"))  # the write in progress, never renamed
    assert leftover.name.startswith(".result.json.")
    RunDir(tmp_path)  # the next start of a run in this folder
    assert not list(tmp_path.glob(".*.tmp"))
    assert json.loads(target.read_text()) == {"old": True}


def test_a_live_writers_temp_file_is_kept(tmp_path):
    sub = tmp_path / "trials" / "t1"
    sub.mkdir(parents=True)
    live = sub / f".metrics.json.{os.getppid()}.abcd1234.tmp"  # our parent is alive
    dead = sub / ".metrics.json.999999999.abcd1234.tmp"
    old_style = sub / ".metrics.json.abcd1234.tmp"
    for path in (live, dead, old_style):
        path.write_text("partial")
    assert remove_stale_temp_files(tmp_path) == 2
    assert live.exists() and not dead.exists() and not old_style.exists()


@pytest.mark.slow
def test_chaos_script_train_survives_kills(tmp_path):
    """benchmarks/chaos.py on `nas train` with 3 kills (one inside a write)."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "chaos.py"), "--jobs", "train",
         "--kills", "3", "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "chaos.json").read_text())
    [row] = result["rows"]
    assert row["kills"] == 3 and row["kills_in_write"] == 1
    assert row["finished"] and row["same_metrics"] and row["same_genotype"]
    assert row["unreadable"] == []


def test_atomic_writes_have_ordinary_file_modes(tmp_path):
    """mkstemp makes 0600 files; what a run writes is 0644 like the rest of the folder."""
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "{}")
    assert target.stat().st_mode & 0o777 == 0o644
