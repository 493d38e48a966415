"""`nas mo-search` fails fast, with one line and exit status 2, on data that cannot load
and on trial errors that recur, instead of running every trial into the same error."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from _mo_helpers import TINY
from optuna.trial import TrialState


def _nas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.cli.main", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("driver", ["optuna", "ray"])
def test_data_that_cannot_load_exits_2_before_any_trial(tmp_path, driver):
    empty = tmp_path / "empty.yaml"  # every default: CIFAR-10
    empty.write_text("")
    run = tmp_path / "run"
    done = _nas("mo-search", str(empty), f"run_dir={run}", f"data.root={tmp_path / 'nodata'}",
                "data.download=false", f"driver={driver}")
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr[-3000:]
    assert err[0].startswith("error: cifar10") and "data.root" in err[0]
    assert not (run / "trials").exists()


@pytest.mark.slow
def test_recurring_trial_error_stops_the_study(tmp_path):
    run = tmp_path / "run"
    done = _nas("mo-search", "quick", f"run_dir={run}", *TINY, "n_trials=6",
                "inject_failure=always")
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: trial 1 failed like the trial before it (RuntimeError: "
                           "injected failure"), last
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{run / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


@pytest.mark.slow
def test_recurring_trial_error_stops_the_workers(tmp_path):
    run = tmp_path / "run"
    done = _nas("mo-search", "quick", f"run_dir={run}", *TINY, "n_trials=6", "workers=2",
                "inject_failure=always")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "failed like the trial before it" in done.stderr.strip().splitlines()[-1]
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) <= 4  # two failures per worker, not n_trials attempts each
