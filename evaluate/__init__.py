"""Retraining, published baselines, deploy reports, comparison tables and Pareto plots."""

from nas.evaluate.baselines import BASELINE_CHANNELS, BASELINES, resolve_genotype, transplant
from nas.evaluate.compare import CompareConfig, CompareEntry, run_compare
from nas.evaluate.deploy import deploy_run, load_trained
from nas.retrain import TrainConfig, TrainResult, run_train

__all__ = [
    "BASELINES",
    "BASELINE_CHANNELS",
    "CompareConfig",
    "CompareEntry",
    "TrainConfig",
    "TrainResult",
    "deploy_run",
    "load_trained",
    "resolve_genotype",
    "run_compare",
    "run_train",
    "transplant",
]
