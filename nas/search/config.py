"""The configuration of ``nas search``: space, supernet, architecture step, cost term,
skip guard, and the runtime settings a search refuses."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from nas.config import DataConfig, OptimConfig, RuntimeConfig, SSLConfig
from nas.errors import ConfigError
from nas.spaces import SearchSpace, get_space

__all__ = [
    "SpaceConfig",
    "SupernetConfig",
    "ArchConfig",
    "CostConfig",
    "SkipGuardConfig",
    "StabilizeConfig",
    "DiagnosticsConfig",
    "SelectConfig",
    "ProgressiveConfig",
    "SearchConfig",
    "SYNC_BN_REFUSED",
    "check_search_runtime",
]


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
    fused: bool = True  # fused forward (nas.search.supernet.fused); False: per-edge MixedOp

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
    # epochs of weight steps only before α moves (PC-DARTS: 15 of 50); null: the first
    # ``warmup_fraction`` of the search (PC-DARTS's 30 %, rounded down)
    warmup_epochs: int | None = None
    warmup_fraction: float = 0.3

    def validate(self) -> None:
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError(f"arch.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"arch.warmup_fraction must be in [0, 1), got "
                              f"{self.warmup_fraction}")

    def warmup(self, epochs: int) -> int:
        """Epochs without architecture steps in a search of ``epochs`` epochs."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return math.floor(self.warmup_fraction * epochs + 1e-9)


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
    """Guards against skip-connect collapse; all off by default (plain DARTS)."""

    max_skips: int | None = None  # cap on skips in the derived normal cell
    # cap on every parameter-free op (skip, pools) in the derived normal cell
    max_param_free: int | None = None
    # stop once the normal cell derives this many skips (DARTS+: 2)
    stop_at_skips: int | None = None

    def validate(self) -> None:
        for name in ("max_skips", "max_param_free", "stop_at_skips"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"skip_guard.{name} must be >= 0 or null, got {value}")


@dataclasses.dataclass(frozen=True)
class StabilizeConfig:
    """Published fixes to DARTS collapse, composable; all off by default (plain DARTS).

    ``beta``: β-DARTS (Ye et al., CVPR 2022), λ·mean over edges of logsumexp(α) added to
    the architecture loss, λ ramped linearly from 0 at epoch 0 to ``beta`` at the last
    epoch (the official code: 0.5·epoch, i.e. 25 at the end of 50 epochs).
    ``rs_epsilon``: SDARTS-RS (Chen & Hsieh, ICML 2020), uniform noise U[-ε, ε] on the
    mixing weights softmax(α) during the weight step only (clipped to [0, 1], renormalized),
    ε ramped linearly from 0.03 to ``rs_epsilon`` (the paper: 0.3).
    ``aux_skip``: DARTS- (Chu et al., ICLR 2021), an auxiliary skip on every edge
    (FactorizedReduce on stride 2, trained with the weights) scaled by β decaying linearly
    from 1 at epoch 0 to 0 at the last epoch; never part of the genotype.
    ``dirichlet``: DrNAS (Chen et al., ICLR 2021), mixing weights drawn in every training
    forward from Dirichlet(elu(α) + 1) with the reparameterized gradient; the derivation,
    the cost term and evaluation use the Dirichlet mean; ``dirichlet_kl`` weighs the
    KL(Dirichlet(elu(α) + 1) ‖ Dirichlet(1)) term of the architecture loss (the official
    code's 1e-3).
    """

    beta: float = 0.0
    rs_epsilon: float = 0.0
    aux_skip: bool = False
    dirichlet: bool = False
    dirichlet_kl: float = 1e-3

    def validate(self) -> None:
        if self.dirichlet_kl < 0:
            raise ConfigError(f"stabilize.dirichlet_kl must be >= 0, got {self.dirichlet_kl}")
        if self.beta < 0 or self.rs_epsilon < 0:
            raise ConfigError(f"stabilize.beta and stabilize.rs_epsilon must be >= 0, got "
                              f"{self.beta} and {self.rs_epsilon}")


@dataclasses.dataclass(frozen=True)
class DiagnosticsConfig:
    """Per-epoch collapse diagnostics beyond the free ones (parameter-free share, α entropy,
    edge margins): ``hessian_iters`` power iterations for the largest eigenvalue of the
    validation loss's Hessian in α (R-DARTS, Zela et al., ICLR 2020), 0 = off."""

    hessian_iters: int = 0
    # R-DARTS's early stop (DARTS-ES): with λ̄(i) the mean eigenvalue of epochs i-k+1..i,
    # stop at epoch i once λ̄(i-k) / λ̄(i) < threshold and derive from epoch i-k's α
    # (the paper: k = 5, T = 0.75); needs hessian_iters > 0
    eig_stop: bool = False
    eig_window: int = 5
    eig_threshold: float = 0.75

    def validate(self) -> None:
        if self.hessian_iters < 0:
            raise ConfigError(f"diagnostics.hessian_iters must be >= 0, got "
                              f"{self.hessian_iters}")
        if self.eig_stop and self.hessian_iters == 0:
            raise ConfigError("diagnostics.eig_stop reads the Hessian eigenvalue: set "
                              "diagnostics.hessian_iters > 0 (e.g. 5)")
        if self.eig_window < 1 or not 0.0 < self.eig_threshold <= 1.0:
            raise ConfigError(f"diagnostics.eig_window must be >= 1 and eig_threshold in "
                              f"(0, 1], got {self.eig_window} and {self.eig_threshold}")


@dataclasses.dataclass(frozen=True)
class ProgressiveConfig:
    """P-DARTS (Chen et al., ICCV 2019): the search in stages of ``layers`` cells each (the
    paper: 5, 11, 17), every stage a new supernet (weights and α initialized again) over the
    ops still kept, ``optim.epochs`` long with its own α warm-up; after stage ``k`` each
    edge keeps its ``keep_ops[k]`` ops of largest mixing weight (``none`` counted, as the
    official code does; the paper: 8 -> 5 -> 3). ``skip_dropout[k]``: dropout after every
    stride-1 skip in stage ``k`` (the paper's CIFAR-10: 0.0, 0.4, 0.7), decayed as the
    official code does: ``p·(E − e − 1)/E`` during the warm-up, ``p·exp(−0.2·(e − W))``
    after it. The skip cap at the end is ``skip_guard.max_skips`` (the paper: 2).
    ``layers: null``: one stage, plain DARTS.
    """

    layers: list[int] | None = None
    keep_ops: list[int] = dataclasses.field(default_factory=lambda: [5, 3])
    skip_dropout: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.4, 0.7])

    def validate(self) -> None:
        if self.layers is None:
            return
        n = len(self.layers)
        if n < 1 or min(self.layers) < 3:
            raise ConfigError(f"progressive.layers must list stages of >= 3 cells, got "
                              f"{self.layers}")
        if len(self.keep_ops) != n - 1 or len(self.skip_dropout) != n:
            raise ConfigError(f"progressive: {n} stages need {n - 1} keep_ops (after each "
                              f"stage but the last) and {n} skip_dropout, got "
                              f"{self.keep_ops} and {self.skip_dropout}")
        if any(k < 2 for k in self.keep_ops) or any(
                b > a for a, b in zip(self.keep_ops, self.keep_ops[1:])):
            raise ConfigError(f"progressive.keep_ops must be >= 2 and not increase, got "
                              f"{self.keep_ops}")
        if any(not 0.0 <= p < 1.0 for p in self.skip_dropout):
            raise ConfigError(f"progressive.skip_dropout must be in [0, 1), got "
                              f"{self.skip_dropout}")


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """How the genotype is read off the supernet at the end of the search.

    ``argmax``: DARTS, the strongest op per edge and the strongest edges per node.
    ``perturbation``: DARTS-PT (Wang et al., ICLR 2021, :mod:`nas.search.perturbation`):
    edges in a seeded random order, each decided to the op whose removal costs the most
    validation accuracy, then per node the inputs whose removal costs the most, with
    ``tune_epochs`` of weight training after each decision (the paper: 5 on CIFAR-10);
    ``tune_steps`` replaces that with a step count, ``eval_batches`` caps the validation
    batches of each accuracy (null: the whole split).
    """

    method: Literal["argmax", "perturbation"] = "argmax"
    tune_epochs: int = 5
    tune_steps: int | None = None
    eval_batches: int | None = None
    topology: bool = True

    def validate(self) -> None:
        if self.tune_epochs < 0 or (self.tune_steps is not None and self.tune_steps < 0):
            raise ConfigError("select.tune_epochs and select.tune_steps must be >= 0")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise ConfigError(f"select.eval_batches must be >= 1 or null, got "
                              f"{self.eval_batches}")


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
    stabilize: StabilizeConfig = dataclasses.field(default_factory=StabilizeConfig)
    diagnostics: DiagnosticsConfig = dataclasses.field(default_factory=DiagnosticsConfig)
    select: SelectConfig = dataclasses.field(default_factory=SelectConfig)
    progressive: ProgressiveConfig = dataclasses.field(default_factory=ProgressiveConfig)
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
