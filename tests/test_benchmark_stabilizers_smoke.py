"""Smoke test of ``benchmarks/stabilizers.py --quick``: two searched methods over two seeds,
the two that re-derive plain DARTS's searches (the parameter-free cap, DARTS-PT), and the
chance level (cells drawn uniformly from the space)."""

from __future__ import annotations

from pathlib import Path

import yaml
from _bench_helpers import quick_run

from nas.cli.configs import resolve_config
from nas.config import load_config
from nas.search.config import SearchConfig


def data_ops() -> list[str]:
    """The ops of the quick search config's space (what the benchmark's quick run uses)."""
    return list(load_config(SearchConfig, str(resolve_config("quick", "search"))).space.build().ops)


def test_quick_run_reports_each_method_over_its_seeds(tmp_path: Path) -> None:
    work = tmp_path / "work"
    data, out = quick_run("stabilizers", tmp_path / "out", "--work", str(work))
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"darts", "beta+rs", "param_free_cap", "darts_pt", "random"}
    chance = rows.pop("random")
    assert chance["seeds"] == 100 and chance["hessian_first"] is None
    # uniform draws over the quick space's ops other than `none`: the parameter-free share
    # is about (pools + skip) / ops, the agreement that of two independent draws
    ops = [op for op in data_ops() if op != "none"]
    free = sum(op in ("max_pool_3x3", "avg_pool_3x3", "skip_connect") for op in ops) / len(ops)
    assert abs(chance["normal_param_free"] - free) < 0.06
    assert abs(chance["reduce_param_free"] - free) < 0.06
    assert 0 < chance["agreement"] < 2 / len(ops)
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
