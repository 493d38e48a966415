"""Sampler seeding (workers and resumed runs do not repeat architectures) and constraints
(infeasible trials never reach the Pareto front) with the Optuna driver."""

from __future__ import annotations

import csv

import optuna
import pytest
from _mo_helpers import tiny_cfg
from optuna.trial import TrialState

from nas.cost import count_params
from nas.network import NetworkCIFAR
from nas.search.mo.optuna_driver import make_sampler, open_study, run_mo_search, storage_url
from nas.search.mo.trial import MOConfig, define_space, genotype_from_params


def _params(study: optuna.Study, number: int) -> dict:
    return next(t.params for t in study.trials if t.number == number)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() outside optimize()
def test_two_workers_first_proposals_differ(tmp_path):
    """Two processes opening one study (each with its own sampler) propose different
    architectures, reproducibly (the seed follows the trial number)."""
    cfg = tiny_cfg(tmp_path)
    url = storage_url(cfg, tmp_path)
    first = []
    for study in (open_study(cfg, url), open_study(cfg, url)):  # as two workers would
        trial = study.ask()
        define_space(trial, cfg)
        first.append(trial.params)
    assert first[0] != first[1]
    again = open_study(cfg, f"sqlite:///{tmp_path / 'again.db'}")
    for expected in first:
        trial = again.ask()
        define_space(trial, cfg)
        assert trial.params == expected


def test_resumed_run_proposes_a_new_architecture(tmp_path):
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    run_mo_search(tiny_cfg(resumed, "n_trials=1"))
    run_mo_search(tiny_cfg(resumed, "n_trials=2"))  # a second command continues the study
    run_mo_search(tiny_cfg(straight, "n_trials=2"))
    a = open_study(tiny_cfg(resumed), storage_url(tiny_cfg(resumed), resumed))
    b = open_study(tiny_cfg(straight), storage_url(tiny_cfg(straight), straight))
    assert _params(a, 1) != _params(a, 0)  # not trial 0 replayed
    assert _params(a, 1) == _params(b, 1)  # deterministic: resuming changes nothing


def first_params_m(cfg: MOConfig, n: int = 2) -> list[float]:
    """Params (M) of the networks the sampler proposes first (generation 0 is random and
    seeded by trial number, so any fresh study, any driver, proposes these)."""
    study = optuna.create_study(directions=cfg.directions, sampler=make_sampler(cfg))
    out = []
    for _ in range(n):
        trial = study.ask()
        define_space(trial, cfg)
        genotype = genotype_from_params(trial.params, cfg)
        b = cfg.budget
        out.append(count_params(NetworkCIFAR(b.init_channels, 3, b.layers, False, genotype)) / 1e6)
    return out


def test_infeasible_trials_are_never_on_the_front(tmp_path):
    a, b = first_params_m(tiny_cfg(tmp_path))
    assert a != b
    cfg = tiny_cfg(tmp_path / "mo", "n_trials=2", f"constraints.params_max_m={(a + b) / 2}")
    result = run_mo_search(cfg)
    rows = list(csv.DictReader((tmp_path / "mo" / "trials.csv").open()))
    assert sorted(r["feasible"] for r in rows) == ["False", "True"]
    front = list(csv.DictReader((tmp_path / "mo" / "pareto.csv").open()))
    assert front and all(r["feasible"] == "True" for r in front)
    assert all(r["feasible"] for r in result["pareto"])
    study = open_study(cfg, storage_url(cfg, tmp_path / "mo"))
    for t in study.get_trials(states=(TrialState.COMPLETE,)):  # what NSGA-II ranks by
        assert (t.constraints["params"] > 0) == (not t.user_attrs["feasible"])


def test_sampler_pickles_with_trials_in_flight(monkeypatch):
    # Ray Tune pickles its searcher, sampler included, at every checkpoint while trials run.
    # Optuna 5.1's NSGA-II holds a threading lock: an in-flight trial's inner sampler must
    # not be part of the pickle (this failed every Ray test on a fresh install).
    import pickle
    import threading

    from nas.search.mo.optuna_driver import PerTrialSeedSampler

    class _Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    monkeypatch.setattr(PerTrialSeedSampler, "_build", lambda self, number: _Locked())
    sampler = PerTrialSeedSampler("nsga2", seed=3, population_size=4)
    trial = optuna.trial.create_trial(state=TrialState.RUNNING)
    sampler._of(trial)  # a trial in flight holds its inner sampler
    restored = pickle.loads(pickle.dumps(sampler))
    assert (restored.kind, restored.seed, restored.population_size) == ("nsga2", 3, 4)
    assert restored._by_trial == {} and sampler._by_trial  # the live one keeps it
