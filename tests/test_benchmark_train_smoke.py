"""Smoke test of ``benchmarks/train.py --quick``: both loops run and their rows are sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "train.py"


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_train")
    # One thread: on a busy shared CPU, multi-threaded tiny convolutions can be 100x slower.
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "train.json").read_text()), out


def test_both_loops_have_positive_rates(quick_result: tuple[dict, Path]) -> None:
    data, _ = quick_result
    loops = {r["loop"]: r for r in data["rows"]}
    assert set(loops) == {"ours", "reference"}
    for r in loops.values():
        assert r["status"] == "ok", r
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0, r
        assert r["peak_mem_MB"] > 0, r
        assert r["speedup_vs_ref"] > 0 and r["mem_ratio_vs_ref"] > 0, r
    ref, ours = loops["reference"], loops["ours"]
    assert ref["speedup_vs_ref"] == 1.0 and ref["mem_ratio_vs_ref"] == 1.0
    assert ref["dtype"] == "fp32" and ref["loader"].startswith("torchvision")
    assert ours["loader"] == "BatchLoader"
    assert ref["batch"] == ours["batch"] == 4


def test_metadata_and_markdown(quick_result: tuple[dict, Path]) -> None:
    data, out = quick_result
    meta = data["metadata"]
    assert meta["mem_method"] == "saved_tensors_hooks"
    assert meta["failures"] == []
    assert meta["genotype"] == "DARTS_V2"
    # Same network on both sides (the reference's initial weights are loaded into ours).
    assert meta["params"]["ours"] == meta["params"]["reference"] > 0
    table = (out / "train.md").read_text()
    assert "| loop | batch | device |" in table and "settings:" in table
