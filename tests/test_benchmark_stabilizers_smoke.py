"""Smoke test of ``benchmarks/stabilizers.py --quick``: two methods over two seeds."""

from __future__ import annotations

from pathlib import Path

import yaml
from _bench_helpers import quick_run


def test_quick_run_reports_each_method_over_its_seeds(tmp_path: Path) -> None:
    work = tmp_path / "work"
    data, out = quick_run("stabilizers", tmp_path / "out", "--work", str(work))
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"darts", "beta+rs"}
    for row in rows.values():
        assert row["seeds"] == 2
        assert 0 <= row["normal_param_free"] <= 1 and 0 <= row["reduce_param_free"] <= 1
        assert 0 <= row["agreement"] <= 1
        assert isinstance(row["hessian_first"], float) and isinstance(row["hessian_last"], float)
    # each method ran with its own switches
    stab = yaml.safe_load((work / "beta+rs" / "seed0" / "config.yaml").read_text())["stabilize"]
    assert stab["beta"] == 25 and stab["rs_epsilon"] == 0.3
    plain = yaml.safe_load((work / "darts" / "seed0" / "config.yaml").read_text())["stabilize"]
    assert plain["beta"] == 0 and plain["rs_epsilon"] == 0
    assert (out / "stabilizers.md").read_text().startswith("# stabilizers")
