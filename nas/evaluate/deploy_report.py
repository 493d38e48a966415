"""``nas deploy RUN``: convert a trained run to its inference form, verify, and measure."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.config import build
from nas.cost.counts import count_bytes, count_macs, count_params
from nas.cost.timing import measure_latency
from nas.data import BatchLoader, ImageTensors, holdout_split
from nas.deploy import to_deploy
from nas.errors import ConfigError
from nas.evaluate.train import TrainConfig, build_model
from nas.run import CheckpointError, RunDir, atomic_write_text, error_summary, load_weights
from nas.runtime import load_splits

__all__ = ["deploy_run", "evaluation_split", "load_trained"]

log = logging.getLogger("nas")


def load_trained(run_dir: str | Path) -> tuple[torch.nn.Module, TrainConfig]:
    """The trained model of a ``nas train`` run folder (weights via ``weights_only=True``)."""
    run_dir = Path(run_dir)
    cfg_path, weights = run_dir / "config.yaml", run_dir / "model.pt"
    if not cfg_path.is_file() or not weights.is_file():
        raise ConfigError(f"{run_dir} is not a finished training run (needs config.yaml, model.pt)")
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{cfg_path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping at the top level")
    try:
        cfg = build(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from None
    state = load_weights(weights, what="trained weights", hint="retrain the run")
    try:
        stem, classifier = state["stem.0.weight"], state["classifier.weight"]
        model = build_model(cfg, stem.shape[1], classifier.shape[0])
        model.load_state_dict(state)
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
        raise CheckpointError(
            f"{weights}: weights do not match the network in {cfg_path.name} "
            f"({error_summary(exc)}); retrain the run"
        ) from None
    return model.eval(), cfg


def evaluation_split(cfg: TrainConfig) -> ImageTensors:
    """The images a run was evaluated on: its holdout of the training set when it was trained
    with one (the test split is then never read), else the test split."""
    if cfg.holdout is None:
        _, test = load_splits(cfg.data)
        assert test is not None  # load_splits(test=True) always returns a test split
        return test
    train, _ = load_splits(cfg.data, test=False)
    return holdout_split(train, cfg.holdout, cfg.holdout_seed)[1]


def _latencies(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, float]:
    out = {"latency_cpu_b1_ms": measure_latency(model, (1, *shape), "cpu")}
    if torch.cuda.is_available():
        gpu = model.to("cuda")
        out["latency_cuda_b1_ms"] = measure_latency(gpu, (1, *shape), "cuda")
        out["latency_cuda_b256_ms"] = measure_latency(gpu, (256, *shape), "cuda")
        model.to("cpu")
    return out


def _profile(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "params": count_params(model),
        "bytes": count_bytes(model),
        "macs": count_macs(model, (1, *shape)),
        **_latencies(model, shape),
    }


def deploy_run(run_dir: str | Path, batch_size: int = 64, atol: float = 1e-4) -> dict[str, Any]:
    """Deploy the run's model, check it against the trained form on held-out images."""
    run_dir = Path(run_dir)
    model, cfg = load_trained(run_dir)
    run = RunDir(run_dir)  # a read-only folder fails here, not after the measurements
    test = evaluation_split(cfg)
    shape = tuple(test.shape)
    deployed = to_deploy(model)
    x, _ = next(iter(BatchLoader(test, batch_size, shuffle=False)))
    with torch.no_grad():
        diff = (deployed(x) - model(x)).abs().max().item()
    if diff > atol:
        raise ConfigError(f"deploy form differs from the trained model by {diff:.3g} (> {atol})")
    report = {
        "run": str(run_dir),
        "max_abs_diff": diff,
        "check_batch": batch_size,
        "train_form": _profile(model, shape),
        "deploy_form": _profile(deployed, shape),
    }
    atomic_write_text(run / "deploy.json", json.dumps(report, indent=1))
    state = {k: v.cpu() for k, v in deployed.state_dict().items()}
    run.save_checkpoint(state, "model_deploy.pt")
    log.info("deploy check: max |Δ| = %.3g over %d held-out images", diff, batch_size)
    return report
