"""DARTS-style genotypes: a frozen dataclass, a safe string parser, files, graphs and plots.

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
import math
import operator
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nas.errors import GenotypeError
from nas.run import atomic_savefig, atomic_write_text

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "Genotype",
    "load_genotype",
    "save_genotype",
    "cell_graph",
    "plot_cell",
    "plot_genotype",
    "CELLS",
]

Edge = tuple[str, int]
CELLS = ("normal", "reduce")
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_MAX_TEXT = 1_000_000  # characters accepted by Genotype.parse
_MAX_RANGE = 10_000  # longest range(...) a string may spell
_PLOT_FORMATS = ("png", "svg", "pdf")


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


def _check_cell(
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
            _check_cell(name, edges, concat, steps, known)
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


_IN2, _IN1, _OUT = "c_{k-2}", "c_{k-1}", "c_{k}"
_DX = 3.0  # plot column spacing


def _node_name(inp: int) -> str:
    return _IN2 if inp == 0 else _IN1 if inp == 1 else str(inp - 2)


def cell_graph(genotype: Genotype, cell: str = "normal") -> nx.DiGraph:
    """The cell as a DAG: nodes ``c_{k-2}``, ``c_{k-1}``, ``"0".."steps-1"``, ``c_{k}``.

    Op edges carry ``kind="op"``, ``op`` (and ``label``) with the op name; two edges between
    the same nodes merge into one with ``ops`` listing both and ``op`` joined by `` | ``.
    Concat edges to ``c_{k}`` carry ``kind="concat"``. Node attribute ``kind`` is ``input``,
    ``intermediate`` or ``output``.
    """
    import networkx as nx

    edges, concat = genotype.cell(cell)
    _check_cell(cell, edges, concat, None, None)
    steps = len(edges) // 2
    graph = nx.DiGraph(cell=cell, steps=steps)
    graph.add_node(_IN2, kind="input")
    graph.add_node(_IN1, kind="input")
    for i in range(steps):
        graph.add_node(str(i), kind="intermediate", index=i)
    graph.add_node(_OUT, kind="output")
    for j, (op, inp) in enumerate(edges):
        u, v = _node_name(inp), str(j // 2)
        if graph.has_edge(u, v):
            data = graph.edges[u, v]
            data["ops"] += (op,)
            data["positions"] += (j,)
            data["op"] = data["label"] = " | ".join(data["ops"])
        else:
            graph.add_edge(u, v, kind="op", op=op, label=op, ops=(op,), positions=(j,))
    for c in concat:
        graph.add_edge(str(c - 2), _OUT, kind="concat", label="")
    return graph


Point = tuple[float, float]
_RADS = (0.0, -0.15, 0.15, -0.3, 0.3, -0.45, 0.45)  # arc3 curvatures tried per edge


def _layout(edges: tuple[Edge, ...], steps: int) -> dict[str, Point]:
    """Left-to-right ranks: inputs, intermediate nodes by longest path (in index order), output."""
    rank: dict[int, int] = {}
    for i in range(steps):
        srcs = [inp for _, inp in edges[2 * i : 2 * i + 2]]
        rank[i] = 1 + max(rank[s - 2] if s >= 2 else 0 for s in srcs)
    columns: dict[int, list[int]] = {}
    for i in range(steps):
        columns.setdefault(rank[i], []).append(i)
    dy = 1.4
    pos = {_IN2: (0.0, 0.6 * dy), _IN1: (0.0, -0.6 * dy)}
    for col, nodes in columns.items():
        for k, i in enumerate(nodes):
            pos[str(i)] = (col * _DX, ((len(nodes) - 1) / 2 - k) * dy)
    pos[_OUT] = ((max(rank.values()) + 1) * _DX, 0.0)
    return pos


def _arc(a: Point, b: Point, rad: float, t: float) -> Point:
    """Point ``t`` of matplotlib's ``arc3`` curve from ``a`` to ``b`` (equal-aspect axes)."""
    (x1, y1), (x2, y2) = a, b
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    u = 1 - t
    return u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2


def _route(a: Point, b: Point, nodes: list[Point], drawn: list[list[Point]]) -> float:
    """Curvature for edge ``a -> b`` that clears other nodes and overlaps drawn edges least."""

    def cost(rad: float) -> float:
        pts = [_arc(a, b, rad, k / 16) for k in range(1, 16)]
        hits = any(abs(x - px) < 0.45 and abs(y - py) < 0.32 for x, y in pts for px, py in nodes)
        shared = max(
            (sum(any(math.dist(p, q) < 0.12 for q in other) for p in pts) / len(pts))
            for other in drawn or [[]]
        )
        return 10.0 * hits + 2.0 * max(0.0, shared - 0.2) + 0.5 * abs(rad)

    rad = min(_RADS, key=cost)
    drawn.append([_arc(a, b, rad, k / 16) for k in range(1, 16)])
    return rad


def _label_spot(a: Point, b: Point, rad: float, width: float, taken: list[Point]) -> Point:
    """Where on the curve a label of ``width`` overlaps no earlier label or node."""
    for t in (0.5, 0.6, 0.4, 0.7, 0.3, 0.78, 0.22, 0.55, 0.45, 0.65, 0.35):
        x, y = _arc(a, b, rad, t)
        if all(abs(x - tx) > (width + tw) / 2 or abs(y - ty) > 0.3 for (tx, ty), tw in taken):
            break
    else:
        x, y = _arc(a, b, rad, 0.5)
    taken.append(((x, y), width))
    return x, y


def plot_cell(genotype: Genotype, cell: str, path: str | os.PathLike[str]) -> Path:
    """Draw one cell left to right (inputs, intermediate nodes, output) with op-labelled edges.

    The format (png, svg or pdf) follows the suffix of ``path``; pyplot and the global
    matplotlib backend are left untouched. Returns the path.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in _PLOT_FORMATS:
        raise GenotypeError(f"{p}: unknown plot format {fmt!r}; use {', '.join(_PLOT_FORMATS)}")
    edges, concat = genotype.cell(cell)
    _check_cell(cell, edges, concat, None, None)
    pos = _layout(edges, len(edges) // 2)
    palette = colormaps["tab10"]
    color = {op: palette(k % 10) for k, op in enumerate(sorted(genotype.ops_used()))}

    xs = [x for x, _ in pos.values()]
    ymax = max(abs(y) for _, y in pos.values()) + 1.2
    fig = Figure(figsize=(1.0 + 0.75 * (max(xs) + 1.6), 0.5 + 0.75 * 2 * ymax))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-ymax, ymax)
    ax.set_aspect("equal")  # keeps _arc (data units) on the drawn arc3 curves (display units)
    ax.axis("off")
    ax.set_title(f"{cell} cell  ({genotype.archid})", fontsize=10)

    links = [(_node_name(inp), str(j // 2), op) for j, (op, inp) in enumerate(edges)]
    links += [(str(c - 2), _OUT, None) for c in concat]
    drawn: list[list[Point]] = []
    taken: list[tuple[Point, float]] = [(xy, 0.7) for xy in pos.values()]
    center = {"ha": "center", "va": "center"}
    for u, v, op in links:
        a, b = pos[u], pos[v]
        rad = _route(a, b, [xy for n, xy in pos.items() if n not in (u, v)], drawn)
        style = {"arrowstyle": "-|>", "shrinkA": 15, "shrinkB": 15, "lw": 1.2}
        style.update(color=color[op] if op else "0.6", connectionstyle=f"arc3,rad={rad}")
        ax.annotate("", xy=b, xytext=a, arrowprops=style)
        if op:
            x, y = _label_spot(a, b, rad, 0.075 * len(op) + 0.1, taken)
            box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
            ax.text(x, y, op, fontsize=7, color=color[op], zorder=4, bbox=box, **center)
    fills = {"input": "#c1e5c0", "intermediate": "#bcdcf0", "output": "#efe5a8"}
    for name, (x, y) in pos.items():
        kind = "input" if name in (_IN2, _IN1) else "output" if name == _OUT else "intermediate"
        label = f"${name}$" if kind != "intermediate" else name
        box = {"boxstyle": "round,pad=0.4", "fc": fills[kind], "ec": "0.3"}
        ax.text(x, y, label, fontsize=10, zorder=5, bbox=box, **center)
    metadata = {"Date": None} if fmt == "svg" else None
    return atomic_savefig(fig, p, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)


def plot_genotype(
    genotype: Genotype,
    out_dir: str | os.PathLike[str],
    stem: str = "genotype",
    fmt: str = "png",
) -> list[Path]:
    """Plot both cells to ``out_dir/<stem>_normal.<fmt>`` and ``..._reduce.<fmt>``."""
    if fmt not in _PLOT_FORMATS:
        raise GenotypeError(f"unknown plot format {fmt!r}; use {', '.join(_PLOT_FORMATS)}")
    out = Path(out_dir)
    return [plot_cell(genotype, cell, out / f"{stem}_{cell}.{fmt}") for cell in CELLS]
