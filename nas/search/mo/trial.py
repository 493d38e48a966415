"""The one multi-objective trial, shared by the Optuna and Ray Tune drivers.

``define_space(trial, cfg)`` samples choices through an Optuna trial (define-by-run; Ray
Tune's ``OptunaSearch`` accepts the same function) and ``run_trial(params, cfg, dir)``
turns the sampled choices into objective values:

- ``genotype`` trials sample every edge's op and inputs and train the network briefly;
- ``darts`` trials sample the cost weight λ, the space and the architecture learning rate,
  run a cost-aware differentiable search, then train its derived genotype briefly.

Objectives: ``val_acc`` (accuracy on a seeded, stratified holdout of the training set,
maximize; the test split is never loaded, so it cannot choose the architecture),
``params`` (M), ``latency`` (ms, deploy form: measured on ``latency.device``, or, with
``latency.table``, predicted from a table measured on the target device, see
:mod:`nas.cost.table`) and ``macs`` (M).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from nas.config import DataConfig, RuntimeConfig, dump_config
from nas.cost.counts import count_macs, count_params
from nas.cost.table import LatencyTable, OpKey, PartKey, load_table, network_layout
from nas.cost.timing import measure_latency
from nas.data import holdout_split
from nas.deploy import to_deploy
from nas.errors import ConfigError, NasError
from nas.evaluate.train import ModelConfig, TrainConfig, build_model, run_train
from nas.genotype import Genotype, save_genotype
from nas.loop import EPOCH
from nas.run import atomic_write_text
from nas.runtime import check_device, load_splits
from nas.search.config import SearchConfig, SpaceConfig
from nas.search.darts import run_search
from nas.spaces import SearchSpace, get_space
from nas.threads import cpu_oversubscribed

__all__ = [
    "OBJECTIVES",
    "MOConfig",
    "mo_requirements",
    "TrialBudget",
    "DartsTrialConfig",
    "LatencyConfig",
    "ConstraintConfig",
    "RayConfig",
    "TrialError",
    "check_inputs",
    "resolve_paths",
    "latency_label",
    "define_space",
    "genotype_from_params",
    "run_trial",
]

log = logging.getLogger("nas")

#: objective -> Optuna direction
OBJECTIVES: dict[str, str] = {
    "val_acc": "maximize",
    "params": "minimize",
    "latency": "minimize",
    "macs": "minimize",
}

_RENAMED = {"accuracy": "val_acc"}  # old objective names -> new (ConfigError names the new one)


class TrialError(NasError):
    """Trials fail in a way that will recur (the same error twice in a row), or none
    completes: the search stops with this one line (exit status 2) instead of burning
    every remaining trial on the same error."""


@dataclasses.dataclass(frozen=True)
class TrialBudget:
    """Brief training of each trial's network (on a held-out split of the training set)."""

    epochs: int = 2
    init_channels: int = 8
    layers: int = 5
    lr: float = 0.05
    drop_path: float = 0.0
    holdout: float = 0.2


@dataclasses.dataclass(frozen=True)
class DartsTrialConfig:
    """Ranges sampled by ``darts`` trials, and the fixed search budget."""

    cost_weight: tuple[float, float] = (1e-3, 3.0)  # log-uniform; 0 is a separate choice
    spaces: list[str] = dataclasses.field(default_factory=lambda: ["full", "paper", "darts"])
    arch_lr: tuple[float, float] = (1e-4, 3e-3)
    cost_metric: Literal["params", "latency"] = "params"
    epochs: int = 2
    init_channels: int = 8
    layers: int = 5
    partial_channels: int = 2


@dataclasses.dataclass(frozen=True)
class LatencyConfig:
    """The latency objective: measured here on ``device`` (deploy form, ``batch_size``), or,
    with ``table`` (a file from ``nas latency-table``, measured on the target device),
    predicted from it without timing anything here (``device`` is then unused)."""

    device: str = "cpu"
    batch_size: int = 1
    repeats: int = 10
    table: str | None = None

    def validate(self) -> None:
        if self.table is not None and not self.table.strip():
            raise ConfigError("latency.table: empty path (null to measure on latency.device)")


@dataclasses.dataclass(frozen=True)
class ConstraintConfig:
    """Optuna constraints (feasible when ≤ 0); trials over budget skip training."""

    params_max_m: float | None = None
    latency_max_ms: float | None = None


@dataclasses.dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join
    num_cpus: int | None = None  # for a local Ray
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 2
    max_failures: int = 2
    asha: bool = False  # early stopping; needs a single (scalarized) objective
    scalarize: dict = dataclasses.field(default_factory=dict)  # {objective: weight}


@dataclasses.dataclass(frozen=True)
class MOConfig:
    name: str = "mo"
    run_dir: str | None = None
    driver: Literal["optuna", "ray"] = "optuna"
    trial_kind: Literal["genotype", "darts"] = "genotype"
    objectives: list[str] = dataclasses.field(
        default_factory=lambda: ["val_acc", "params", "latency"]
    )
    n_trials: int = 20
    sampler: Literal["nsga2", "tpe", "random"] = "nsga2"
    population_size: int = 8
    storage: str | None = None  # default: sqlite:///<run>/study.db
    study_name: str | None = None
    workers: int = 1
    heartbeat_s: int = 60
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    space: SpaceConfig = dataclasses.field(default_factory=SpaceConfig)
    budget: TrialBudget = dataclasses.field(default_factory=TrialBudget)
    darts: DartsTrialConfig = dataclasses.field(default_factory=DartsTrialConfig)
    latency: LatencyConfig = dataclasses.field(default_factory=LatencyConfig)
    constraints: ConstraintConfig = dataclasses.field(default_factory=ConstraintConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    runtime: RuntimeConfig = dataclasses.field(
        default_factory=lambda: RuntimeConfig(progress=False)
    )
    # Testing aid: true makes the run's first trial attempt raise once; "always" makes
    # every attempt raise the same error (a failure that recurs).
    inject_failure: bool | Literal["always"] = False

    def validate(self) -> None:
        if not self.objectives:
            raise ConfigError("objectives: at least one")
        named = {"objectives": self.objectives, "ray.scalarize": self.ray.scalarize}
        for where, names in named.items():
            for old in sorted(set(names) & set(_RENAMED)):
                raise ConfigError(
                    f"{where}: {old!r} is now {_RENAMED[old]!r} (accuracy on the holdout of "
                    "the training set; the test split is never used)"
                )
        for obj in self.objectives:
            if obj not in OBJECTIVES:
                raise ConfigError(
                    f"objectives: unknown objective {obj!r} (known: {', '.join(OBJECTIVES)})"
                )
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"objectives: duplicates in {self.objectives}")
        if self.n_trials < 1 or self.workers < 1:
            raise ConfigError("n_trials and workers must be >= 1")
        for obj in self.ray.scalarize:
            if obj not in OBJECTIVES:
                raise ConfigError(f"ray.scalarize: unknown objective {obj!r}")
        if self.ray.asha and not self.ray.scalarize:
            raise ConfigError("ray.asha needs ray.scalarize (ASHA stops on one metric)")
        if not 0.0 < self.budget.holdout < 1.0:
            raise ConfigError(
                f"budget.holdout must be in (0, 1), got {self.budget.holdout}: trials are "
                "scored on held-out training images, never on the test split"
            )
        if self.budget.epochs < 1:
            raise ConfigError(f"budget.epochs must be >= 1, got {self.budget.epochs}")
        self.space.build()
        for name in self.darts.spaces:
            get_space(name)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]


def _node_pairs(node: int) -> list[str]:
    return [f"{a},{b}" for a, b in itertools.combinations(range(node + 2), 2)]


def define_space(trial: Any, cfg: MOConfig) -> None:
    """Sample a trial's choices on an Optuna trial (define-by-run)."""
    if cfg.trial_kind == "genotype":
        space = cfg.space.build()
        ops = [op for op in space.ops if op != "none"]
        for cell in ("normal", "reduce"):
            for node in range(space.steps):
                trial.suggest_categorical(f"{cell}_n{node}_inputs", _node_pairs(node))
                for k in range(2):
                    trial.suggest_categorical(f"{cell}_n{node}_op{k}", ops)
    else:
        d = cfg.darts
        use_cost = trial.suggest_categorical("use_cost", [True, False])
        if use_cost:
            trial.suggest_float("cost_weight", *d.cost_weight, log=True)
        trial.suggest_categorical("space", list(d.spaces))
        trial.suggest_float("arch_lr", *d.arch_lr, log=True)


def genotype_from_params(params: dict[str, Any], cfg: MOConfig) -> Genotype:
    """The genotype a ``genotype`` trial's sampled choices describe."""
    space = cfg.space.build()
    cells = {}
    for cell in ("normal", "reduce"):
        edges = []
        for node in range(space.steps):
            inputs = [int(v) for v in str(params[f"{cell}_n{node}_inputs"]).split(",")]
            for k, inp in enumerate(inputs):
                edges.append((params[f"{cell}_n{node}_op{k}"], inp))
        cells[cell] = edges
    return Genotype(cells["normal"], space.concat, cells["reduce"], space.concat).validate()


def _train_cfg(cfg: MOConfig, trial_dir: Path) -> TrainConfig:
    b = cfg.budget
    return TrainConfig(
        name=trial_dir.name,
        run_dir=str(trial_dir / "train"),
        data=dataclasses.replace(cfg.data, cutout=0),
        model=ModelConfig(
            genotype=str(trial_dir / "genotype.yaml"), init_channels=b.init_channels,
            layers=b.layers,
            auxiliary=False, drop_path=b.drop_path,
        ),
        optim=dataclasses.replace(TrainConfig().optim, epochs=b.epochs, lr=b.lr),
        runtime=dataclasses.replace(cfg.runtime, progress=False),
        eval_every=1,  # a val_acc every epoch, for ASHA's intermediate reports
        holdout=b.holdout,
        holdout_seed=cfg.runtime.seed,  # one holdout for every trial: comparable scores
    )


#: per process: data config (YAML) -> (C, H, W), number of classes
_DATA_INFO: dict[str, tuple[tuple[int, int, int], int]] = {}


def data_info(data: DataConfig) -> tuple[tuple[int, int, int], int]:
    """Image shape and class count of the training split, loaded once per process.

    A trial builds its network and measures its costs before training (an over-budget
    trial is not trained), so it needs these first; ``load_splits`` keeps ``data.limit``
    and logs the split's real size.
    """
    key = dump_config(data)
    if key not in _DATA_INFO:
        train, _ = load_splits(data, test=False)
        _DATA_INFO[key] = (tuple(train.shape), train.num_classes)
    return _DATA_INFO[key]


#: per process: latency table path -> table
_TABLES: dict[str, LatencyTable] = {}


def _latency_table(path: str) -> LatencyTable:
    if path not in _TABLES:
        _TABLES[path] = load_table(path)
    return _TABLES[path]


def resolve_paths(cfg: MOConfig) -> MOConfig:
    """``latency.table`` as an absolute path: Ray Tune runs each trial in its own folder."""
    if cfg.latency.table is None:
        return cfg
    table = str(Path(cfg.latency.table).expanduser().resolve())
    return dataclasses.replace(cfg, latency=dataclasses.replace(cfg.latency, table=table))


def latency_label(cfg: MOConfig) -> str:
    """Where trial latencies come from, for reports and plot labels."""
    if cfg.latency.table is not None:
        return f"predicted from table {cfg.latency.table}"
    return f"measured on {cfg.latency.device}"


def check_inputs(cfg: MOConfig, devices: bool = True) -> None:
    """Fail before the first trial on what would fail every trial: data that cannot load,
    a holdout that leaves an empty split, an absent device, a latency table that lacks an
    op or shape the trials need (ConfigError/DataError, which the CLI prints as one line
    with exit status 2). ``devices=False`` on a Ray cluster, whose GPUs are on the
    workers."""
    if devices:
        check_device(cfg.runtime.device)
        if cfg.latency.table is None:  # a table needs no local latency device
            check_device(cfg.latency.device)
    train, _ = load_splits(cfg.data, test=False)
    holdout_split(train, cfg.budget.holdout, cfg.runtime.seed)
    _DATA_INFO[dump_config(cfg.data)] = (tuple(train.shape), train.num_classes)
    if cfg.latency.table is not None:
        table = _latency_table(cfg.latency.table)
        table.check_batch(cfg.latency.batch_size, "latency.batch_size")
        table.require(*mo_requirements(cfg, tuple(train.shape), train.num_classes))


def _search_genotype(params: dict[str, Any], cfg: MOConfig, trial_dir: Path) -> Genotype:
    d = cfg.darts
    # the inner search's latency term reads the table too, at the MO batch size
    table: dict[str, Any] = {}
    if d.cost_metric == "latency" and cfg.latency.table is not None:
        table = {"table": cfg.latency.table, "batch_size": cfg.latency.batch_size}
    search = SearchConfig(
        name=trial_dir.name,
        run_dir=str(trial_dir / "search"),
        data=cfg.data,
        space=dataclasses.replace(cfg.space, name=params["space"], ops=None),
        model=dataclasses.replace(
            SearchConfig().model, init_channels=d.init_channels, layers=d.layers,
            partial_channels=d.partial_channels, edge_norm=d.partial_channels > 1,
        ),
        optim=dataclasses.replace(SearchConfig().optim, epochs=d.epochs, lr=0.05, lr_min=0.0),
        arch=dataclasses.replace(SearchConfig().arch, lr=float(params["arch_lr"])),
        cost=dataclasses.replace(
            SearchConfig().cost, metric=d.cost_metric,
            weight=float(params.get("cost_weight", 0.0)) if params.get("use_cost") else 0.0,
            device=cfg.latency.device, **table,
        ),
        # one process: sync_bn has nothing to sync there, and searches refuse it
        runtime=dataclasses.replace(cfg.runtime, progress=False, sync_bn=False),
        # the holdout that scores the genotype afterwards stays out of the search too
        holdout=cfg.budget.holdout,
        holdout_seed=cfg.runtime.seed,
    )
    return run_search(search).genotype


def run_trial(
    params: dict[str, Any],
    cfg: MOConfig,
    trial_dir: str | Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Objective values (and bookkeeping) for one trial's sampled ``params``.

    Costs (params, MACs, latency) and constraint violations come first, from the untrained
    network; only a feasible network is trained. ``on_epoch`` gets, after every training
    epoch, the same dict this function returns, with that epoch's ``val_acc`` and the
    ``epochs`` done so far, so an early-stopped trial (Ray Tune's ASHA) has complete values.
    """
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    marker = trial_dir.parent / ".injected_failure"
    if cfg.inject_failure == "always":
        raise RuntimeError("injected failure (inject_failure=always)")
    if cfg.inject_failure and not marker.exists():
        marker.write_text(trial_dir.name)
        raise RuntimeError(f"injected failure in {trial_dir.name} (inject_failure=true)")
    if cfg.trial_kind == "genotype":
        genotype = genotype_from_params(params, cfg)
    else:  # the DARTS search logs the genotype it derives
        genotype = _search_genotype(params, cfg, trial_dir)
    save_genotype(genotype, trial_dir / "genotype.yaml")
    tcfg = _train_cfg(cfg, trial_dir)
    shape, num_classes = data_info(cfg.data)
    model = build_model(tcfg, shape[0], num_classes, genotype)
    metrics: dict[str, Any] = {
        "params": count_params(model) / 1e6,
        "macs": count_macs(model, (1, *shape)) / 1e6,
    }
    if cfg.latency.table is not None:  # predicted: Σ fixed parts + Σ edge ops of the table
        layout = network_layout(
            tcfg.model.channels, tcfg.model.layers, shape[0], shape[1:], num_classes,
            len(genotype.normal_concat), len(genotype.reduce_concat),
        )
        metrics.update(
            latency=_latency_table(cfg.latency.table).network_ms(layout, genotype),
            latency_noisy=False, latency_source=f"table:{cfg.latency.table}",
        )
    else:
        busy_before = cpu_oversubscribed()
        latency = measure_latency(
            to_deploy(model), (cfg.latency.batch_size, *shape), cfg.latency.device,
            repeats=cfg.latency.repeats,
        )
        metrics.update(
            latency=latency,
            # measured while the CPU was oversubscribed: the figure is noise, flag it
            latency_noisy=busy_before or cpu_oversubscribed(),
            latency_source=f"measured:{cfg.latency.device}",
        )
    c = cfg.constraints
    violations: dict[str, float] = {}
    if c.params_max_m is not None:
        violations["params"] = metrics["params"] - c.params_max_m
    if c.latency_max_ms is not None:
        violations["latency"] = metrics["latency"] - c.latency_max_ms
    feasible = all(v <= 0 for v in violations.values())
    metrics.update(
        constraints=violations, feasible=feasible, genotype=str(genotype),
        trial_dir=str(trial_dir), epochs=0,
    )
    log.info(
        "%s: %s%.4f M params, %.2f M MACs, latency %.3f ms (%s)%s", trial_dir.name,
        f"{genotype}, " if cfg.trial_kind == "genotype" else "", metrics["params"],
        metrics["macs"], metrics["latency"], metrics["latency_source"],
        "" if feasible else f"; over budget {violations}, not trained",
    )
    if feasible:
        def epoch_done(row: dict[str, Any]) -> None:
            if on_epoch is not None and "val_acc" in row:
                on_epoch({**metrics, "val_acc": float(row["val_acc"]), "epochs": row[EPOCH] + 1})

        [result] = run_train(tcfg, genotype, on_epoch=epoch_done)
        if result.val_acc is None:  # holdout is always set here; never fall back to test
            raise RuntimeError(f"{trial_dir.name}: training reported no holdout accuracy")
        metrics.update(val_acc=float(result.val_acc), epochs=cfg.budget.epochs)
    else:  # over budget: not worth training; infeasible for the sampler anyway
        metrics["val_acc"] = 0.0
    atomic_write_text(trial_dir / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def mo_requirements(
    cfg: MOConfig, shape: tuple[int, int, int], num_classes: int
) -> tuple[set[OpKey], set[PartKey]]:
    """What ``nas mo-search`` looks up: the trial networks (``budget`` width and depth)'s
    fixed parts and every op but ``none`` at every edge shape; ``darts`` trials with
    ``darts.cost_metric=latency`` also need every op at their supernet's edge shapes."""
    steps, mult = cfg.space.steps, cfg.space.multiplier
    if cfg.trial_kind == "genotype":
        spaces: list[SearchSpace] = [cfg.space.build()]
    else:  # as _search_genotype builds them
        spaces = [get_space(name, None, steps, 2, mult) for name in cfg.darts.spaces]
    b = cfg.budget
    layout = network_layout(b.init_channels, b.layers, shape[0], shape[1:], num_classes, mult)
    trial_ops = {op for s in spaces for op in s.ops if op != "none"}
    shapes = {s for row in layout.edge_shapes(steps) for s in row}
    ops = {OpKey(op, *s) for s in shapes for op in trial_ops}
    if cfg.trial_kind == "darts" and cfg.darts.cost_metric == "latency":
        d = cfg.darts
        net = network_layout(d.init_channels, d.layers, shape[0], shape[1:], num_classes, mult)
        shapes = {s for row in net.edge_shapes(steps) for s in row}
        ops |= {OpKey(op, *s) for s in shapes for sp in spaces for op in sp.ops}
    return ops, set(layout.parts())
