"""DARTS-style genotypes: a frozen dataclass, a safe string parser and files (plots:
:mod:`nas.plots`).

A genotype describes two cells (``normal`` and ``reduce``). Each cell has ``steps``
intermediate nodes; node ``i`` (0-based) takes two inputs, each an ``(op, input)`` edge where
input ``0`` and ``1`` are the outputs of the two previous cells and input ``j >= 2`` is
intermediate node ``j - 2``, so node ``i`` may read inputs ``0..i+1``. The cell output
concatenates the nodes listed in ``*_concat`` (indices ``2..steps+1``).

The DARTS string form (``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
...)``) is read by :meth:`Genotype.parse`, which walks a whitelist of syntax nodes of the parsed
text and never evaluates it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import GenotypeError
from nas.run import atomic_write_text

__all__ = [
    "Genotype",
    "check_cell",
    "load_genotype",
    "save_genotype",
    "CELLS",
]

Edge = tuple[str, int]
CELLS = ("normal", "reduce")
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_MAX_TEXT = 1_000_000  # characters accepted by Genotype.parse
_MAX_RANGE = 10_000  # longest range(...) a string may spell


def _short(text: str, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_int(value: Any) -> int | None:
    """``value`` as an int (numpy ints included), or None for bools and non-integers."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _is_collection(value: Any) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))


def _norm_edges(field: str, value: Any) -> tuple[Edge, ...]:
    if not _is_collection(value):
        raise GenotypeError(f"{field}: expected (op, input) pairs, got {type(value).__name__}")
    edges = []
    for j, edge in enumerate(value):
        pair = tuple(edge) if _is_collection(edge) else None
        if pair is None or len(pair) != 2:
            raise GenotypeError(f"{field}[{j}]: expected (op, input), got {_short(repr(edge))}")
        op, inp = pair
        if not isinstance(op, str):
            raise GenotypeError(f"{field}[{j}]: op must be a string, got {_short(repr(op))}")
        index = _as_int(inp)
        if index is None:
            raise GenotypeError(f"{field}[{j}]: input must be an int, got {_short(repr(inp))}")
        edges.append((op, index))
    return tuple(edges)


def _norm_concat(field: str, value: Any) -> tuple[int, ...]:
    if not _is_collection(value):
        raise GenotypeError(f"{field}: expected a list of node indices, got {type(value).__name__}")
    out = []
    for k, item in enumerate(value):
        index = _as_int(item)
        if index is None:
            raise GenotypeError(f"{field}[{k}]: expected an int, got {_short(repr(item))}")
        out.append(index)
    return tuple(out)


def _format_concat(concat: tuple[int, ...]) -> str:
    if concat and concat == tuple(range(concat[0], concat[0] + len(concat))):
        return f"range({concat[0]}, {concat[-1] + 1})"
    return repr(list(concat))


def check_cell(
    field: str,
    edges: tuple[Edge, ...],
    concat: tuple[int, ...],
    steps: int | None,
    known: frozenset[str] | None,
) -> None:
    """Raise GenotypeError on the first inconsistency of one cell (``known=None``: any op)."""
    n = len(edges)
    if n == 0 or n % 2:
        raise GenotypeError(f"{field}: {n} edges, expected a positive even number (2 per node)")
    if steps is not None and n != 2 * steps:
        raise GenotypeError(f"{field}: {n} edges, expected {2 * steps} for {steps} steps")
    for j, (op, inp) in enumerate(edges):
        if known is not None and op not in known:
            raise GenotypeError(
                f"{field}[{j}]: unknown op {op!r} (known: {', '.join(sorted(known))})"
            )
        node = j // 2
        if not 0 <= inp <= node + 1:
            raise GenotypeError(
                f"{field}[{j}]: input {inp} out of range for node {node} (allowed 0..{node + 1})"
            )
    last = n // 2 + 1
    cfield = f"{field}_concat"
    if not concat:
        raise GenotypeError(f"{cfield}: empty, expected node indices in 2..{last}")
    seen: set[int] = set()
    for k, c in enumerate(concat):
        if not 2 <= c <= last:
            raise GenotypeError(f"{cfield}[{k}]: node {c} out of range (allowed 2..{last})")
        if c in seen:
            raise GenotypeError(f"{cfield}[{k}]: duplicate node {c}")
        seen.add(c)


@dataclass(frozen=True, repr=False)
class Genotype:
    """Two DARTS cells: ``(op, input)`` edges, two per node, and the concatenated nodes.

    Lists, tuples and ranges are accepted and stored as tuples, so genotypes are hashable and
    compare by value. ``str(g)`` is the DARTS string form, read back by :meth:`parse`.

    Raises:
        GenotypeError: a field has the wrong shape or type (the message names field and index).
    """

    normal: Sequence[Edge]
    normal_concat: Sequence[int]
    reduce: Sequence[Edge]
    reduce_concat: Sequence[int]

    def __post_init__(self) -> None:
        for name in CELLS:
            object.__setattr__(self, name, _norm_edges(name, getattr(self, name)))
            cname = f"{name}_concat"
            object.__setattr__(self, cname, _norm_concat(cname, getattr(self, cname)))

    @property
    def steps(self) -> int:
        """Number of intermediate nodes of the normal cell (two edges per node)."""
        return len(self.normal) // 2

    @property
    def archid(self) -> str:
        """Short stable hash (12 hex digits of sha256) of the canonical string form."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:12]

    def __str__(self) -> str:
        return (
            f"Genotype(normal={list(self.normal)!r}, "
            f"normal_concat={_format_concat(tuple(self.normal_concat))}, "
            f"reduce={list(self.reduce)!r}, "
            f"reduce_concat={_format_concat(tuple(self.reduce_concat))})"
        )

    __repr__ = __str__

    def cell(self, name: str) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
        """``(edges, concat)`` of cell ``"normal"`` or ``"reduce"``."""
        if name not in CELLS:
            raise GenotypeError(f"unknown cell {name!r}; expected one of {', '.join(CELLS)}")
        return tuple(getattr(self, name)), tuple(getattr(self, f"{name}_concat"))

    def ops_used(self) -> set[str]:
        """Names of the operations appearing in either cell."""
        return {op for name in CELLS for op, _ in getattr(self, name)}

    def replace_ops(self, mapping: Mapping[str, str]) -> Genotype:
        """A copy with ops renamed by ``mapping`` (others kept), e.g. to transplant operators."""
        for old, new in mapping.items():
            if not isinstance(new, str):
                raise GenotypeError(f"replace_ops: replacement for {old!r} must be a string")

        def swap(edges: Sequence[Edge]) -> list[Edge]:
            return [(mapping.get(op, op), inp) for op, inp in edges]

        return Genotype(
            swap(self.normal), self.normal_concat, swap(self.reduce), self.reduce_concat
        )

    def validate(self, ops: Iterable[str] | None = None, steps: int | None = None) -> Genotype:
        """Check both cells; returns ``self`` so calls chain.

        Args:
            ops: allowed op names; default the registry ``nas.ops.OPS``.
            steps: required number of intermediate nodes per cell; default any.

        Raises:
            GenotypeError: one line naming the field and position of the first problem.
        """
        if steps is not None and (_as_int(steps) is None or steps < 1):
            raise GenotypeError(f"steps must be a positive int, got {steps!r}")
        if ops is None:
            from nas.ops import OPS  # lazy: keeps nas.genotype free of torch imports

            ops = OPS
        known = frozenset([ops] if isinstance(ops, str) else ops)
        for name in CELLS:
            edges, concat = self.cell(name)
            check_cell(name, edges, concat, steps, known)
        return self

    def to_dict(self) -> dict[str, list]:
        """Plain lists and ints, ready for YAML or JSON."""
        return {
            "normal": [[op, inp] for op, inp in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, inp] for op, inp in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Inverse of :meth:`to_dict`; missing or unknown keys are a GenotypeError."""
        if not isinstance(data, Mapping):
            raise GenotypeError(f"expected a mapping of genotype fields, got {type(data).__name__}")
        unknown = [k for k in data if k not in _FIELDS]
        if unknown:
            raise GenotypeError(
                f"unknown genotype key {_short(repr(unknown[0]))}; expected {', '.join(_FIELDS)}"
            )
        for key in _FIELDS:
            if key not in data:
                raise GenotypeError(f"missing genotype key {key!r}")
        return cls(**{key: data[key] for key in _FIELDS})

    @classmethod
    def parse(cls, text: str) -> Genotype:
        """Read the DARTS string form without evaluating it.

        Accepts ``Genotype(...)`` with keyword or positional fields, an optional leading
        ``NAME = ``, a ``{'normal': ..., ...}`` dict, edges as tuples or lists and concat as a
        list or ``range(a, b)``. Only literals (str, int), lists, tuples and ``range`` with int
        arguments are allowed; anything else is reported, never run.

        Raises:
            GenotypeError: the text is not a genotype (the message names what was found).
        """
        if not isinstance(text, str):
            raise GenotypeError(f"expected a genotype string, got {type(text).__name__}")
        if len(text) > _MAX_TEXT:
            raise GenotypeError(f"genotype string too long ({len(text)} characters)")
        try:
            with warnings.catch_warnings():  # e.g. "invalid escape sequence": one error, no noise
                warnings.simplefilter("ignore")
                module = ast.parse(text.strip(), mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            detail = e.msg if isinstance(e, SyntaxError) else type(e).__name__
            raise GenotypeError(f"cannot parse genotype string: {detail}") from None
        return cls(**_fields_from_ast(module))


def _fields_from_ast(module: ast.Module) -> dict[str, Any]:
    if len(module.body) != 1:
        raise GenotypeError(f"expected one Genotype(...) expression, got {len(module.body)}")
    stmt = module.body[0]
    if isinstance(stmt, ast.Assign) and [type(t) for t in stmt.targets] == [ast.Name]:
        node = stmt.value
    elif isinstance(stmt, ast.Expr):
        node = stmt.value
    else:
        raise GenotypeError(f"unexpected statement {_short(ast.unparse(stmt))}")

    found: dict[str, ast.expr] = {}
    if isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                shown = "**" + ast.unparse(value) if key is None else ast.unparse(key)
                raise GenotypeError(f"unexpected key {_short(shown)} in genotype dict")
            found[key.value] = value
    elif isinstance(node, ast.Call) and _called(node) == "Genotype":
        if len(node.args) > len(_FIELDS):
            raise GenotypeError(f"Genotype takes {len(_FIELDS)} fields, got {len(node.args)}")
        for name, arg in zip(_FIELDS, node.args):
            if isinstance(arg, ast.Starred):
                raise GenotypeError(f"unexpected expression {_short(ast.unparse(arg))}")
            found[name] = arg
        for kw in node.keywords:
            if kw.arg is None:
                raise GenotypeError(f"unexpected expression **{_short(ast.unparse(kw.value))}")
            if kw.arg in found:
                raise GenotypeError(f"field {kw.arg} given twice")
            found[kw.arg] = kw.value
    else:
        raise GenotypeError(
            f"unexpected expression {_short(ast.unparse(node))}, expected Genotype(...)"
        )
    unknown = [k for k in found if k not in _FIELDS]
    if unknown:
        raise GenotypeError(f"unknown genotype field {unknown[0]!r}; expected {', '.join(_FIELDS)}")
    for name in _FIELDS:
        if name not in found:
            raise GenotypeError(f"missing genotype field {name!r}")
    return {name: _literal(found[name], name) for name in _FIELDS}


def _called(node: ast.Call) -> str | None:
    """Name called by ``name(...)``; None for attributes, lambdas and other callees."""
    return node.func.id if isinstance(node.func, ast.Name) else None


def _literal(node: ast.expr, where: str) -> Any:
    """Value of a whitelisted literal node: str/int constants, lists, tuples, ``range``."""
    if isinstance(node, ast.Constant) and type(node.value) in (str, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, where)
        if type(value) is int:
            return -value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item, f"{where}[{i}]") for i, item in enumerate(node.elts)]
    if isinstance(node, ast.Call) and _called(node) == "range" and not node.keywords:
        bounds = [_literal(arg, where) for arg in node.args]
        if 1 <= len(bounds) <= 3 and all(type(b) is int for b in bounds) and 0 not in bounds[2:]:
            r = range(*bounds)
            if len(r) > _MAX_RANGE:
                raise GenotypeError(f"range too long in field {where}: {len(r)} items")
            return list(r)
    raise GenotypeError(f"unexpected expression {_short(ast.unparse(node))} in field {where}")


def _from_data(data: Any) -> Genotype:
    if isinstance(data, Mapping) and "genotype" in data:
        data = data["genotype"]
    if isinstance(data, Genotype):
        return data
    if isinstance(data, str):
        return Genotype.parse(data)
    if isinstance(data, Mapping):
        return Genotype.from_dict(data)
    got = "an empty file" if data is None else type(data).__name__
    raise GenotypeError(f"expected genotype fields or a Genotype(...) string, got {got}")


def load_genotype(path: str | os.PathLike[str]) -> Genotype:
    """Read a genotype from ``.yaml``/``.yml``/``.json`` (a mapping, optionally under a
    top-level ``genotype:`` key) or any other file holding the DARTS string form.

    Raises:
        GenotypeError: the file is missing, unreadable or malformed (the message names it).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise GenotypeError(f"{p}: cannot read genotype file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise GenotypeError(f"{p}: genotype file is not UTF-8 text") from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data: Any = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = text
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if suffix == ".json" else "YAML"
        raise GenotypeError(f"{p}: malformed {kind}: {_short(str(e), 160)}") from None
    try:
        return _from_data(data)
    except GenotypeError as e:
        raise GenotypeError(f"{p}: {e}") from None


def save_genotype(genotype: Genotype, path: str | os.PathLike[str]) -> Path:
    """Write ``genotype`` atomically as YAML (``.yaml``/``.yml``), JSON (``.json``) or the
    DARTS string (``.txt``); returns the path."""
    p = Path(path)
    suffix = p.suffix.lower()
    data = genotype.to_dict()
    if suffix in (".yaml", ".yml"):
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        text = f"# archid: {genotype.archid}\n{body}"
    elif suffix == ".json":
        rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in data.items())
        text = "{\n" + rows + "\n}\n"
    elif suffix == ".txt":
        text = f"{genotype}\n"
    else:
        raise GenotypeError(f"{p}: unknown genotype file type {suffix!r}; use .yaml, .json or .txt")
    atomic_write_text(p, text)
    return p
