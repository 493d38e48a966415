"""Latency tables measured on a target device (``nas latency-table``).

A table holds the latency of every candidate op at every ``(C, stride, H, W)`` a search
needs, measured once on the machine that will run the network (a phone-class CPU, a GPU,
ONNX Runtime), so that a search elsewhere optimizes for that device:
``cost.table=lut.json`` in ``nas search`` (the cost-aware term) and
``latency.table=lut.json`` in ``nas mo-search`` (the latency objective). Nothing is timed
on the searching machine then.

File (JSON)::

    {"format": "nas-latency-table", "version": 1,
     "metadata": {"device": "cpu", "device_key": "...", "batch_size": 1, "threads": 1, ...},
     "entries": [{"op": "sep_conv_3x3", "C": 16, "stride": 1, "H": 32, "W": 32, "ms": 0.41}],
     "fixed": [{"part": "stem", "C_in": 3, "C_out": 48, "stride": 1, "H": 32, "W": 32,
                "ms": 0.05}]}

Every ``ms`` is the median of eval-mode forwards of the module in deploy form (latency
describes inference). ``entries``: candidate ops, built as the evaluation network builds
them (``OPS[op](C, stride, affine=True)``). ``fixed`` (tables built for an mo-search
config only): the genotype-independent parts of a trial network. A trial network's
predicted latency is ``stem + Σ_cells (preprocess0 + preprocess1 + Σ_edges op) + head``;
the two-branch sums of each node, the channel concatenation of each cell and the Python
overhead between modules are not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from nas.errors import ConfigError
from nas.genotype import Genotype
from nas.run import atomic_write_text
from nas.spaces import random_genotype  # re-exported: moved to nas.spaces

# torch is imported where it is used: `nas` parses its arguments before torch loads
if TYPE_CHECKING:
    from torch import nn

    from nas.config import DataConfig
    from nas.search.darts import SearchConfig
    from nas.search.trial import MOConfig
    from nas.spaces import SearchSpace

__all__ = [
    "FORMAT", "VERSION", "DEVICES", "OpKey", "PartKey", "LatencyTable", "load_table",
    "CellLayout", "NetworkLayout", "network_layout", "data_shape", "search_requirements",
    "mo_requirements", "build_table", "random_genotype", "add_latency_table_parser",
    "cmd_latency_table",
]

log = logging.getLogger("nas")

FORMAT = "nas-latency-table"
VERSION = 1
DEVICES = ("cpu", "cuda", "onnxruntime")

Shape = tuple[int, int, int, int]  # (C, stride, H, W), as in nas.cost_table


class OpKey(NamedTuple):
    """A candidate op at one input shape."""

    op: str
    C: int
    stride: int
    H: int
    W: int

    def describe(self) -> str:
        return f"op {self.op!r} at C={self.C}, stride {self.stride}, {self.H}x{self.W}"


class PartKey(NamedTuple):
    """A genotype-independent part of a network: ``stem``, ``relu_conv_bn`` (1x1
    preprocessing), ``factorized_reduce`` (preprocessing after a reduction) or ``head``
    (global pooling + classifier; ``C_out`` = classes)."""

    part: str
    C_in: int
    C_out: int
    stride: int
    H: int
    W: int

    def describe(self) -> str:
        return (f"fixed part {self.part!r} ({self.C_in}->{self.C_out} channels, stride "
                f"{self.stride}, {self.H}x{self.W})")


_PARTS = ("stem", "relu_conv_bn", "factorized_reduce", "head")  # nas.cost_table.part_module


# --- the table --------------------------------------------------------------------------


class LatencyTable:
    """Latencies in ms of ops (``ops``) and fixed network parts (``parts``)."""

    def __init__(
        self,
        metadata: dict[str, Any],
        ops: dict[OpKey, float],
        parts: dict[PartKey, float] | None = None,
        path: str | Path | None = None,
    ) -> None:
        self.metadata = dict(metadata)
        self.ops = dict(ops)
        self.parts = dict(parts or {})
        self.path = Path(path) if path is not None else None

    @property
    def batch_size(self) -> int:
        return int(self.metadata.get("batch_size", 1))

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else "(not saved)"

    def describe(self) -> str:
        """``lut.json (cpu: <device key>, batch 1)``, for logs and reports."""
        m = self.metadata
        return f"{self._name} ({m.get('device')}: {m.get('device_key')}, batch {self.batch_size})"

    def _missing(self, key: OpKey | PartKey) -> ConfigError:
        out = f" --out {self.path}" if self.path is not None else ""
        return ConfigError(
            f"latency table {self._name} has no entry for {key.describe()} (batch "
            f"{self.batch_size}); rebuild the table with this config: nas latency-table "
            f"CONFIG [key=value ...]{out}"
        )

    def check_batch(self, batch_size: int, field: str) -> None:
        """The table's batch size must be the one the search assumes."""
        if batch_size != self.batch_size:
            raise ConfigError(
                f"latency table {self._name} was measured at batch {self.batch_size} but "
                f"{field} is {batch_size}: set {field}={self.batch_size}, or rebuild the "
                f"table with --batch {batch_size}"
            )

    def op_ms(self, op: str, shape: Shape) -> float:
        key = OpKey(op, *shape)
        if key not in self.ops:
            raise self._missing(key)
        return self.ops[key]

    def require(self, ops: Iterable[OpKey] = (), parts: Iterable[PartKey] = ()) -> None:
        """One-line ConfigError naming the first (sorted) op or part the table lacks."""
        for key in sorted(set(ops) - set(self.ops)):
            raise self._missing(key)
        for part in sorted(set(parts) - set(self.parts)):
            raise self._missing(part)

    def network_ms(self, layout: NetworkLayout, genotype: Genotype) -> float:
        """Predicted latency of the network ``layout`` built from ``genotype``: the fixed
        parts plus one op per edge (see the module docstring for what is summed)."""
        ops, parts = layout.genotype_keys(genotype)
        self.require(ops, parts)
        return sum(self.ops[k] for k in ops) + sum(self.parts[k] for k in parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "metadata": self.metadata,
            "entries": [{**k._asdict(), "ms": v} for k, v in sorted(self.ops.items())],
            "fixed": [{**k._asdict(), "ms": v} for k, v in sorted(self.parts.items())],
        }

    def save(self, path: str | Path) -> Path:
        """Write the table atomically (never a half file); returns the path."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        self.path = path
        return path


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _parse_row(item: Any, cls: type[OpKey] | type[PartKey], where: str) -> tuple[Any, float]:
    fields = cls._fields
    if not isinstance(item, dict) or set(item) != {*fields, "ms"}:
        raise ConfigError(f"{where}: expected keys {', '.join(fields)}, ms; got {item!r:.80}")
    name, *dims = (item[f] for f in fields)
    if not isinstance(name, str) or not name or not all(_is_count(d) for d in dims):
        raise ConfigError(f"{where}: {fields[0]} must be a name and the sizes positive "
                          f"integers; got {item!r:.80}")
    ms = item["ms"]
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms) or ms < 0:
        raise ConfigError(f"{where}: ms must be a finite number >= 0, got {ms!r}")
    return cls(name, *dims), float(ms)


def _rows(data: dict[str, Any], key: str, cls: Any, where: str) -> dict[Any, float]:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}: {key!r} must be a list")
    out: dict[Any, float] = {}
    for i, item in enumerate(items):
        k, ms = _parse_row(item, cls, f"{where}: {key}[{i}]")
        if k in out:
            raise ConfigError(f"{where}: {key}[{i}] repeats {k.describe()}")
        out[k] = ms
    return out


def load_table(path: str | Path) -> LatencyTable:
    """Read and validate a table file; any problem is a one-line ConfigError naming it."""
    path = Path(path)
    where = f"latency table {path}"
    build = f"build one with `nas latency-table CONFIG --out {path}`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file; {build}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"{where}: cannot read it ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a latency table (no \"format\": \"{FORMAT}\"); {build}")
    if data.get("version") != VERSION:
        raise ConfigError(f"{where}: format version {data.get('version')!r}, this version of "
                          f"nas reads {VERSION}; {build}")
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("device"), str) or not _is_count(
        meta.get("batch_size")
    ):
        raise ConfigError(f"{where}: 'metadata' must be a mapping with a device name and a "
                          "batch_size >= 1")
    ops = _rows(data, "entries", OpKey, where)
    parts = _rows(data, "fixed", PartKey, where)
    unknown = sorted({k.part for k in parts} - set(_PARTS))
    if unknown:
        raise ConfigError(f"{where}: unknown fixed part {unknown[0]!r} (known: "
                          f"{', '.join(_PARTS)})")
    return LatencyTable(meta, ops, parts, path)


# --- network layout ---------------------------------------------------------------------


def _half(hw: tuple[int, int]) -> tuple[int, int]:
    return (hw[0] + 1) // 2, (hw[1] + 1) // 2  # stride-2 ops: ceil(H / 2)


@dataclasses.dataclass(frozen=True)
class CellLayout:
    """Channels and spatial sizes of one cell: inputs ``s0``, ``s1`` and its output."""

    reduction: bool
    reduction_prev: bool
    C_prev_prev: int
    C_prev: int
    C: int
    s0: tuple[int, int]
    s1: tuple[int, int]
    out: tuple[int, int]

    def edge_shape(self, index: int) -> Shape:
        """(C, stride, H, W) of an edge reading state ``index`` (0, 1: the cell inputs)."""
        if self.reduction and index < 2:
            return (self.C, 2, *self.s1)
        return (self.C, 1, *self.out)

    def parts(self) -> list[PartKey]:
        if self.reduction_prev:
            pre0 = PartKey("factorized_reduce", self.C_prev_prev, self.C, 2, *self.s0)
        else:
            pre0 = PartKey("relu_conv_bn", self.C_prev_prev, self.C, 1, *self.s0)
        return [pre0, PartKey("relu_conv_bn", self.C_prev, self.C, 1, *self.s1)]


@dataclasses.dataclass(frozen=True)
class NetworkLayout:
    """Every cell of a DARTS network (the evaluation network and the supernet share it)."""

    cells: tuple[CellLayout, ...]
    stem: PartKey
    head: PartKey

    def edge_shapes(self, steps: int) -> list[list[Shape]]:
        """Per cell, per supernet edge: (C, stride, H, W), as ``Supernet.edge_shapes``."""
        return [[c.edge_shape(j) for i in range(steps) for j in range(2 + i)] for c in self.cells]

    def parts(self) -> list[PartKey]:
        return [self.stem, *(p for c in self.cells for p in c.parts()), self.head]

    def genotype_keys(self, genotype: Genotype) -> tuple[list[OpKey], list[PartKey]]:
        """One op key per edge of every cell (repeats kept), and the fixed parts."""
        ops = [
            OpKey(op, *cell.edge_shape(index))
            for cell in self.cells
            for op, index in (genotype.reduce if cell.reduction else genotype.normal)
        ]
        return ops, self.parts()


def network_layout(
    C: int,
    layers: int,
    in_channels: int,
    image_hw: tuple[int, int],
    num_classes: int,
    multiplier: int,
    reduce_multiplier: int | None = None,
    stem_multiplier: int = 3,
) -> NetworkLayout:
    """The layout of ``NetworkCIFAR`` (and ``Supernet``): reductions at 1/3 and 2/3 depth,
    channels doubled there; ``multiplier``: nodes concatenated per (normal) cell."""
    reduce_multiplier = multiplier if reduce_multiplier is None else reduce_multiplier
    hw = (int(image_hw[0]), int(image_hw[1]))
    C_stem = stem_multiplier * C
    C_pp, C_p, C_curr = C_stem, C_stem, C
    hw_pp = hw_p = hw
    reduction_prev = False
    cells = []
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
        out = _half(hw_p) if reduction else hw_p
        cells.append(CellLayout(reduction, reduction_prev, C_pp, C_p, C_curr, hw_pp, hw_p, out))
        C_pp, C_p = C_p, (reduce_multiplier if reduction else multiplier) * C_curr
        hw_pp, hw_p = hw_p, out
        reduction_prev = reduction
    return NetworkLayout(
        tuple(cells),
        PartKey("stem", in_channels, C_stem, 1, *hw),
        PartKey("head", C_p, num_classes, 1, *hw_p),
    )


# --- what a config needs ----------------------------------------------------------------

#: image shape and classes of the named datasets, so a table builds without their files
#: (on the target device, which rarely holds the data set)
_KNOWN_DATA = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "fashion_mnist": ((1, 28, 28), 10),
    "fashionmnist": ((1, 28, 28), 10),
    "fashion_mnist_sample": ((1, 28, 28), 10),
}


def data_shape(data: DataConfig) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and classes of the training images: known for the named datasets,
    otherwise read from the data (``load_splits``)."""
    key = data.name.strip().lower().replace("-", "_")
    if key in _KNOWN_DATA:
        return _KNOWN_DATA[key]
    from nas.runtime import load_splits

    train, _ = load_splits(data, test=False)
    C, H, W = train.shape
    return (int(C), int(H), int(W)), int(train.num_classes)


def search_requirements(
    cfg: SearchConfig, shape: tuple[int, int, int], num_classes: int
) -> set[OpKey]:
    """Every (op, shape) the cost term of ``nas search`` looks up: all ops of the space at
    the supernet's per-edge shapes (``Supernet.edge_shapes``)."""
    from nas.search.supernet import Supernet

    space = cfg.space.build()
    net = Supernet(space, num_classes, cfg.model.init_channels, cfg.model.layers,
                   in_channels=shape[0], stem_multiplier=cfg.model.stem_multiplier, fused=False)
    return {OpKey(op, *s) for row in net.edge_shapes(shape[1:]) for s in row for op in space.ops}


def mo_requirements(
    cfg: MOConfig, shape: tuple[int, int, int], num_classes: int
) -> tuple[set[OpKey], set[PartKey]]:
    """What ``nas mo-search`` looks up: the trial networks (``budget`` width and depth)'s
    fixed parts and every op but ``none`` at every edge shape; ``darts`` trials with
    ``darts.cost_metric=latency`` also need every op at their supernet's edge shapes."""
    from nas.spaces import get_space

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


# --- measuring --------------------------------------------------------------------------


def build_table(
    ops: Iterable[OpKey],
    parts: Iterable[PartKey] = (),
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    timer: Callable[[nn.Module, tuple[int, ...], str], float] | None = None,
) -> LatencyTable:
    """Time every op and part (deploy form, eval mode, ``batch_size``) on ``device``:
    ``cpu``/``cuda`` run PyTorch, ``onnxruntime`` an ONNX Runtime CPU session.
    ``timer(module, input_shape, what) -> ms`` replaces the device's timer (benchmarks)."""
    import torch
    from tqdm.auto import tqdm

    from nas.cost_table import module_timer, op_module, part_module, timing_device

    if device not in DEVICES:
        raise ConfigError(f"--device: got {device!r}, expected one of {', '.join(DEVICES)}")
    timer = timer or module_timer(device, warmup, repeats)
    meta = {
        "device": device,
        **timing_device(device),
        "torch": torch.__version__,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "repeats": repeats,
        "form": "deploy, eval mode",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **(metadata or {}),
    }
    todo: list[OpKey | PartKey] = [*sorted(set(ops)), *sorted(set(parts))]
    op_ms: dict[OpKey, float] = {}
    part_ms: dict[PartKey, float] = {}
    torch.manual_seed(0)
    with torch.no_grad():
        quiet = not progress or os.environ.get("TQDM_DISABLE") == "1"  # nas -q
        for key in tqdm(todo, desc=f"latency table ({device})", unit="op",
                        disable=True if quiet else None, leave=False):
            if isinstance(key, OpKey):
                module, C_in = op_module(key.op, key.C, key.stride), key.C
            else:
                module, C_in = part_module(key.part, key.C_in, key.C_out), key.C_in
            ms = timer(module, (batch_size, C_in, key.H, key.W), key.describe())
            if isinstance(key, OpKey):
                op_ms[key] = ms
            else:
                part_ms[key] = ms
    return LatencyTable(meta, op_ms, part_ms)


# --- command line -----------------------------------------------------------------------

_DOC = ("time every candidate op at the shapes a search or mo-search config needs, on this "
        "machine; writes a latency table for cost.table= / latency.table=")


def add_latency_table_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``nas latency-table`` subcommand (its handler: :func:`cmd_latency_table`)."""
    p = subparsers.add_parser(
        "latency-table", help=_DOC, description=_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("example: nas latency-table quick --kind search --device cpu --out lut.json\n"
                "then, on any machine: nas search quick cost.metric=latency cost.weight=0.1 "
                "cost.table=lut.json\n"
                "options go before CONFIG or after the last key=value override"),
    )
    p.add_argument("config", help="search or mo-search config (file or shipped name)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    p.add_argument("--kind", choices=["auto", "search", "mo"], default="auto",
                   help="config kind (auto: by its keys; needed for a name shipped as both)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="cpu/cuda: PyTorch; onnxruntime: ONNX Runtime CPU session (default cpu)")
    p.add_argument("--out", default="lut.json", help="table file to write (default lut.json)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: the config's cost.batch_size / latency.batch_size)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per op (20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards per op (5)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch and ONNX Runtime; default: torch's)")
    p.set_defaults(func=cmd_latency_table)
    return p


def _is_top_level_unknown(exc: ConfigError) -> bool:
    text = str(exc)
    return text.startswith("unknown key '") and "." not in text.split("'")[1]


def load_any_config(config: str, overrides: list[str], kind: str = "auto"
                    ) -> tuple[str, Any, Path]:
    """``("search"|"mo", config, path)``: ``auto`` tries a search config, then an
    mo-search one, and asks for ``--kind`` when a shipped name is both."""
    from nas.cli import resolve_config
    from nas.config import load_config
    from nas.search.darts import SearchConfig
    from nas.search.trial import MOConfig

    classes: dict[str, type] = {"search": SearchConfig, "mo": MOConfig}
    if kind != "auto":
        path = resolve_config(config, kind)
        return kind, load_config(classes[kind], path, overrides), path
    if Path(config).is_file():
        paths = {k: Path(config) for k in classes}
    else:
        paths, errors = {}, []
        for k in classes:
            try:
                paths[k] = resolve_config(config, k)
            except ConfigError as exc:
                errors.append(exc)
        if not paths and str(errors[0]) == str(errors[-1]):  # a path, not a shipped name
            raise errors[0]
        if not paths:
            from nas.cli import shipped_configs

            raise ConfigError(f"config {config!r} not found; shipped search configs: "
                              f"{shipped_configs('search')}, mo-search configs: "
                              f"{shipped_configs('mo')}") from errors[0]
        if len(paths) > 1:
            raise ConfigError(f"{config!r} is both a shipped search and mo-search config: pass "
                              "--kind search or --kind mo")
    failures: list[ConfigError] = []
    for k, path in paths.items():
        try:
            return k, load_config(classes[k], path, overrides), path
        except ConfigError as exc:
            failures.append(exc)
    real = [e for e in failures if not _is_top_level_unknown(e)]
    if real:
        raise real[0]
    raise ConfigError(f"{config}: neither a search config ({failures[0]}) nor an mo-search "
                      f"config ({failures[-1]})")


def cmd_latency_table(args: argparse.Namespace) -> int:
    """Measure the table a config needs on this machine and write it to ``--out``."""
    import torch

    for name, low in (("batch", 1), ("repeats", 1), ("warmup", 0), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name} must be >= {low}, got {value}")
    kind, cfg, path = load_any_config(args.config, list(args.overrides), args.kind)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    if args.device == "onnxruntime":
        from nas.cost_table import require_onnxruntime

        require_onnxruntime()  # a one-line hint before any work
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'lut.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create its folder ({exc.strerror or exc})"
                          ) from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape, classes = data_shape(cfg.data)
    if kind == "search":
        ops, parts = search_requirements(cfg, shape, classes), set()
        batch = cfg.cost.batch_size if args.batch is None else args.batch
    else:
        ops, parts = mo_requirements(cfg, shape, classes)
        batch = cfg.latency.batch_size if args.batch is None else args.batch
    log.info("latency table for %s config %s: %d op/shape pairs and %d fixed parts on %s "
             "(batch %d, %d threads, %d repeats)", kind, path, len(ops), len(parts),
             args.device, batch, torch.get_num_threads(), args.repeats)
    meta = {"config": str(path), "config_kind": kind, "overrides": list(args.overrides),
            "image": list(shape), "num_classes": classes}
    table = build_table(ops, parts, args.device, batch, args.warmup, args.repeats, meta,
                        progress=not getattr(args, "quiet", False))
    table.save(out)
    total = sum(table.ops.values()) + sum(table.parts.values())
    log.info("wrote %s: %d entries, %d fixed parts (%.1f ms in all)", out, len(table.ops),
             len(table.parts), total)
    print(out)
    return 0
