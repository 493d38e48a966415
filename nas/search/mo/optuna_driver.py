"""Multi-objective search driven by Optuna (``nas mo-search CONFIG``).

The study lives in ``sqlite:///<run>/study.db`` by default, so re-running the command
continues it and ``optuna-dashboard sqlite:///<run>/study.db`` can open it; any RDB URL
(PostgreSQL, MySQL) lets many worker processes share one study. NSGA-II by default; TPE
and random are selectable. Optuna's pruners do not support multi-objective studies, so
none is used here (Ray Tune's ASHA is available for a scalarized objective).

Data and devices are checked before the first trial; a trial error that recurs (a
ConfigError/DataError, or the same error twice in a row) stops the study with one line.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.config import dump_config
from nas.errors import ConfigError, NasError
from nas.runtime import open_run
from nas.search.mo.outputs import trial_rows, write_outputs
from nas.search.mo.trial import (
    MOConfig,
    TrialError,
    check_inputs,
    define_space,
    resolve_paths,
    run_trial,
)
from nas.threads import plan_threads

__all__ = [
    "run_mo_search", "open_study", "rdb_storage", "storage_url", "make_sampler", "trial_seed",
    "PerTrialSeedSampler",
]

log = logging.getLogger("nas")

#: what a trial stores as user attrs (read back by :func:`nas.search.mo.outputs.trial_rows`)
_ATTRS = ("genotype", "trial_dir", "val_acc", "params", "latency", "macs", "feasible", "epochs",
          "latency_noisy", "latency_source")


def storage_url(cfg: MOConfig, run_path: Path) -> str:
    return cfg.storage or f"sqlite:///{(run_path / 'study.db').resolve()}"


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a study seeded ``seed`` (a hash of both)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class PerTrialSeedSampler(BaseSampler):
    """Delegates each trial to a fresh NSGA-II/TPE/random sampler seeded by
    :func:`trial_seed` (study seed, trial number).

    One seed per process made every worker, and every resumed run, replay the same random
    stream: parallel workers proposed the same architectures and a resumed study proposed
    trial 0 again. Trial numbers are unique in a study's storage (whichever process,
    machine or run asks), so each trial draws from its own stream, reproducibly. These
    samplers keep their state (generations, parents, history) in the storage, so a fresh
    instance per trial loses nothing else. Picklable, for Ray Tune's searcher checkpoints.
    """

    def __init__(self, kind: str, seed: int, population_size: int) -> None:
        self.kind, self.seed, self.population_size = kind, seed, population_size
        self._by_trial: dict[int, BaseSampler] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its searcher (and this sampler) at every checkpoint. The samplers
        # of trials in flight stay out: Optuna >= 5.1's NSGA-II holds a threading lock and
        # cannot be pickled, and their samples are drawn already; a restored run rebuilds
        # one from the trial's seed for its ``after_trial`` (their state is in the storage).
        return {**self.__dict__, "_by_trial": {}}

    def _build(self, number: int) -> BaseSampler:
        seed = trial_seed(self.seed, number)
        if self.kind == "nsga2":  # constraints: Trial.set_constraint, read from the storage
            return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed)
        if self.kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def _of(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self._by_trial:
            self._by_trial[trial.number] = self._build(trial.number)
        return self._by_trial[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._of(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
        values: list[float] | None,
    ) -> None:
        self._of(trial).after_trial(study, trial, state, values)
        del self._by_trial[trial.number]

    def reseed_rng(self) -> None:
        """Nothing to do: each trial's stream is already its own."""


def make_sampler(cfg: MOConfig) -> BaseSampler:
    """NSGA-II (default), TPE or random, seeded per trial (see :class:`PerTrialSeedSampler`)."""
    return PerTrialSeedSampler(cfg.sampler, cfg.runtime.seed, cfg.population_size)


def rdb_storage(url: str, heartbeat_s: int | None = None) -> RDBStorage:
    """An RDB storage (heartbeats fail the trials of a killed worker after 2 beats);
    a bad URL is a one-line ConfigError.

    Processes that open a new database together race to create its tables and version
    row (SQLAlchemy's ``create_all`` checks, then creates): the loser sees "already
    exists" or a UNIQUE violation, and retries.
    """
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url, heartbeat_interval=heartbeat_s,
                    grace_period=2 * heartbeat_s if heartbeat_s else None,
                )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == 3:
                error: Exception = exc
                break
            time.sleep(0.2 * (attempt + 1))
        except Exception as exc:  # SQLAlchemy raises many types for bad URLs / hosts
            error = exc
            break
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ConfigError(f"storage {url!r} unusable: {first}") from None


def open_study(cfg: MOConfig, url: str) -> optuna.Study:
    """Create or load the study; a bad storage URL is a one-line ConfigError."""
    storage = rdb_storage(url, cfg.heartbeat_s)
    study = optuna.create_study(
        study_name=cfg.study_name or cfg.name,
        storage=storage,
        directions=cfg.directions,
        sampler=make_sampler(cfg),
        load_if_exists=True,
    )
    if study.directions != [StudyDirection[d.upper()] for d in cfg.directions]:
        raise ConfigError(
            f"study {study.study_name!r} in {url} has other objectives than {cfg.objectives}; "
            "use another study_name or run_dir"
        )
    if any("val_acc" not in t.user_attrs and "accuracy" in t.user_attrs
           for t in study.get_trials(deepcopy=False)):
        raise ConfigError(
            f"study {study.study_name!r} in {url} was scored on test accuracy by an older "
            "version; start a new study (another study_name or run_dir)"
        )
    return study


class _TrialFailed(Exception):
    """A trial's own error: the trial is recorded as FAIL and the study goes on."""


def _objective(cfg: MOConfig, run_path: Path):
    previous: list[str] = []  # the last failure's "Type: message", while failures continue

    def evaluate(trial: optuna.Trial) -> list[float]:
        define_space(trial, cfg)
        trial_dir = run_path / "trials" / f"trial_{trial.number:04d}"
        metrics = run_trial(trial.params, cfg, trial_dir)
        for key, value in metrics["constraints"].items():  # feasible when <= 0
            trial.set_constraint(key, value)
        for key in _ATTRS:
            trial.set_user_attr(key, metrics[key])
        return [float(metrics[o]) for o in cfg.objectives]

    def objective(trial: optuna.Trial) -> list[float]:
        try:
            values = evaluate(trial)
        except NasError:  # bad config or data: every trial would fail the same way
            raise
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"
            if previous == [reason]:
                raise TrialError(
                    f"trial {trial.number} failed like the trial before it ({reason}); "
                    "stopping the study, as it would recur"
                ) from exc
            previous[:] = [reason]
            raise _TrialFailed(reason) from exc
        previous.clear()
        return values

    return objective


_TICKETS: Any = None  # per worker process: trials this run may still complete


def _init_worker(tickets: Any) -> None:
    global _TICKETS
    _TICKETS = tickets


def _take_ticket() -> bool:
    with _TICKETS.get_lock():
        if _TICKETS.value <= 0:
            return False
        _TICKETS.value -= 1
        return True


def _next_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna callback: a failed trial gives its ticket back; no ticket left, no next trial.

    Shared tickets make concurrent workers of one run complete exactly the missing trials,
    none lost and none extra (a count of COMPLETE trials alone lets every busy worker
    finish one more).
    """
    if trial.state != TrialState.COMPLETE:
        with _TICKETS.get_lock():
            _TICKETS.value += 1
    if not _take_ticket():
        study.stop()


def _worker(cfg: MOConfig, url: str, run_path: str) -> None:
    """One optimizer process (also the body of the in-process run)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg, url)
    if not _take_ticket():
        return
    study.optimize(
        _objective(cfg, Path(run_path)),
        n_trials=cfg.n_trials,  # attempts cap per worker, so failing trials cannot loop
        # Other processes on the same storage (separate `nas mo-search` runs) have their
        # own tickets; the study-wide count of complete trials stops them all.
        callbacks=[MaxTrialsCallback(cfg.n_trials, states=(TrialState.COMPLETE,)), _next_trial],
        catch=(_TrialFailed,),
        gc_after_trial=True,
    )


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _divide_threads(cfg: MOConfig) -> MOConfig:
    """Each of ``workers`` processes gets its share of the free cores, not all of them."""
    plan = plan_threads(cfg.runtime.threads, cfg.workers, cfg.runtime.deterministic)
    if plan.threads * cfg.workers > plan.cores:
        log.warning("%d workers × %d thread(s) exceed the %d usable cores: trials will slow "
                    "each other down and their latencies are noise", cfg.workers,
                    plan.threads, plan.cores)
    else:
        log.info("%d worker(s) × %d torch thread(s) on %d usable cores (load %.2f)",
                 cfg.workers, plan.threads, plan.cores, plan.load)
    return dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime,
                                                                threads=plan.threads))


def run_mo_search(cfg: MOConfig) -> dict[str, Any]:
    """Run (or continue) the study until ``n_trials`` trials are complete; write outputs."""
    cfg = resolve_paths(cfg)
    if cfg.storage:  # a given URL fails before anything is loaded or logged
        rdb_storage(cfg.storage)
    check_inputs(cfg)
    with open_run(cfg.name, cfg.run_dir, "mo-search") as run:
        run.save_config(dump_config(cfg))
        cfg = _divide_threads(cfg)
        url = storage_url(cfg, run.path)
        study = open_study(cfg, url)
        done = _completed(study)
        log.info(
            "mo-search %s: %s trials, %d/%d complete, %d worker(s), storage %s; scored on "
            "val accuracy (holdout: %.0f%% of the training set; the test set is not used)",
            cfg.name, cfg.trial_kind, done, cfg.n_trials, cfg.workers, url,
            100 * cfg.budget.holdout,
        )
        if done < cfg.n_trials:
            ctx = multiprocessing.get_context("spawn")
            tickets = ctx.Value("i", cfg.n_trials - done)
            if cfg.workers == 1:
                _init_worker(tickets)
                _worker(cfg, url, str(run.path))
            else:
                workers = min(cfg.workers, cfg.n_trials - done)
                with ProcessPoolExecutor(
                    workers, mp_context=ctx, initializer=_init_worker, initargs=(tickets,)
                ) as pool:
                    futures = [
                        pool.submit(_worker, cfg, url, str(run.path)) for _ in range(workers)
                    ]
                errors = [f.exception() for f in futures if f.exception() is not None]
                if errors:  # the first one, as raised in its worker (NasError: one line)
                    if len(errors) > 1:
                        log.warning("%d of %d workers stopped with errors", len(errors), workers)
                    raise errors[0]
        study = open_study(cfg, url)
        complete = _completed(study)
        if complete < cfg.n_trials:
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if complete == 0:
                raise TrialError(f"no trial completed ({failed} failed; see the log above)")
            log.warning("%d of %d trials complete (%d failed); re-run the command to continue",
                        complete, cfg.n_trials, failed)
        return write_outputs(trial_rows(study), cfg, run.path)
