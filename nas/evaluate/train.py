"""Training a genotype's network with the DARTS evaluation recipe, via the shared epoch loop.

It lives in the core because retraining (``nas train``, ``nas compare``) and the
multi-objective genotype trials both train networks this way.

``run_train(cfg)`` is what ``nas train CONFIG`` calls. The recipe (cutout, drop path
ramped linearly, auxiliary head, cosine LR, gradient clipping) is the default config; the
run folder ends with ``model.pt`` (a plain state dict, loadable with ``weights_only=True``)
and ``result.json``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas import distributed
from nas.config import DataConfig, OptimConfig, RuntimeConfig, SSLConfig, dump_config
from nas.cost.counts import count_macs, count_params
from nas.data import holdout_split
from nas.errors import ConfigError
from nas.genotype import Genotype, save_genotype
from nas.loop import IMAGES_PER_S, fit, seed_everything, sgd_cosine
from nas.network import NetworkCIFAR
from nas.ops import clamp_bdsc_, ssl_penalty
from nas.ops.ssl import apply_shift_freeze
from nas.run import RunDir, atomic_write_bytes, atomic_write_text, default_run_dir
from nas.runtime import (
    autocast,
    check_device,
    compile_module,
    load_splits,
    make_loader,
    open_run,
    peak_memory_mb,
    reset_peak_memory,
    setup_threads,
)
from nas.spaces.baselines import BASELINE_CHANNELS, resolve_genotype

__all__ = ["TrainConfig", "ModelConfig", "TrainJob", "TrainResult", "run_train", "build_model"]

log = logging.getLogger("nas")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """``genotype``: a baseline name, a genotype file or a DARTS string."""

    genotype: str = "DARTS_V2"
    transplant: str | None = None
    init_channels: int | None = None  # None: the baseline's published width, else 36
    layers: int = 20
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path: float = 0.2

    def validate(self) -> None:
        if self.layers < 3:
            raise ConfigError(f"model.layers must be >= 3, got {self.layers}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"model.drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def channels(self) -> int:
        if self.init_channels is not None:
            return self.init_channels
        return BASELINE_CHANNELS.get(self.genotype.strip().upper().replace("-", "_"), 36)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str = "train"
    run_dir: str | None = None
    data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(batch_size=96, cutout=16)
    )
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(epochs=600, lr=0.025, lr_min=0.0)
    )
    ssl: SSLConfig = dataclasses.field(default_factory=SSLConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    seeds: list[int] | None = None  # several seeds: one sub-run per seed
    eval_every: int = 1
    # Evaluate on this share of the training set (stratified, seeded by holdout_seed) and
    # never load the test split: what model selection (the MO trials) must use.
    holdout: float | None = None
    holdout_seed: int = 0

    def validate(self) -> None:
        resolve_genotype(self.model.genotype, self.model.transplant)
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.holdout is not None and not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout must be in (0, 1), got {self.holdout}")


def build_model(
    cfg: TrainConfig, in_channels: int, num_classes: int, genotype: Genotype | None = None
) -> NetworkCIFAR:
    """The configured network; ``genotype`` (e.g. a sampled one) overrides ``model.genotype``."""
    if genotype is None:
        genotype = resolve_genotype(cfg.model.genotype, cfg.model.transplant)
    return NetworkCIFAR(
        cfg.model.channels, num_classes, cfg.model.layers, cfg.model.auxiliary, genotype,
        in_channels=in_channels,
    )


class TrainJob:
    """Retraining as a :class:`nas.loop.Job`.

    Under torchrun each rank steps on its shard of every global batch with the gradients
    averaged over the ranks; accuracy is counted over the whole evaluation split.
    """

    def __init__(self, cfg: TrainConfig, genotype: Genotype | None = None) -> None:
        self.cfg = cfg
        self.world = distributed.current()
        self.device = check_device(cfg.runtime.device)
        seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)
        if cfg.holdout is None:
            with distributed.main_first("rank 0 to load the data"):  # one download, not N
                train, held = load_splits(cfg.data)
            assert held is not None  # load_splits(test=True) always returns a test split
            self.eval_key = "test_acc"
        else:  # the test split is not even loaded
            with distributed.main_first("rank 0 to load the data"):
                train, _ = load_splits(cfg.data, test=False)
            train, held = holdout_split(train, cfg.holdout, cfg.holdout_seed)
            self.eval_key = "val_acc"
            log.info("holdout: training on %d images, evaluating on %d held-out training "
                     "images (the test split is not used)", len(train), len(held))
        setup_threads(cfg.runtime)  # after the data: a bad dataset fails before any warning
        self.input_shape = train.shape
        self.num_classes = train.num_classes
        # channels_last by default on CPU: ~1.5x the NCHW step there (benchmarks/train.py)
        self.channels_last = cfg.runtime.use_channels_last(self.device, cpu_default=True)
        self.train_loader = make_loader(train, cfg.data, cfg.runtime, self.device, train=True,
                                        channels_last=self.channels_last)
        self.eval_loader = make_loader(held, cfg.data, cfg.runtime, self.device, train=False,
                                       channels_last=self.channels_last)
        self.model = build_model(cfg, train.shape[0], train.num_classes, genotype)
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world.distributed:
            self.model = distributed.convert_sync_batchnorm(
                self.model, self.device, cfg.runtime.sync_bn
            )
            distributed.broadcast_module_(self.model)  # same start on every rank
            distributed.seed_rank(cfg.runtime.seed)  # distinct drop-path masks per rank
        # In place: evaluation and every other call of the model run compiled code too.
        self.forward: nn.Module = compile_module(
            self.model, self.device, cfg.runtime.compile,
            mode=cfg.runtime.compile_mode, backend=cfg.runtime.compile_backend,
        )
        self.optimizer, self.scheduler = sgd_cosine(
            self.model, self.model.parameters(), cfg.optim
        )
        self.best_acc = 0.0
        self.last_acc: float | None = None
        reset_peak_memory(self.device)  # this run's peak, not the process lifetime's

    def start_epoch(self, epoch: int) -> None:
        self.model.drop_path_prob = self.cfg.model.drop_path * epoch / max(self.cfg.optim.epochs, 1)
        self.train_loader.set_epoch(epoch)
        apply_shift_freeze(self.model, epoch, self.cfg.optim.epochs, self.cfg.ssl.freeze_at)
        self.model.train()

    def batches(self):
        return self.train_loader

    def num_batches(self) -> int:
        return len(self.train_loader)

    def step(self, batch):
        x, y = batch
        with autocast(self.device, self.cfg.runtime.amp):
            out = self.forward(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits.float(), y)
            if aux is not None:
                loss = loss + self.cfg.model.auxiliary_weight * F.cross_entropy(aux.float(), y)
            if self.cfg.ssl.penalty > 0:
                loss = loss + self.cfg.ssl.penalty * ssl_penalty(self.model, self.cfg.ssl.norm)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_grads_(self.model.parameters(), y.shape[0])  # before clipping
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        clamp_bdsc_(self.model)
        return loss, (logits.argmax(1) == y).sum(), y.shape[0]

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        n = 0
        for x, y in self.eval_loader:
            with autocast(self.device, self.cfg.runtime.amp):
                logits = self.forward(x)
            correct += (logits.argmax(1) == y).sum()
            n += y.shape[0]
        self.model.train()
        if self.world.distributed:  # each rank saw a shard: the whole split's accuracy
            totals = torch.stack([correct, correct.new_tensor(n)])
            correct, n = distributed.all_reduce_sum_(totals).tolist()
            return correct / max(n, 1)
        return correct.item() / max(n, 1)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        distributed.average_buffers_(self.model)  # one model on every rank from here on
        self.scheduler.step()
        row: dict[str, Any] = {
            "lr": self.scheduler.get_last_lr()[0],
            "drop_path": self.model.drop_path_prob,
            "peak_mem_mb": peak_memory_mb(self.device),
        }
        last = epoch + 1 == self.cfg.optim.epochs
        if last or (epoch + 1) % self.cfg.eval_every == 0:
            self.last_acc = self.evaluate()
            self.best_acc = max(self.best_acc, self.last_acc)
            row[self.eval_key] = self.last_acc
        return row

    def should_stop(self) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_acc": self.best_acc,
            "last_acc": self.last_acc,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_acc = float(state["best_acc"])
        self.last_acc = state["last_acc"]


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    test_acc: float | None  # None when trained with a holdout: the test split was not used
    params: int
    macs: int
    images_per_s: float | None
    peak_mem_mb: float | None
    input_shape: tuple[int, int, int]
    init_channels: int
    val_acc: float | None = None  # accuracy on the holdout of the training set, if any

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["run_dir"] = str(self.run_dir)
        return d


def _single_run(
    cfg: TrainConfig, genotype: Genotype | None = None, on_epoch=None
) -> TrainResult:
    with open_run(cfg.name, cfg.run_dir, "train") as run:
        run.save_config(dump_config(cfg))
        job = TrainJob(cfg, genotype)
        genotype: Genotype = job.model.genotype
        if run.writes:
            save_genotype(genotype, run / "genotype.yaml")
        params = count_params(job.model)
        macs = count_macs(job.model, (1, *job.input_shape), job.device)
        log.info(
            "train %s: %s, C=%d, %d layers, %.3f M params, %.1f M MACs, %d epochs, device %s",
            cfg.name, cfg.model.genotype, cfg.model.channels, cfg.model.layers, params / 1e6,
            macs / 1e6, cfg.optim.epochs, job.device,
        )
        fit(job, run, cfg.optim.epochs, log_interval=cfg.runtime.log_interval,
            progress=cfg.runtime.progress, desc="train", on_epoch=on_epoch,
            tensorboard=cfg.runtime.tensorboard)
        return _finish(run, job, params, macs)


def _finish(run: RunDir, job: TrainJob, params: int, macs: int) -> TrainResult:
    rows = run.read_metrics()
    speeds = [r[IMAGES_PER_S] for r in rows if IMAGES_PER_S in r]
    mems = [r["peak_mem_mb"] for r in rows if "peak_mem_mb" in r]
    def last(key: str) -> float | None:
        values = [r[key] for r in rows if key in r]
        return values[-1] if values else None

    result = TrainResult(
        run.path,
        last("test_acc"),
        params,
        macs,
        statistics.median(speeds) if speeds else None,
        max(mems) if mems else None,
        tuple(job.input_shape),
        job.cfg.model.channels,
        val_acc=last("val_acc"),
    )
    if run.writes:
        atomic_write_bytes(run / "model.pt", _state_bytes(job.model.state_dict()))
        atomic_write_text(run / "result.json", json.dumps(result.to_dict(), indent=1))
    distributed.barrier("rank 0 to write the model")
    if result.val_acc is not None:
        log.info("val accuracy (holdout) %s; wrote %s", result.val_acc, run / "model.pt")
    else:
        log.info("test accuracy %s; wrote %s", result.test_acc, run / "model.pt")
    return result


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def run_train(
    cfg: TrainConfig, genotype: Genotype | None = None, on_epoch=None
) -> list[TrainResult]:
    """Train one run, or one sub-run per seed in ``cfg.seeds`` (``<run>/seed<N>``).

    ``genotype`` overrides ``cfg.model.genotype`` (the saved config still names the
    string; ``genotype.yaml`` in the run folder holds what was trained).

    Under torchrun every rank trains its shard of each batch and rank 0 alone writes the
    run folders (:mod:`nas.distributed`).
    """
    with distributed.session(check_device(cfg.runtime.device), cfg.runtime.dist_timeout):
        return _train_runs(cfg, genotype, on_epoch)


def _train_runs(
    cfg: TrainConfig, genotype: Genotype | None, on_epoch
) -> list[TrainResult]:
    if not cfg.seeds:
        return [_single_run(cfg, genotype, on_epoch)]
    base = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("train", cfg.name)
    results = []
    for seed in cfg.seeds:
        sub = dataclasses.replace(
            cfg,
            run_dir=str(base / f"seed{seed}"),
            seeds=None,
            runtime=dataclasses.replace(cfg.runtime, seed=seed),
        )
        results.append(_single_run(sub, genotype))
    accs = [r.test_acc for r in results if r.test_acc is not None]
    if len(accs) > 1:
        log.info("test accuracy over %d seeds: %.4f ± %.4f", len(accs),
                 statistics.mean(accs), statistics.stdev(accs))
    return results
