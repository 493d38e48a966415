"""α heatmaps of a search (matplotlib, Agg; no global backend change)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas.run import atomic_savefig

__all__ = ["plot_alphas", "alpha_figure", "edge_labels"]


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
