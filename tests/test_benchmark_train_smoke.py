"""Smoke test of ``benchmarks/train.py --quick``: both loops run and their rows are sane."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench_helpers import quick_run, run_benchmark


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    return quick_run("train", tmp_path_factory.mktemp("bench_train"))


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


def test_variants_one_row_each(tmp_path: Path) -> None:
    """--variants times several settings of ours in one run, after the same reference."""
    data, _ = quick_run("train", tmp_path, "--variants", "plain", "channels_last")
    rows = {r["loop"]: r for r in data["rows"]}
    assert list(rows) == ["reference", "ours[plain]", "ours[channels_last]"]
    assert rows["ours[plain]"]["channels_last"] is False
    assert rows["ours[channels_last]"]["channels_last"] is True
    for r in rows.values():
        assert r["status"] == "ok" and r["images_per_s"] > 0 and r["speedup_vs_ref"] > 0
    bad = run_benchmark("train", "--quick", "--variants", "plain", "--compile")
    assert bad.returncode == 2 and "--variants replaces" in bad.stderr
