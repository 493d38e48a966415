"""The same multi-objective trials scheduled by Ray Tune (``driver: ray``).

Ray Tune's ``OptunaSearch`` samples with the same define-by-run space and sampler as the
Optuna driver; its study lives in the run's storage (``<study>-ray``, readable by
optuna-dashboard), and each trial's constraint values reach it before ``tell``, so
NSGA-II ranks infeasible trials as the Optuna driver does. Trials run as Ray tasks with
per-trial resources, on a local Ray or on the cluster at ``ray.address`` (joined with the
token Ray's token authentication reads, when there is one: :func:`join_cluster`); failed trials
are retried (``ray.max_failures``), but an error that recurs stops the experiment; an
interrupted experiment is restored by re-running the command.

Every training epoch reports all metrics (val_acc so far, params, latency, MACs,
feasibility, ``epochs`` done) and, with ``ray.scalarize``, the same weighted ``score``,
so ASHA compares like with like and a trial it stops still has a complete row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from nas.config import dump_config
from nas.errors import ConfigError, NasError
from nas.runtime import open_run
from nas.search.mo.optuna_driver import make_sampler, rdb_storage, storage_url
from nas.search.mo.outputs import write_outputs
from nas.search.mo.trial import (
    OBJECTIVES,
    MOConfig,
    TrialError,
    check_inputs,
    define_space,
    resolve_paths,
    run_trial,
)

__all__ = ["run_ray_search", "score", "join_cluster", "token_source"]

log = logging.getLogger("nas")

#: metrics every report carries; constraint values go as ``constraint_<name>``
_REPORTED = ("val_acc", "params", "latency", "macs", "feasible", "epochs", "genotype",
             "trial_dir", "latency_noisy", "latency_source")
_CONSTRAINT = "constraint_"


def score(metrics: dict[str, Any], weights: dict[str, float]) -> float:
    """Scalarized objective to maximize: Σ w·val_acc − Σ w·cost."""
    return sum(
        w * (metrics[k] if OBJECTIVES[k] == "maximize" else -metrics[k]) for k, w in weights.items()
    )


def _report(metrics: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    row = {k: metrics[k] for k in _REPORTED}
    row.update({_CONSTRAINT + k: v for k, v in metrics["constraints"].items()})
    if weights:
        row["score"] = score(metrics, weights)
    return row


def _trainable(config: dict[str, Any], cfg: MOConfig, trials_root: str) -> None:
    trial_dir = Path(trials_root) / tune.get_context().get_trial_id()
    reported: list[bool] = []

    def report(metrics: dict[str, Any]) -> None:
        reported.append(True)
        tune.report(_report(metrics, cfg.ray.scalarize))

    metrics = run_trial(config, cfg, trial_dir, on_epoch=report)  # reports every epoch
    if not reported:  # not trained (over budget), or trained before this retry
        report(metrics)


class _ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets each trial's constraints (and metrics, as user attrs) on its
    Optuna trial before ``tell``: NSGA-II reads feasibility from the trial, and Ray's
    OptunaSearch has no hook for it (``_ot_trials`` holds the trials it asked)."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if result and ot_trial is not None and trial_id not in self._completed_trials:
            for key, value in result.items():
                if key.startswith(_CONSTRAINT):
                    ot_trial.set_constraint(key.removeprefix(_CONSTRAINT), value)
                elif key in _REPORTED:
                    ot_trial.set_user_attr(key, value)
        super().on_trial_complete(trial_id, result, error)


def _nas_error_names() -> set[str]:
    """Class names of the project's errors (they recur: bad input, not bad luck)."""
    names, todo = set(), [NasError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _last_error(error_file: str | None) -> tuple[str, str]:
    """(exception class name, first line of its message) of a trial's latest failure, read
    from the text Ray writes (``error.txt``); nothing is unpickled."""
    if not error_file or not Path(error_file).is_file():
        return "RuntimeError", "unknown error"
    text = Path(error_file).read_text(errors="replace")
    failure = text.rsplit("Failure # ", 1)[-1]
    for line in reversed(failure.strip().splitlines()):
        head, sep, message = line.strip().partition(": ")
        name = head.rsplit(".", 1)[-1]
        if sep and name.isidentifier() and name[:1].isupper():
            return name, message
    return "RuntimeError", "unknown error"


class _Recurring(tune.Callback):
    """Notes a trial error that will recur: a NasError, or the same error twice in a row."""

    def __init__(self) -> None:
        self.previous: str | None = None
        self.reason: str | None = None

    def _error(self, trial: Any) -> None:
        name, message = _last_error(trial.error_file)
        reason = f"{name}: {message}"
        if name in _nas_error_names() or reason == self.previous:
            self.reason = self.reason or reason
        self.previous = reason

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._error(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._error(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.previous = None


class _StopOnRecurring(tune.Stopper):
    def __init__(self, recurring: _Recurring) -> None:
        self.recurring = recurring

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.recurring.reason is not None


def _searcher(cfg: MOConfig, url: str, metric: Any, mode: Any) -> OptunaSearch:
    name = f"{cfg.study_name or cfg.name}-ray"
    storage = rdb_storage(url)
    directions = [("maximize" if m == "max" else "minimize") for m in
                  (mode if isinstance(mode, list) else [mode])]
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None and [d.name.lower() for d in existing.directions] != directions:
        raise ConfigError(f"study {name!r} in {url} has other objectives; use another "
                          "study_name or run_dir")
    return _ConstrainedOptunaSearch(
        space=functools.partial(define_space, cfg=cfg),  # picklable for restore
        metric=metric,
        mode=mode,
        sampler=make_sampler(cfg),
        study_name=name,
        storage=storage,
    )


# --- joining a cluster ------------------------------------------------------------------------

_TOKEN_HELP = ("set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in "
               "~/.ray/auth_token (`ray get-auth-token` on the head node prints it)")


def token_source() -> str | None:
    """Where Ray will read the cluster token from, in Ray's order of precedence
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``); None if nowhere.

    A ``RAY_AUTH_TOKEN_PATH`` that cannot be read is a ConfigError here: Ray itself aborts
    the process on it instead of raising.
    """
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path:
        try:
            text = Path(path).expanduser().read_text()
        except OSError as err:
            raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the Ray token "
                              f"({err.strerror or err})") from None
        if not text.strip():
            raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path}: the file is empty")
        return f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path.home() / ".ray" / "auth_token"
    try:
        return str(default) if default.read_text().strip() else None
    except OSError:  # none (or unreadable: Ray could not read it either)
        return None


def _enable_token_auth() -> None:
    """``RAY_AUTH_MODE=token`` for this process (and the Ray config it has already read)."""
    try:  # Ray's own switch: sets the variable and refreshes the cached config
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth as enable,
        )
    except ImportError:  # a Ray without token authentication: the variable is harmless
        os.environ["RAY_AUTH_MODE"] = "token"
    else:
        enable()


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``HOST:PORT`` address; None for ``auto`` and ``ray://`` ones."""
    if address in ("auto", "local") or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"ray.address {address!r}: expected HOST:PORT of a Ray head node "
                          "(the --port of `ray start --head`), e.g. 127.0.0.1:6379")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Send file descriptor 2 (Ray's C++ warnings go there directly) to a temporary file;
    the yielded list holds what was written once the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


def join_cluster(address: str, probe_timeout_s: float = 5.0) -> None:
    """``ray.init(address)`` as Ray documents joining a cluster, or one ConfigError line.

    Ray >= 2.52 clusters may require a token (``ray start --head`` enables it when the head
    has one, e.g. the ``~/.ray/auth_token`` a local ``ray.init`` writes), but a client given
    an explicit address only sends one with ``RAY_AUTH_MODE=token``; so when a token is
    available and the mode is unset, the mode is set (a cluster without authentication
    accepts such a client too). A port nobody listens on is found by a socket probe first,
    since Ray itself waits minutes on it; a refused token ends Ray's 20 s of retries with
    a line naming the fix instead of 20 warnings and a traceback.
    """
    import ray

    where = _host_port(address)
    if where is not None:
        host, port = where
        try:
            socket.create_connection(where, timeout=probe_timeout_s).close()
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise ConfigError(f"ray.address {address}: no Ray cluster answers ({reason}); "
                              f"start one with `ray start --head --port {port}`, or check "
                              f"the host {host}") from None
    source = token_source()
    if source is not None and "RAY_AUTH_MODE" not in os.environ:
        _enable_token_auth()
        log.info("joining the Ray cluster at %s with the token from %s", address, source)
    auth_error = getattr(ray.exceptions, "AuthenticationError", ConnectionError)
    with _stderr_captured() as captured:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            failure = None
        except (ConnectionError, auth_error) as err:
            failure = err
    text = "".join(captured)
    if failure is None:
        sys.stderr.write(text)  # nothing hidden from a run that joined
        return
    if "InvalidAuthToken" in text or "Unauthenticated" in text or isinstance(
            failure, auth_error):
        mode = os.environ.get("RAY_AUTH_MODE", "").lower()
        if source is not None and mode == "disabled":
            fix = "unset RAY_AUTH_MODE (it is 'disabled', so the token is never sent)"
            why = "it requires a token"
        elif source is None:
            fix, why = _TOKEN_HELP, "it requires a token"
        else:
            fix, why = _TOKEN_HELP, f"it rejects the token from {source}"
        raise ConfigError(f"ray.address {address} refused the connection: {why}; "
                          f"{fix}") from None
    first = (str(failure).strip().splitlines() or [type(failure).__name__])[0]
    raise ConfigError(f"ray.address {address}: could not join the Ray cluster ({first}); "
                      "is it a Ray head node of the same Ray version?") from None


def run_ray_search(cfg: MOConfig) -> dict[str, Any]:
    """Run (or restore) the Ray Tune experiment; write the same outputs as the Optuna driver."""
    import ray

    cfg = resolve_paths(cfg)  # trials run in their own folders: an absolute table path
    if cfg.storage:  # a given URL fails before anything is loaded or logged
        rdb_storage(cfg.storage)
    check_inputs(cfg, devices=cfg.ray.address is None)  # a cluster's devices are remote
    if not ray.is_initialized():  # before the run folder: a cluster that refuses touches nothing
        if cfg.ray.address is None:
            ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            join_cluster(cfg.ray.address)
    with open_run(cfg.name, cfg.run_dir, "mo-search") as run:
        run.save_config(dump_config(cfg))
        if cfg.runtime.threads is None:  # a trial's threads are the CPUs Ray reserved for it
            threads = max(1, int(cfg.ray.cpus_per_trial))
            cfg = dataclasses.replace(
                cfg, runtime=dataclasses.replace(cfg.runtime, threads=threads))
        if cfg.ray.scalarize:
            metric: Any = "score"
            mode: Any = "max"
        else:
            metric = list(cfg.objectives)
            mode = ["max" if OBJECTIVES[o] == "maximize" else "min" for o in cfg.objectives]
        storage = (run.path / "ray").resolve()
        trials_root = str((run.path / "trials").resolve())
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, cfg=cfg, trials_root=trials_root),
            {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial},
        )
        recurring = _Recurring()
        exp_path = storage / cfg.name
        if tune.Tuner.can_restore(exp_path):
            log.info("restoring Ray Tune experiment %s", exp_path)
            tuner = tune.Tuner.restore(str(exp_path), trainable, resume_errored=True)
        else:
            scheduler = None
            if cfg.ray.asha:  # max_t = the budget: the last epoch's report is the final one
                scheduler = ASHAScheduler(
                    time_attr="epochs", metric="score", mode="max",
                    max_t=cfg.budget.epochs, grace_period=1,
                )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(
                        _searcher(cfg, storage_url(cfg, run.path), metric, mode),
                        cfg.ray.max_concurrent,
                    ),
                    scheduler=scheduler,
                    num_samples=cfg.n_trials,
                ),
                run_config=tune.RunConfig(
                    name=cfg.name,
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                    stop=_StopOnRecurring(recurring),
                    callbacks=[recurring],
                    verbose=0,
                ),
            )
        results = tuner.fit()
        if recurring.reason:
            raise TrialError(f"a Ray Tune trial failed in a way that recurs "
                             f"({recurring.reason}); stopped the experiment")
        rows = []
        for i, result in enumerate(results):
            m = result.metrics or {}
            if result.error is None and m.get("val_acc") is not None:
                row = {"trial": i, **{k: m.get(k) for k in _REPORTED}}
                row["stopped"] = bool(row["feasible"]) and row["epochs"] < cfg.budget.epochs
                rows.append(row)
        errors = [r.error for r in results if r.error is not None]
        if errors and not rows:
            lines = str(errors[0]).strip().splitlines() or [type(errors[0]).__name__]
            raise TrialError(f"all {len(errors)} Ray Tune trial(s) failed; first: {lines[-1]}")
        if errors:
            log.warning("%d Ray Tune trial(s) ended in error after retries", len(errors))
        stopped = sum(r["stopped"] for r in rows)
        if stopped:
            log.info("ASHA stopped %d of %d trials early (kept in trials.csv, not on the "
                     "front)", stopped, len(rows))
        return write_outputs(rows, cfg, run.path)
