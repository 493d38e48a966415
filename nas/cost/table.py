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

import dataclasses
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from nas.errors import ConfigError
from nas.genotype import Genotype
from nas.layout import NetworkLayout, Shape, cell_layout
from nas.run import atomic_write_text

__all__ = [
    "FORMAT", "VERSION", "DEVICES", "OpKey", "PartKey", "LatencyTable", "load_table",
    "TableLayout", "network_layout",
]

log = logging.getLogger("nas")

FORMAT = "nas-latency-table"
VERSION = 1
DEVICES = ("cpu", "cuda", "onnxruntime")

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


_PARTS = ("stem", "relu_conv_bn", "factorized_reduce", "head")  # nas.cost.lookup.part_module


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

    def network_ms(self, layout: TableLayout, genotype: Genotype) -> float:
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


@dataclasses.dataclass(frozen=True)
class TableLayout:
    """A network's :class:`~nas.layout.NetworkLayout` with what its fixed parts need (input
    channels, classes): every key a table holds for it."""

    net: NetworkLayout
    in_channels: int
    num_classes: int

    def edge_shapes(self, steps: int) -> list[list[Shape]]:
        """Per cell, per supernet edge: (C, stride, H, W), as ``Supernet.edge_shapes``."""
        return self.net.edge_shapes(steps)

    def parts(self) -> list[PartKey]:
        """Stem, both preprocessing layers of every cell, head."""
        parts = [PartKey("stem", self.in_channels, self.net.C_stem, 1, *self.net.image_hw)]
        for c in self.net.cells:
            if c.reduction_prev:
                parts.append(PartKey("factorized_reduce", c.C_prev_prev, c.C, 2, *c.s0))
            else:
                parts.append(PartKey("relu_conv_bn", c.C_prev_prev, c.C, 1, *c.s0))
            parts.append(PartKey("relu_conv_bn", c.C_prev, c.C, 1, *c.s1))
        parts.append(PartKey("head", self.net.C_out, self.num_classes, 1, *self.net.out_hw))
        return parts

    def genotype_keys(self, genotype: Genotype) -> tuple[list[OpKey], list[PartKey]]:
        """One op key per edge of every cell (repeats kept), and the fixed parts."""
        ops = [
            OpKey(op, *cell.edge_shape(index))
            for cell in self.net.cells
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
) -> TableLayout:
    """:func:`nas.layout.cell_layout` of ``NetworkCIFAR`` (and ``Supernet``) at ``image_hw``,
    with its stem and head."""
    net = cell_layout(C, layers, multiplier, reduce_multiplier, stem_multiplier, image_hw)
    return TableLayout(net, in_channels, num_classes)


