"""Multi-objective search: Pareto extraction, Optuna study (SQLite, PostgreSQL), resume,
Ray Tune with a retried trial, and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from _mo_helpers import TINY, tiny_cfg
from optuna.trial import TrialState

from nas.cli.main import main
from nas.genotype import load_genotype
from nas.network import NetworkCIFAR
from nas.pareto import pareto_mask
from nas.search.mo.optuna_driver import open_study, run_mo_search, storage_url
from nas.search.mo.trial import MOConfig


def _cfg(run: Path, *extra: str) -> MOConfig:
    return tiny_cfg(run, *extra)


def test_pareto_mask_three_objectives_hand_made():
    acc = np.array([0.90, 0.92, 0.92, 0.80, 0.95, 0.90])
    params = np.array([1.0, 2.0, 2.0, 0.5, 3.0, 1.0])
    latency = np.array([5.0, 4.0, 6.0, 9.0, 8.0, 4.0])
    # 0 is dominated by 5 (same acc & params, faster); 2 by 1; 3 survives on params alone.
    assert pareto_mask(acc, params, latency).tolist() == [False, True, False, True, True, True]
    assert pareto_mask(acc, params).tolist() == [True, True, True, True, True, True]


def test_optuna_study_writes_buildable_pareto_genotypes(tmp_path):
    run = tmp_path / "mo"
    result = run_mo_search(_cfg(run, "n_trials=3", "constraints.params_max_m=1.0"))
    assert result["trials"] == 3 and result["pareto"]
    files = sorted((run / "pareto").glob("trial_*.yaml"))
    assert len(files) == len(result["pareto"])
    for f in files:
        net = NetworkCIFAR(4, 3, 3, False, load_genotype(f).validate())
        assert net.eval()(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    assert (run / "trials.csv").read_text().count("\n") == 4
    assert (run / "pareto_params.png").stat().st_size > 1000
    assert list(run.glob("events.out.tfevents.*")), "Pareto scatter for TensorBoard"
    study = optuna.load_study(study_name="mo", storage=storage_url(_cfg(run), run))
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    for t in study.trials:
        assert t.user_attrs["params"] == pytest.approx(t.values[1])


def _completed(run: Path) -> list[optuna.trial.FrozenTrial]:
    study = open_study(_cfg(run), storage_url(_cfg(run), run))
    return study.get_trials(states=(TrialState.COMPLETE,))


@pytest.mark.slow
def test_killed_mo_search_continues_the_study(tmp_path):
    run = tmp_path / "mo"
    cmd = [sys.executable, "-m", "nas.cli.main", "mo-search", "quick", f"run_dir={run}", *TINY,
           "n_trials=5", "budget.epochs=3", "study_name=mo"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "trials" / "trial_0001").exists():  # trial 0 complete, trial 1 running
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {t.number: t.values for t in _completed(run)}
    assert 1 <= len(kept) < 5
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = {t.number: t.values for t in _completed(run)}
    assert len(after) == 5
    assert all(after[n] == v for n, v in kept.items())  # finished trials kept as they were


def _study_is_clean(study: optuna.Study, n_trials: int, run: Path, extra: int = 0) -> None:
    """No lost trial, no duplicate number, no architecture proposed twice.

    ``extra``: complete trials allowed beyond ``n_trials`` (separate processes each stop
    at the study-wide count, so both may finish one more; workers of one run do not).
    """
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))  # no duplicates
    assert n_trials <= len(complete) <= n_trials + extra, [t.state for t in study.trials]
    proposals = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(proposals)) == len(proposals), "two trials sampled the same architecture"
    dirs = {t.user_attrs["trial_dir"] for t in complete}
    assert len(dirs) == len(complete)  # each trial wrote its own folder
    for d in dirs:
        assert (Path(d) / "genotype.yaml").is_file() and (Path(d) / "metrics.json").is_file()
    assert (run / "trials.csv").read_text().count("\n") == len(complete) + 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_workers_share_one_study(tmp_path, backend):
    url = None
    if backend == "postgresql":
        url = os.environ.get("NAS_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("NAS_TEST_POSTGRES_URL not set (CI starts PostgreSQL in .ci/postgres)")
    run = tmp_path / backend
    name = f"workers_{backend}_{os.getpid()}_{time.time_ns()}"
    # 6 trials on 4 workers: some workers run two, and all four start at once.
    extra = ["n_trials=6", "workers=4", f"study_name={name}"]
    if url:
        extra.append(f"storage={url}")
    cfg = _cfg(run, *extra)
    run_mo_search(cfg)
    study = optuna.load_study(study_name=name, storage=storage_url(cfg, run))
    _study_is_clean(study, 6, run)  # exactly 6: the run's workers share its trial tickets


@pytest.mark.slow
def test_separate_processes_share_one_study(tmp_path):
    """Two `nas mo-search` processes started together on one storage: their samplers
    must not replay one random stream (each trial is seeded by its unique number)."""
    run = tmp_path / "shared"
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [sys.executable, "-m", "nas.cli.main", "mo-search", "quick", f"run_dir={run}", *TINY,
           "n_trials=4", "study_name=shared", f"storage={url}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=url)
    _study_is_clean(study, 4, run, extra=1)


@pytest.mark.slow
def test_ray_tune_local_retries_a_failing_trial(tmp_path):
    run = tmp_path / "ray"
    code = main(["mo-search", "quick", f"run_dir={run}", *TINY, "driver=ray", "n_trials=2",
                 "ray.num_cpus=2", "ray.max_concurrent=2", "inject_failure=true"])
    assert code == 0
    failed = (run / "trials" / ".injected_failure").read_text()
    assert (run / "trials" / failed / "metrics.json").is_file()  # the retry finished it
    rows = (run / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + both trials
    import ray

    ray.shutdown()


@pytest.mark.parametrize(
    "override, needle",
    [
        ("storage=notadb://nowhere", "storage"),
        ("objectives=[val_acc, happiness]", "happiness"),
        ("objectives=[accuracy, params]", "'accuracy' is now 'val_acc'"),  # renamed: holdout
        ("ray.scalarize={accuracy: 1.0}", "'accuracy' is now 'val_acc'"),
        ("budget.holdout=0", "budget.holdout"),
        ("ray.asha=true", "ray.asha"),
    ],
)
def test_bad_mo_input_exits_2(tmp_path, capsys, override, needle):
    code = main(["mo-search", "quick", f"run_dir={tmp_path / 'r'}", *TINY, override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
