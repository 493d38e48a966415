"""DARTS bilevel search (first/second order, PC-DARTS options, cost-aware term).

``run_search(cfg)`` is what ``nas search CONFIG`` calls: it builds the supernet over the
configured space, alternates architecture and weight steps through the shared epoch loop
(:func:`nas.train.fit`), and writes the derived genotype, its plots and the α history.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from nas import distributed
from nas.config import DataConfig, OptimConfig, RuntimeConfig, SSLConfig, dump_config
from nas.cost_table import CostTable
from nas.data import holdout_split, search_split
from nas.errors import ConfigError
from nas.genotype import Genotype, plot_genotype, save_genotype
from nas.ops import clamp_bdsc_, ssl_penalty
from nas.ops.ssl import apply_shift_freeze, shift_freeze_epoch
from nas.run import RunDir, atomic_write_text
from nas.runtime import (
    autocast,
    check_device,
    compile_module,
    load_splits,
    make_loader,
    open_run,
    setup_threads,
)
from nas.spaces import SearchSpace, get_space
from nas.train import fit, seed_everything, sgd_cosine

from .supernet import Supernet

__all__ = [
    "SearchConfig",
    "SpaceConfig",
    "SupernetConfig",
    "ArchConfig",
    "CostConfig",
    "SkipGuardConfig",
    "SSLConfig",
    "Architect",
    "SearchJob",
    "run_search",
    "SearchResult",
]

log = logging.getLogger("nas")


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
    name: str = "full"
    ops: list[str] | None = None
    steps: int = 4
    multiplier: int = 4

    def build(self) -> SearchSpace:
        return get_space(self.name, self.ops, self.steps, 2, self.multiplier)


@dataclasses.dataclass(frozen=True)
class SupernetConfig:
    init_channels: int = 16
    layers: int = 8
    stem_multiplier: int = 3
    partial_channels: int = 1  # PC-DARTS K; 1 = every channel through every op
    edge_norm: bool = False
    fused: bool = True  # fused supernet forward (nas.search.fused); False: per-edge MixedOp

    def validate(self) -> None:
        if self.init_channels < 1 or self.layers < 3:
            raise ConfigError("model: init_channels must be >= 1 and layers >= 3")
        if self.partial_channels < 1:
            raise ConfigError(f"model.partial_channels must be >= 1, got {self.partial_channels}")
        if self.init_channels % self.partial_channels:
            raise ConfigError(
                f"model.init_channels ({self.init_channels}) must be divisible by "
                f"model.partial_channels ({self.partial_channels})"
            )


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3
    order: Literal["first", "second"] = "first"
    warmup_epochs: int = 0

    def validate(self) -> None:
        if self.warmup_epochs < 0:
            raise ConfigError(f"arch.warmup_epochs must be >= 0, got {self.warmup_epochs}")


@dataclasses.dataclass(frozen=True)
class CostConfig:
    """Expected cost Σ softmax(α)·cost added to the architecture loss with ``weight`` (λ)."""

    metric: Literal["params", "latency"] = "params"
    weight: float = 0.0
    device: str | None = None  # latency device; default: the run's device
    batch_size: int = 1
    # latency table from `nas latency-table` (measured on the target device): used instead
    # of timing ops on this machine; needs metric=latency
    table: str | None = None

    def validate(self) -> None:
        if self.table is not None and self.metric != "latency":
            raise ConfigError("cost.table holds latencies: set cost.metric=latency to use it")


@dataclasses.dataclass(frozen=True)
class SkipGuardConfig:
    """Guards against skip-connect collapse; both off by default (plain DARTS)."""

    max_skips: int | None = None  # cap on skips in the derived normal cell
    stop_at_skips: int | None = None  # stop the search once the normal cell derives this many


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    name: str = "search"
    run_dir: str | None = None
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    space: SpaceConfig = dataclasses.field(default_factory=SpaceConfig)
    model: SupernetConfig = dataclasses.field(default_factory=SupernetConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    arch: ArchConfig = dataclasses.field(default_factory=ArchConfig)
    cost: CostConfig = dataclasses.field(default_factory=CostConfig)
    skip_guard: SkipGuardConfig = dataclasses.field(default_factory=SkipGuardConfig)
    ssl: SSLConfig = dataclasses.field(default_factory=SSLConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    # Keep this share of the training set (stratified, seeded) out of the search entirely,
    # e.g. for an MO trial that scores the derived genotype on it afterwards.
    holdout: float | None = None
    holdout_seed: int = 0
    # Several independent searches, one per seed, in <run>/seed<N>/ plus a summary
    # (nas.search.seeds.run_search_seeds); runtime.seed is then ignored.
    seeds: list[int] | None = None

    def validate(self) -> None:
        self.space.build()  # unknown ops -> ConfigError now, not mid-run
        check_search_runtime(self.runtime)
        if self.holdout is not None and not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout must be in (0, 1) or null, got {self.holdout}")
        if self.seeds is not None:
            seeds = self.seeds
            if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
                raise ConfigError(
                    f"seeds must be a non-empty list of distinct integers >= 0 or null, got {seeds}"
                )


SYNC_BN_REFUSED = (
    "runtime.sync_bn is for retraining: a search's BN statistics are per rank and averaged "
    "each epoch (torch's SyncBatchNorm would sync the host on each of the supernet's BN "
    "layers every step); set runtime.sync_bn=false"
)


def check_search_runtime(runtime: RuntimeConfig) -> None:
    """Runtime settings a search refuses before any work: ``sync_bn`` (see
    :data:`SYNC_BN_REFUSED`)."""
    if runtime.sync_bn:
        raise ConfigError(SYNC_BN_REFUSED)


def _grads_or_zeros(grads, params):
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _sgd_groups(
    w_optimizer: torch.optim.Optimizer | None, weights, eta: float | None
) -> list[dict[str, Any]]:
    """Per weight, the settings of its own SGD param group (``eta``, if given, as the lr):
    the unrolled step must be the step the optimizer would take."""
    if w_optimizer is None:  # a plain gradient step with lr eta
        return [{"lr": eta or 0.0}] * len(weights)
    group_of = {id(p): g for g in w_optimizer.param_groups for p in g["params"]}
    lr = {} if eta is None else {"lr": eta}
    # a weight outside every group is never stepped: lr 0
    return [{**group_of[id(p)], **lr} if id(p) in group_of else {"lr": 0.0} for p in weights]


def _sgd_direction(
    p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], buf: torch.Tensor | None
) -> torch.Tensor:
    """What ``torch.optim.SGD`` multiplies by ``-lr`` for ``p``; with its defaults this is
    DARTS's ``momentum·buf + g + wd·w``."""
    d = grad + group.get("weight_decay", 0.0) * p
    momentum = group.get("momentum", 0.0)
    if momentum == 0:
        return d
    buf = d if buf is None else momentum * buf + (1 - group.get("dampening", 0.0)) * d
    return d + momentum * buf if group.get("nesterov", False) else buf


class Architect:
    """Architecture step: Adam on α (and β) against the validation loss.

    Second order follows DARTS: gradient at the one-step unrolled weights ``w'``, minus a
    finite-difference Hessian-vector product. ``w'`` is the step the weight optimizer would
    take (gradient clipping aside, as in DARTS): each weight with its own group's lr,
    momentum buffer and weight decay, so SSL displacements (no weight decay) and frozen ones
    (no gradient, skipped by SGD) move as they really would.

    Under torchrun every gradient is averaged over the ranks as soon as it is taken
    (:func:`nas.distributed.average_`, weighted by each rank's images): the first-order
    α gradient, and in second order the train gradient that builds ``w'``, the validation
    gradients at ``w'`` and the finite-difference term. Every rank then derives the same
    ``w'``, the same perturbation radius and the same α step. In one process these calls
    return at once.
    """

    def __init__(self, model: Supernet, cfg: ArchConfig) -> None:
        self.model = model
        self.order = cfg.order
        # the parameter lists, walked once (model.compile() is in place: same objects)
        self.arch = model.arch_parameters()
        named = list(model.named_weight_parameters())
        self.names = [n for n, _ in named]
        self.weights = [p for _, p in named]
        self.optimizer = torch.optim.Adam(
            self.arch, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )

    def step(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        val_batch: tuple[torch.Tensor, torch.Tensor],
        loss_fn,
        cost_fn,
        w_optimizer: torch.optim.SGD | None = None,
        eta: float | None = None,
    ) -> torch.Tensor:
        """One α update; returns the validation loss (a tensor, no host sync).

        Second order: ``eta=None`` takes each weight's lr from its group in ``w_optimizer``;
        a number overrides every group's lr.
        """
        self.optimizer.zero_grad(set_to_none=True)
        arch = self.arch
        if self.order == "first":
            val_loss = loss_fn(self.model(val_batch[0]), val_batch[1])
            (val_loss + cost_fn()).backward(inputs=arch)
            distributed.average_grads_(arch, val_batch[1].shape[0])
        else:
            val_loss = self._unrolled(train_batch, val_batch, loss_fn, w_optimizer, eta)
            cost = cost_fn()
            if cost.requires_grad:
                cost.backward(inputs=arch)
        self.optimizer.step()
        return val_loss.detach()

    def _train_loss(self, batch, loss_fn, params=None) -> torch.Tensor:
        x, y = batch
        out = self.model(x) if params is None else functional_call(self.model, params, (x,))
        return loss_fn(out, y)

    def _unrolled(self, train_batch, val_batch, loss_fn, w_optimizer, eta) -> torch.Tensor:
        names, weights, arch = self.names, self.weights, self.arch
        grads = torch.autograd.grad(
            self._train_loss(train_batch, loss_fn), weights, allow_unused=True
        )
        n_train, n_val = train_batch[1].shape[0], val_batch[1].shape[0]
        distributed.average_(grads, n_train)
        groups = _sgd_groups(w_optimizer, weights, eta)
        state = {} if w_optimizer is None else w_optimizer.state
        unrolled = {}
        lrs = []  # ξ per weight; 0 where SGD skips it (no gradient, e.g. frozen SSL shifts)
        with torch.no_grad():
            for n, p, g, group in zip(names, weights, grads, groups):
                lr = 0.0 if g is None else group["lr"]
                buf = state.get(p, {}).get("momentum_buffer")
                step = 0.0 if g is None else lr * _sgd_direction(p, g, group, buf)
                # a Parameter, as the weight it stands for: a compiled model's guards check
                # the type, so plain tensors would compile the whole supernet once more
                unrolled[n] = nn.Parameter(p - step)
                lrs.append(lr)
        val_loss = self._train_loss(val_batch, loss_fn, unrolled)
        all_grads = torch.autograd.grad(
            val_loss, [*arch, *unrolled.values()], allow_unused=True
        )
        all_grads = _grads_or_zeros(all_grads, [*arch, *unrolled.values()])
        distributed.average_(all_grads, n_val)
        d_arch, d_w = all_grads[: len(arch)], all_grads[len(arch) :]
        # Σ_p ξ_p ∇²_{α,p} L_train · v_p with v = ∇_{w'} L_val (as ∂w'_p/∂α = −ξ_p ∇²_{p,α}),
        # by central differences along u = ξ·v: (∇_α L(w + r·u) − ∇_α L(w − r·u)) / 2r with
        # r = 0.01/‖u‖. With one ξ for all weights this is exactly DARTS's ξ·(g⁺ − g⁻)/(2ε),
        # ε = 0.01/‖v‖ (same perturbed weights).
        direction = [lr * d for lr, d in zip(lrs, d_w)]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(direction)))
        r = 1e-2 / norm.clamp_min(1e-12)  # a device tensor: never read on the host
        torch._foreach_mul_(direction, r)  # r·u
        # w ± r·u from a saved copy, and w restored from it bit for bit: undoing the steps in
        # place leaves w an ulp off, enough to move an SSL displacement off the integer where
        # its gradient rule changes (and to make data-parallel ranks disagree with one process)
        saved = [p.detach().clone() for p in weights]
        with torch.no_grad():
            torch._foreach_add_(weights, direction)
        g_pos = torch.autograd.grad(self._train_loss(train_batch, loss_fn), arch, allow_unused=True)
        with torch.no_grad():
            torch._foreach_copy_(weights, saved)
            torch._foreach_sub_(weights, direction)
        g_neg = torch.autograd.grad(self._train_loss(train_batch, loss_fn), arch, allow_unused=True)
        with torch.no_grad():
            torch._foreach_copy_(weights, saved)
        g_pos, g_neg = _grads_or_zeros(g_pos, arch), _grads_or_zeros(g_neg, arch)
        diffs = [gp - gn for gp, gn in zip(g_pos, g_neg)]
        distributed.average_(diffs, n_train)  # linear: the difference of the averages
        for a, da, diff in zip(arch, d_arch, diffs):
            a.grad = da - diff / (2 * r)
        return val_loss


class SearchJob:
    """A DARTS search as a :class:`nas.train.Job`.

    Under torchrun (:mod:`nas.distributed`) each rank steps on its shard of every global
    batch; weight and architecture gradients are averaged over the ranks, so weights and
    α stay identical on all of them; BN statistics are per rank (averaged at each epoch's
    end): ``runtime.sync_bn`` is refused (:data:`SYNC_BN_REFUSED`).

    A step makes no host sync in any mode (first/second order, partial channels, edge
    normalization, cost term, SSL penalty; fused or reference): ``tests/search/
    test_host_syncs.py`` counts them.
    """

    def __init__(self, cfg: SearchConfig, run: RunDir) -> None:
        check_search_runtime(cfg.runtime)  # configs made without build() skip validate()
        self.cfg = cfg
        self.run = run
        self.world = distributed.current()
        self.device = check_device(cfg.runtime.device)
        seed_everything(cfg.runtime.seed, cfg.runtime.deterministic)
        with distributed.main_first("rank 0 to load the data"):  # one download, not N
            train_full, _ = load_splits(cfg.data, test=False)
        if cfg.holdout is not None:  # never seen by the search, weights nor α
            train_full, _ = holdout_split(train_full, cfg.holdout, cfg.holdout_seed)
        setup_threads(cfg.runtime)  # after the data: a bad dataset fails before any warning
        train, val = search_split(train_full, cfg.data.portion, seed=cfg.runtime.seed)
        # NCHW unless asked: channels_last made the 13-op step slower on CPU (benchmarks/peers.py)
        self.channels_last = cfg.runtime.use_channels_last(self.device, cpu_default=False)
        layout = {"channels_last": self.channels_last}
        self.train_loader = make_loader(train, cfg.data, cfg.runtime, self.device, train=True,
                                        **layout)
        self.val_loader = make_loader(
            val, cfg.data, cfg.runtime, self.device, train=True, seed_offset=1, **layout
        )
        self.eval_loader = make_loader(val, cfg.data, cfg.runtime, self.device, train=False,
                                       **layout)
        # evaluation sees every image: a last batch of another size (see evaluate)
        self._eval_uneven = len(val) % cfg.data.eval_batch_size != 0
        self.space = cfg.space.build()
        C, H, W = train_full.shape
        self.model = Supernet(
            self.space,
            train_full.num_classes,
            cfg.model.init_channels,
            cfg.model.layers,
            in_channels=C,
            stem_multiplier=cfg.model.stem_multiplier,
            partial_k=cfg.model.partial_channels,
            edge_norm=cfg.model.edge_norm,
            fused=cfg.model.fused,
        ).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.world.distributed:
            distributed.broadcast_module_(self.model)  # same start on every rank
            distributed.seed_rank(cfg.runtime.seed)
        compile_module(  # in place: every call of the model runs compiled code
            self.model, self.device, cfg.runtime.compile,
            mode=cfg.runtime.compile_mode, backend=cfg.runtime.compile_backend,
        )
        # walked once, not three times a step; compile() is in place: the same objects
        self.weights = self.model.weight_parameters()
        self.w_optimizer, self.scheduler = sgd_cosine(self.model, self.weights, cfg.optim)
        self.architect = Architect(self.model, cfg.arch)
        self.cost = None
        if cfg.cost.weight > 0:
            table = CostTable(
                cfg.cost.metric,
                cfg.cost.device or self.device,
                batch_size=cfg.cost.batch_size,
                table=cfg.cost.table,
            )
            shapes = self.model.edge_shapes((H, W))
            self.cost = table.tensor(self.space.ops, shapes).to(self.device)
            log.info("cost-aware search: λ=%g on %s (%s, %s)", cfg.cost.weight, table.metric,
                     table.unit, table.source)
        if self.cost is not None:  # e.g. latencies timed on each rank: use rank 0's
            distributed.broadcast_([self.cost])
        self.alpha_history: list[dict[str, Any]] = []
        self._stop = False
        self._epoch = 0
        self._val_iter = iter(())

    # Job protocol -----------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self.train_loader.set_epoch(epoch)
        self.val_loader.set_epoch(epoch)
        # SSL shifts learn until epoch ceil(freeze_at * epochs), then stay fixed (the paper's
        # last phase); recomputed every epoch so a resumed search does the same.
        if apply_shift_freeze(self.model, epoch, self.cfg.optim.epochs, self.cfg.ssl.freeze_at):
            if epoch == shift_freeze_epoch(self.cfg.optim.epochs, self.cfg.ssl.freeze_at):
                log.info("SSL shifts frozen from epoch %d on", epoch + 1)
        self._val_iter = iter(self.val_loader)
        self.model.train()

    def batches(self):
        return self.train_loader

    def num_batches(self) -> int:
        return len(self.train_loader)

    def _next_val(self):
        try:
            return next(self._val_iter)
        except StopIteration:
            self._val_iter = iter(self.val_loader)
            return next(self._val_iter)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), y)
        if self.cfg.ssl.penalty > 0:
            loss = loss + self.cfg.ssl.penalty * ssl_penalty(self.model, self.cfg.ssl.norm)
        return loss

    def _cost_term(self) -> torch.Tensor:
        if self.cost is None:
            return torch.zeros((), device=self.device)
        return self.cfg.cost.weight * self.model.expected_cost(self.cost)

    def step(self, batch):
        x, y = batch
        amp = self.cfg.runtime.amp
        if self._epoch >= self.cfg.arch.warmup_epochs:
            val = self._next_val()
            with autocast(self.device, amp and self.cfg.arch.order == "first"):
                self.architect.step(batch, val, self._loss, self._cost_term, self.w_optimizer)
        with autocast(self.device, amp):
            logits = self.model(x)
            loss = self._loss(logits, y)
        self.w_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.weights)
        distributed.average_grads_(self.weights, y.shape[0])  # before clipping
        nn.utils.clip_grad_norm_(self.weights, self.cfg.optim.grad_clip, foreach=True)
        self.w_optimizer.step()
        clamp_bdsc_(self.model)
        correct = (logits.argmax(1) == y).sum()
        return loss, correct, y.shape[0]

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        n = 0
        for x, y in self.eval_loader:
            if self._eval_uneven:  # a dynamic batch dim from the first call: the partial
                # last batch reuses the compiled eval graph, no second compile (eager: no-op)
                torch._dynamo.maybe_mark_dynamic(x, 0)
            with autocast(self.device, self.cfg.runtime.amp):
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            n += y.shape[0]
        self.model.train()
        if self.world.distributed:  # each rank saw a shard: the whole split's numbers
            totals = torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(n)])
            loss_sum, correct, n = distributed.all_reduce_sum_(totals).tolist()
            return loss_sum / n, correct / n
        return loss_sum.item() / n, correct.item() / n

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        distributed.average_buffers_(self.model)  # one model on every rank from here on
        self.scheduler.step()
        val_loss, val_acc = self.evaluate()
        genotype = self.model.genotype(self.cfg.skip_guard.max_skips)
        raw = self.model.genotype()
        skips = sum(op == "skip_connect" for op, _ in raw.normal)
        self.alpha_history.append(
            {
                "epoch": epoch,
                "normal": self.model.op_weights(False).tolist(),
                "reduce": self.model.op_weights(True).tolist(),
            }
        )
        limit = self.cfg.skip_guard.stop_at_skips
        if limit is not None and skips >= limit:
            log.info("normal cell derives %d skip connections (>= %d): stopping", skips, limit)
            self._stop = True
        row = {
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.scheduler.get_last_lr()[0],
            "normal_skips": skips,
            "genotype": str(genotype),
        }
        if self.cost is not None:
            row["expected_cost"] = float(self.model.expected_cost(self.cost).detach())
        if self.cfg.ssl.penalty > 0:
            from nas.ops import ssl_sparsity

            row["ssl_sparsity"] = ssl_sparsity(self.model)
        self.run.write_text("alphas.json", json.dumps(self._alpha_doc()))
        return row

    def should_stop(self) -> bool:
        return self._stop

    def log_tensorboard(self, tb, step: int) -> None:
        """This epoch's α entropy and heatmap (called by ``fit`` after ``end_epoch``)."""
        if self.alpha_history:
            tb.alphas(self.space.ops, self.alpha_history[-1], step)

    def _alpha_doc(self) -> dict[str, Any]:
        return {"ops": list(self.space.ops), "history": self.alpha_history}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "a_optimizer": self.architect.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "alpha_history": json.dumps(self.alpha_history),
            "stop": self._stop,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.architect.optimizer.load_state_dict(state["a_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.alpha_history = json.loads(state["alpha_history"])
        self._stop = bool(state["stop"])


@dataclasses.dataclass
class SearchResult:
    genotype: Genotype
    run_dir: Path
    epochs: int


def run_search(cfg: SearchConfig) -> SearchResult:
    """Run (or resume) a search; writes genotype.yaml/.txt, plots and alphas.json.

    Under torchrun every rank runs the search on its shard of the data and rank 0 alone
    writes the run folder; every rank returns the same result.
    """
    if cfg.seeds:
        raise ConfigError("seeds: several seeds run through nas.search.run_search_seeds "
                          "(nas search CONFIG seeds=[...]), not run_search")
    check_search_runtime(cfg.runtime)  # before the run folder and the process group
    device = check_device(cfg.runtime.device)
    with (distributed.session(device, cfg.runtime.dist_timeout),
          open_run(cfg.name, cfg.run_dir, "search") as run):
        run.save_config(dump_config(cfg))
        job = SearchJob(cfg, run)
        log.info(
            "search %s: space %s (%d ops), %d cells, C=%d, K=%d, %s order, device %s",
            cfg.name, job.space.name, len(job.space.ops), cfg.model.layers,
            cfg.model.init_channels, cfg.model.partial_channels, cfg.arch.order, job.device,
        )
        done = fit(
            job, run, cfg.optim.epochs,
            log_interval=cfg.runtime.log_interval, progress=cfg.runtime.progress, desc="search",
            tensorboard=cfg.runtime.tensorboard,
        )
        genotype = job.model.genotype(cfg.skip_guard.max_skips)
        if run.writes:
            save_genotype(genotype, run / "genotype.yaml")
            atomic_write_text(run / "genotype.txt", str(genotype) + "\n")
            plot_genotype(genotype, run.path, stem="genotype")
            if job.alpha_history:
                from .plots import plot_alphas  # matplotlib: rank 0 only, at the end

                plot_alphas(job.space.ops, job.alpha_history[-1], run / "alphas.png")
            atomic_write_text(run / "alphas.json", json.dumps(job._alpha_doc()))
        distributed.barrier("rank 0 to write the genotype")
        log.info("genotype: %s (%s)", genotype, run / "genotype.yaml")
        return SearchResult(genotype, run.path, done)
