"""Multi-objective trials are scored on the holdout of the training set (``val_acc``) and
never load the test split, in-process and through the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _mo_helpers import TINY

import nas.data
from nas.config import load_config
from nas.search.mo.trial import MOConfig, run_trial

SPACE = [o for o in TINY if not o.startswith("data.")]


@pytest.fixture
def no_test_split(monkeypatch):
    """Synthetic data whose test split raises if anything loads it."""
    real = nas.data.DATASETS["synthetic"]

    def guarded(split, root, download, kw):
        if split == "test":
            raise AssertionError("the test split was loaded by a multi-objective trial")
        return real(split, root, download, kw)

    monkeypatch.setitem(nas.data.DATASETS, "synthetic", guarded)


def test_trial_reports_holdout_accuracy_without_loading_test(tmp_path, no_test_split):
    cfg = load_config(MOConfig, None, [f"run_dir={tmp_path}", *TINY])
    params = {}
    for cell in ("normal", "reduce"):
        for node, pair in ((0, "0,1"), (1, "1,2")):
            params[f"{cell}_n{node}_inputs"] = pair
            params[f"{cell}_n{node}_op0"] = params[f"{cell}_n{node}_op1"] = "sep_conv_3x3"
    epochs = []
    metrics = run_trial(params, cfg, tmp_path / "t0", on_epoch=epochs.append)
    result = json.loads((tmp_path / "t0" / "train" / "result.json").read_text())
    assert result["test_acc"] is None and result["val_acc"] is not None
    assert metrics["val_acc"] == pytest.approx(result["val_acc"])
    assert "accuracy" not in metrics and metrics["epochs"] == cfg.budget.epochs
    # every epoch report is a complete row: costs and feasibility known before training
    assert [e["epochs"] for e in epochs] == list(range(1, cfg.budget.epochs + 1))
    assert epochs[-1]["val_acc"] == metrics["val_acc"]
    assert epochs[-1]["params"] == metrics["params"] and epochs[-1]["feasible"]


def _npz_without_test(path: Path) -> Path:
    """A dataset file with train arrays only: loading its test split is a DataError."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % 3
    x = (rng.integers(0, 60, (40, 8, 8, 3)) + 60 * y[:, None, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.slow
def test_mo_search_cli_never_loads_the_test_split(tmp_path):
    data = _npz_without_test(tmp_path / "train_only.npz")
    run = tmp_path / "mo"
    cmd = [sys.executable, "-m", "nas.cli.main", "mo-search", "quick", f"run_dir={run}",
           f"data.name=npz:{data}", "data.limit=null", "data.batch_size=16",
           "data.eval_batch_size=32", *SPACE, "n_trials=2"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert len(rows) == 2 and "accuracy" not in rows[0]
    for row in rows:
        result = json.loads((Path(row["trial_dir"]) / "train" / "result.json").read_text())
        assert result["test_acc"] is None
        assert float(row["val_acc"]) == pytest.approx(result["val_acc"])
    assert "val_acc (holdout" in (run / "pareto.md").read_text()
    assert "test accuracy" not in done.stderr
    assert " 1 train images" not in done.stderr  # shape probes must not log a fake size
    assert "npz" in done.stderr and "(test)" not in done.stderr
