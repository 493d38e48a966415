"""Ray Tune driver end to end on a local Ray (2 CPUs): ASHA with a scalarized score keeps
every trial as a row, constraints reach the sampler, and a recurring error stops it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("ray")
from _mo_helpers import TINY, tiny_cfg  # noqa: E402
from test_mo_sampling import first_params_m  # noqa: E402

from nas.cli.main import main  # noqa: E402
from nas.search.mo.ray_driver import score  # noqa: E402

WEIGHTS = {"val_acc": 1.0, "params": 10.0}


@pytest.fixture(scope="module")
def asha_run(tmp_path_factory):
    """3 trials, 2 epochs each, ASHA on Σ weights; trial 0 or 1 is over the params budget."""
    run = tmp_path_factory.mktemp("ray") / "asha"
    a, b = first_params_m(tiny_cfg(run))
    assert a != b
    code = main(["mo-search", "quick", f"run_dir={run}", *TINY, "driver=ray", "n_trials=3",
                 "budget.epochs=2", "ray.num_cpus=2", "ray.max_concurrent=2", "ray.asha=true",
                 "ray.scalarize={val_acc: 1.0, params: 10.0}",
                 f"constraints.params_max_m={(a + b) / 2}"])
    import ray

    ray.shutdown()
    assert code == 0
    return run


@pytest.mark.slow
def test_asha_keeps_every_trial_as_a_row(asha_run):
    rows = list(csv.DictReader((asha_run / "trials.csv").open()))
    assert len(rows) == 3  # stopped trials too (column "stopped"), none dropped
    for r in rows:  # an over-budget trial is not trained; a trained one ran 1 or 2 epochs
        trained, epochs = r["feasible"] == "True", int(r["epochs"])
        assert 1 <= epochs <= 2 if trained else epochs == 0
        assert (r["stopped"] == "True") == (trained and epochs < 2)
    assert (asha_run / "pareto.md").is_file() and (asha_run / "pareto_params.png").is_file()
    front = list(csv.DictReader((asha_run / "pareto.csv").open()))
    assert front and all(r["feasible"] == "True" and r["stopped"] == "False" for r in front)


@pytest.mark.slow
def test_ray_sampler_sees_constraints_and_one_score_form(asha_run):
    study = optuna.load_study(study_name="quick-ray", storage=f"sqlite:///{asha_run / 'study.db'}")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 3
    feasible = [t.user_attrs["feasible"] for t in done]
    assert True in feasible and False in feasible
    for t in done:  # NSGA-II's constrained domination reads these
        assert (t.constraints["params"] > 0) == (not t.user_attrs["feasible"])
        # the value told to the sampler is the score with the cost term, like every report
        assert t.value == pytest.approx(score(t.user_attrs, WEIGHTS))
        # ASHA compared the same form epoch by epoch: the last report is the final score
        assert t.intermediate_values[max(t.intermediate_values)] == pytest.approx(t.value)


@pytest.mark.slow
def test_ray_recurring_error_stops_the_experiment(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nas.cli.main", "mo-search", "quick", f"run_dir={run}", *TINY,
         "driver=ray", "n_trials=4", "ray.num_cpus=2", "ray.max_concurrent=1",
         "inject_failure=always"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "recurs" in last and "injected failure" in last, last
    assert len(list((run / "trials").iterdir())) < 4  # stopped before trying every trial


def test_trial_errors_are_read_as_text_not_unpickled(tmp_path):
    from nas.search.mo.ray_driver import _last_error, _nas_error_names

    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Failure # 1 (occurred at 2026-12-02_09-00-00)\n"
        "ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n"
        '  File "trial.py", line 3, in run_trial\n'
        "RuntimeError: first\n"
        "Failure # 2 (occurred at 2026-12-02_09-00-05)\n"
        "ray::ImplicitFunc.train() (pid=2, ip=127.0.0.1)\n"
        '  File "data.py", line 9, in load_dataset\n'
        "nas.errors.DataError: npz:/x.npz: no such file\n"
    )
    assert _last_error(str(error_file)) == ("DataError", "npz:/x.npz: no such file")
    assert "DataError" in _nas_error_names() and "ConfigError" in _nas_error_names()
    assert _last_error(str(tmp_path / "missing.txt")) == ("RuntimeError", "unknown error")
