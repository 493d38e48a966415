"""Smoke test of ``benchmarks/search.py --quick``: both loops run and their rows are sane."""

from __future__ import annotations

from pathlib import Path

import pytest
from _bench_helpers import quick_run


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    return quick_run("search", tmp_path_factory.mktemp("bench_search"))


def test_both_loops_have_positive_rates(quick_result: tuple[dict, Path]) -> None:
    data, _ = quick_result
    rows = data["rows"]
    batches = {r["batch"] for r in rows}
    assert len(batches) == 2
    for batch in batches:
        loops = {r["loop"]: r for r in rows if r["batch"] == batch}
        assert set(loops) == {"ours", "reference"}
        for r in loops.values():
            assert r["status"] == "ok", r
            assert r["steps_per_s"] > 0 and r["images_per_s"] > 0 and r["ms_per_step"] > 0, r
            assert r["peak_mem_MB"] > 0, r
            assert r["speedup_vs_ref"] > 0 and r["mem_ratio_vs_ref"] > 0, r
        ref, ours = loops["reference"], loops["ours"]
        assert ref["speedup_vs_ref"] == 1.0 and ref["mem_ratio_vs_ref"] == 1.0
        assert ref["partial_k"] == 1 and not ref["edge_norm"] and ref["dtype"] == "fp32"
        assert ours["partial_k"] == 4 and ours["edge_norm"]
        assert ref["loader"].startswith("torchvision") and ours["loader"] == "BatchLoader"


def test_metadata_and_markdown(quick_result: tuple[dict, Path]) -> None:
    data, out = quick_result
    meta = data["metadata"]
    assert meta["mem_method"] == "saved_tensors_hooks"
    assert meta["failures"] == []
    assert meta["space"] == "full"
    table = (out / "search.md").read_text()
    assert "| loop | batch | device |" in table and "settings:" in table


@pytest.fixture(scope="module")
def fused_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    return quick_run("fused", tmp_path_factory.mktemp("bench_fused"))


def test_fused_benchmark_rows(fused_result: tuple[dict, Path]) -> None:
    """``benchmarks/fused.py --quick``: every case has a reference and a fused row."""
    data, out = fused_result
    rows = data["rows"]
    assert {r["case"] for r in rows} == {
        "darts-k1-first", "darts-k1-second", "full-k4-edgenorm-first"
    }
    for case in {r["case"] for r in rows}:
        paths = {r["path"]: r for r in rows if r["case"] == case}
        assert set(paths) == {"reference", "fused"}
        for r in paths.values():
            assert r["status"] == "ok", r
            assert r["ms_per_step"] > 0 and r["images_per_s"] > 0 and r["peak_mem_MB"] > 0, r
        assert paths["reference"]["speedup_vs_ref"] == 1.0
        assert paths["fused"]["speedup_vs_ref"] > 0
    assert data["metadata"]["failures"] == []
    assert "| case | path | space |" in (out / "fused.md").read_text()


def test_fused_benchmark_profile(tmp_path: Path) -> None:
    """``--profile N``: one step per row, its operator calls and the top N operators."""
    data, _ = quick_run("fused", tmp_path, "--cases", "darts-k1-first", "--profile", "3")
    rows = data["rows"]
    profiles = data["metadata"]["profile"]
    assert set(profiles) == {f"{r['case']} {r['path']}" for r in rows}
    for prof in profiles.values():
        assert prof["op_calls"] > 0 and prof["self_time_ms"] > 0
        assert len(prof["top"]) == 3 and all(e["calls"] > 0 for e in prof["top"])
        assert prof["top"][0]["self_ms"] >= prof["top"][-1]["self_ms"]
