"""Smoke test of ``benchmarks/ops.py --quick``: it runs, and its JSON has sane rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from _bench_helpers import BENCHMARKS, quick_run

SCRIPT = BENCHMARKS / "ops.py"


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    return quick_run("ops", tmp_path_factory.mktemp("bench"), "--ops", "c2sp*")


def test_quick_rows_have_positive_times(quick_result: tuple[dict, Path]) -> None:
    data, _ = quick_result
    rows = data["rows"]
    ops = {r["op"] for r in rows}
    assert {"conv3x3", "sep_conv_3x3", "c2sp_conv_2x2"} <= ops
    assert "none" not in ops
    assert {r["stride"] for r in rows} == {1, 2}
    for r in rows:
        assert r["fwd_bwd_ms"] > 0, r
        assert r["eval_ms_train_form"] > 0 and r["eval_ms_deploy"] > 0, r
        assert r["macs"] > 0 and r["params"] > 0, r


def test_reference_ratios_are_one(quick_result: tuple[dict, Path]) -> None:
    data, _ = quick_result
    conv = [r for r in data["rows"] if r["op"] == "conv3x3"]
    sep = [r for r in data["rows"] if r["op"] == "sep_conv_3x3"]
    assert conv and sep
    assert all(r["ratio_vs_conv3x3"] == 1.0 and r["mem_ratio_vs_conv3x3"] == 1.0 for r in conv)
    assert all(r["ratio_vs_sep3x3"] == 1.0 for r in sep)


def test_metadata_and_markdown(quick_result: tuple[dict, Path]) -> None:
    data, out = quick_result
    meta = data["metadata"]
    assert meta["mem_method"] == "saved_tensors_hooks"
    assert meta["failures"] == []
    assert meta["git_sha"]
    table = (out / "ops.md").read_text()
    assert "| op | C | H | stride |" in table and "saved_tensors_hooks" in table


def test_unknown_op_pattern_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (no second interpreter start): the script imports its sibling ``_common``.
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_ops", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_ops", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    status = module.main(["--quick", "--ops", "no_such_op*", "--out", str(tmp_path)])
    assert status == 2
    assert "no_such_op" in capsys.readouterr().err
    assert not (tmp_path / "ops.json").exists()
