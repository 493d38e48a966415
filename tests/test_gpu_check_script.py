"""``benchmarks/gpu_check.sh --device cpu --smoke``: every step of the GPU acceptance check
runs end to end at tiny sizes, so a broken step is found in CI, not on a rented GPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["install", "tests", "ops", "fused", "train", "dispatch", "e2e_search", "e2e_train"]


def _run(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )


def _summary(out: Path) -> list[dict[str, str]]:
    with (out / "summary.tsv").open() as f:
        rows = csv.reader(f, delimiter="\t")
        return [dict(zip(("step", "exit", "seconds"), row)) for row in rows]


@pytest.mark.slow
def test_cpu_smoke_runs_every_step(tmp_path: Path) -> None:
    out = tmp_path / "check"
    done = _run(out, "--device", "cpu", "--smoke")
    rows = _summary(out)
    failed = {r["step"]: (out / f"{r['step']}.log").read_text()[-2000:]
              for r in rows if r["exit"] != "0"}
    assert not failed, failed
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["step"] for r in rows] == STEPS
    # The install step is a shell function: run under `timeout` it used to be coreutils'
    # install (and every later step lacked the project).
    assert "nas " in (out / "install.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["smoke"] is True and not summary["failed"]
    assert [s["status"] for s in summary["steps"]] == ["ok"] * len(STEPS)
    for name in ("ops", "fused", "train", "dispatch"):
        data = json.loads((out / f"{name}.json").read_text())
        assert data["rows"] and data["metadata"]["device"] == "cpu", name
    for name in ("ops", "fused", "train"):  # written through ResultsWriter
        assert json.loads((out / f"{name}.json").read_text())["metadata"]["complete"] is True
    assert (out / "e2e_search" / "genotype.yaml").is_file()
    assert (out / "e2e_train" / "model.pt").is_file()


def test_a_failing_step_fails_the_script(tmp_path: Path) -> None:
    # `false` as the Python: every step fails at once, and so must the script
    done = _run(tmp_path / "check", "--device", "cpu", "--smoke", PYTHON="false")
    assert done.returncode == 1
    assert "error: failed or timed out: install tests" in done.stderr
    rows = _summary(tmp_path / "check")
    assert rows and all(r["exit"] != "0" for r in rows)


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    done = _run(tmp_path / "check", "--device", "tpu")
    assert done.returncode == 2 and "--device must be cuda or cpu" in done.stderr
    done = _run(tmp_path / "check", "--fast")
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
