"""The same multi-objective trials scheduled by Ray Tune (``driver: ray``).

Ray Tune's ``OptunaSearch`` samples with the same define-by-run space as the Optuna
driver; trials run as Ray tasks with per-trial resources, on a local Ray or on the
cluster at ``ray.address``; failed trials are retried (``ray.max_failures``); an
interrupted experiment is restored by re-running the command. With ``ray.scalarize``
(one weighted score) ASHA may stop poor trials early.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from nas.config import dump_config
from nas.runtime import open_run

from .mo_optuna import make_sampler
from .mo_outputs import write_outputs
from .trial import OBJECTIVES, MOConfig, define_space, run_trial

__all__ = ["run_ray_search", "score"]

log = logging.getLogger("nas")


def score(metrics: dict[str, Any], weights: dict[str, float]) -> float:
    """Scalarized objective to maximize: Σ w·acc − Σ w·cost."""
    return sum(
        w * (metrics[k] if OBJECTIVES[k] == "maximize" else -metrics[k]) for k, w in weights.items()
    )


def _trainable(config: dict[str, Any], cfg: MOConfig, trials_root: str) -> None:
    from ray import tune

    trial_dir = Path(trials_root) / tune.get_context().get_trial_id()
    weights = cfg.ray.scalarize

    def on_epoch(row: dict[str, Any]) -> None:
        if cfg.ray.asha and "test_acc" in row:  # intermediate result for ASHA
            tune.report({"score": weights.get("accuracy", 1.0) * row["test_acc"], "partial": True})

    metrics = run_trial(config, cfg, trial_dir, on_epoch=on_epoch)
    report = {k: metrics[k] for k in ("accuracy", "params", "latency", "macs", "feasible")}
    report.update(genotype=metrics["genotype"], trial_dir=metrics["trial_dir"], partial=False)
    if weights:
        report["score"] = score(metrics, weights)
    tune.report(report)


def run_ray_search(cfg: MOConfig) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    run = open_run(cfg.name, cfg.run_dir)
    try:
        run.save_config(dump_config(cfg))
        if cfg.ray.scalarize:
            metric: Any = "score"
            mode: Any = "max"
        else:
            metric = list(cfg.objectives)
            mode = ["max" if OBJECTIVES[o] == "maximize" else "min" for o in cfg.objectives]
        if not ray.is_initialized():
            ray.init(
                address=cfg.ray.address,
                num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        storage = (run.path / "ray").resolve()
        trials_root = str((run.path / "trials").resolve())
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, cfg=cfg, trials_root=trials_root),
            {"cpu": cfg.ray.cpus_per_trial, "gpu": cfg.ray.gpus_per_trial},
        )
        exp_path = storage / cfg.name
        if tune.Tuner.can_restore(exp_path):
            log.info("restoring Ray Tune experiment %s", exp_path)
            tuner = tune.Tuner.restore(str(exp_path), trainable, resume_errored=True)
        else:
            searcher = OptunaSearch(
                space=functools.partial(define_space, cfg=cfg),  # picklable for restore
                metric=metric,
                mode=mode,
                sampler=make_sampler(cfg),
            )
            scheduler = None
            if cfg.ray.asha:
                scheduler = ASHAScheduler(
                    metric="score", mode="max", max_t=max(cfg.budget.epochs, 1), grace_period=1
                )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, cfg.ray.max_concurrent),
                    scheduler=scheduler,
                    num_samples=cfg.n_trials,
                ),
                run_config=tune.RunConfig(
                    name=cfg.name,
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
                    verbose=0,
                ),
            )
        results = tuner.fit()
        rows = []
        for i, result in enumerate(results):
            m = result.metrics or {}
            if result.error is None and m.get("partial") is False:
                rows.append({"trial": i, **{k: m.get(k) for k in (
                    "accuracy", "params", "latency", "macs", "feasible", "genotype", "trial_dir"
                )}})
        errors = sum(r.error is not None for r in results)
        if errors:
            log.warning("%d Ray Tune trial(s) ended in error after retries", errors)
        return write_outputs(rows, cfg, run.path)
    finally:
        run.detach_log()
