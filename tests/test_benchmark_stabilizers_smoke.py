"""Smoke test of ``benchmarks/stabilizers.py --quick``: two searched methods over two seeds,
and the two that re-derive plain DARTS's searches (the parameter-free cap, DARTS-PT)."""

from __future__ import annotations

from pathlib import Path

import yaml
from _bench_helpers import quick_run


def test_quick_run_reports_each_method_over_its_seeds(tmp_path: Path) -> None:
    work = tmp_path / "work"
    data, out = quick_run("stabilizers", tmp_path / "out", "--work", str(work))
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"darts", "beta+rs", "param_free_cap", "darts_pt"}
    for row in rows.values():
        assert row["seeds"] == 2
        assert 0 <= row["normal_param_free"] <= 1 and 0 <= row["reduce_param_free"] <= 1
        assert 0 <= row["agreement"] <= 1
        assert isinstance(row["hessian_first"], float) and isinstance(row["hessian_last"], float)
    # the cap re-derives the same supernets: at most 2 of the 4 normal edges parameter-free
    assert rows["param_free_cap"]["normal_param_free"] <= min(
        0.5, rows["darts"]["normal_param_free"])
    for seed in (0, 1):  # DARTS-PT ran on plain DARTS's finished folders (nas select)
        assert (work / "darts" / f"seed{seed}" / "genotype_pt.yaml").is_file()
    assert rows["darts_pt"]["search_s"] > 0
    # each method ran with its own switches
    stab = yaml.safe_load((work / "beta+rs" / "seed0" / "config.yaml").read_text())["stabilize"]
    assert stab["beta"] == 25 and stab["rs_epsilon"] == 0.3
    plain = yaml.safe_load((work / "darts" / "seed0" / "config.yaml").read_text())["stabilize"]
    assert plain["beta"] == 0 and plain["rs_epsilon"] == 0
    assert (out / "stabilizers.md").read_text().startswith("# stabilizers")
