"""Multi-objective search driven by Optuna (``nas mo-search CONFIG``).

The study lives in ``sqlite:///<run>/study.db`` by default, so re-running the command
continues it and ``optuna-dashboard sqlite:///<run>/study.db`` can open it; any RDB URL
(PostgreSQL, MySQL) lets many worker processes share one study. NSGA-II by default; TPE
and random are selectable. Optuna's pruners do not support multi-objective studies, so
none is used here (Ray Tune's ASHA is available for a scalarized objective).
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from nas.config import dump_config
from nas.errors import ConfigError
from nas.runtime import open_run

from .mo_outputs import trial_rows, write_outputs
from .trial import MOConfig, define_space, run_trial

__all__ = ["run_mo_search", "open_study", "storage_url", "make_sampler"]

log = logging.getLogger("nas")


def storage_url(cfg: MOConfig, run_path: Path) -> str:
    return cfg.storage or f"sqlite:///{(run_path / 'study.db').resolve()}"


def make_sampler(cfg: MOConfig) -> optuna.samplers.BaseSampler:
    """NSGA-II (default), TPE or random. Constraints reach them via ``Trial.set_constraint``."""
    seed = cfg.runtime.seed
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(cfg: MOConfig, url: str) -> optuna.Study:
    """Create or load the study; a bad storage URL is a one-line ConfigError."""
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(
                url, heartbeat_interval=cfg.heartbeat_s, grace_period=2 * cfg.heartbeat_s
            )
    except Exception as exc:  # SQLAlchemy raises many types for bad URLs / unreachable hosts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"storage {url!r} unusable: {first}") from None
    return optuna.create_study(
        study_name=cfg.study_name or cfg.name,
        storage=storage,
        directions=cfg.directions,
        sampler=make_sampler(cfg),
        load_if_exists=True,
    )


def _objective(cfg: MOConfig, run_path: Path):
    def objective(trial: optuna.Trial) -> list[float]:
        define_space(trial, cfg)
        trial_dir = run_path / "trials" / f"trial_{trial.number:04d}"
        metrics = run_trial(trial.params, cfg, trial_dir)
        for key, value in metrics["constraints"].items():  # feasible when <= 0
            trial.set_constraint(key, value)
        for key in ("genotype", "trial_dir", "params", "latency", "macs", "accuracy", "feasible"):
            trial.set_user_attr(key, metrics[key])
        return [float(metrics[o]) for o in cfg.objectives]

    return objective


def _worker(cfg: MOConfig, url: str, run_path: str) -> None:
    """One optimizer process (also the body of the in-process run)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg, url)
    study.optimize(
        _objective(cfg, Path(run_path)),
        n_trials=cfg.n_trials,  # attempts cap per worker, so failing trials cannot loop
        callbacks=[MaxTrialsCallback(cfg.n_trials, states=(TrialState.COMPLETE,))],
        catch=(RuntimeError,),
        gc_after_trial=True,
    )


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def run_mo_search(cfg: MOConfig) -> dict[str, Any]:
    """Run (or continue) the study until ``n_trials`` trials are complete; write outputs."""
    run = open_run(cfg.name, cfg.run_dir)
    try:
        run.save_config(dump_config(cfg))
        url = storage_url(cfg, run.path)
        study = open_study(cfg, url)
        done = _completed(study)
        log.info(
            "mo-search %s: %s trials, %d/%d complete, %d worker(s), storage %s",
            cfg.name, cfg.trial_kind, done, cfg.n_trials, cfg.workers, url,
        )
        if done < cfg.n_trials:
            if cfg.workers == 1:
                _worker(cfg, url, str(run.path))
            else:
                ctx = multiprocessing.get_context("spawn")
                procs = [
                    ctx.Process(target=_worker, args=(cfg, url, str(run.path)))
                    for _ in range(cfg.workers)
                ]
                for p in procs:
                    p.start()
                for p in procs:
                    p.join()
                bad = [p.exitcode for p in procs if p.exitcode]
                if bad:
                    log.warning("%d worker(s) exited with errors: %s", len(bad), bad)
        return write_outputs(trial_rows(open_study(cfg, url)), cfg, run.path)
    finally:
        run.detach_log()
