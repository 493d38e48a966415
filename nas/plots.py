"""Every plot of the project: cell diagrams of a genotype and α heatmaps of a search
(matplotlib, Agg; no global backend change). matplotlib and networkx load on first use, so
importing this module (``nas report`` does) stays light."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import GenotypeError
from nas.genotype import CELLS, Edge, Genotype, check_cell
from nas.run import atomic_savefig

if TYPE_CHECKING:
    import networkx as nx
    from matplotlib.figure import Figure

_PLOT_FORMATS = ("png", "svg", "pdf")

__all__ = ["plot_alphas", "alpha_figure", "edge_labels", "cell_graph", "plot_cell",
           "plot_genotype"]


def edge_labels(num_edges: int) -> list[str]:
    """Row names for a cell's edges in DARTS order: node i takes inputs c_{k-2}, c_{k-1},
    then nodes 0..i-1."""
    labels: list[str] = []
    node = 0
    while len(labels) < num_edges:
        inputs = ["c_{k-2}", "c_{k-1}", *(f"node {j}" for j in range(node))]
        labels += [f"node {node} ← {name}" for name in inputs]
        node += 1
    if len(labels) != num_edges:  # not a DARTS cell's edge count: plain edge numbers
        return [f"edge {i}" for i in range(num_edges)]
    return labels


def plot_alphas(ops: tuple[str, ...] | list[str], record: dict[str, Any], path: str | Path) -> Path:
    """Heatmap of softmax(α) per edge (rows) and op (columns), normal and reduce side by side."""
    return atomic_savefig(alpha_figure(ops, record), path, dpi=110)


def alpha_figure(ops: Sequence[str], record: Mapping[str, Any]) -> Figure:
    """The figure :func:`plot_alphas` saves (also logged to TensorBoard every epoch)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = np.asarray(record["normal"]).shape[0]
    fig = Figure(figsize=(3.5 + 0.5 * len(ops) * 2, 2.5 + 0.3 * rows), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, cell in zip(axes, ("normal", "reduce")):
        weights = np.asarray(record[cell])
        im = ax.imshow(weights, aspect="auto", cmap="viridis")  # auto range: early α are close
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(weights.shape[0]), edge_labels(weights.shape[0]), fontsize=8)
        epoch = record.get("epoch")
        ax.set_title(f"softmax(α), {cell} cell" + ("" if epoch is None else f", epoch {epoch + 1}"))
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


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
    check_cell(cell, edges, concat, None, None)
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
    check_cell(cell, edges, concat, None, None)
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
