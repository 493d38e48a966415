"""α heatmaps of a search (matplotlib, Agg; no global backend change)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_alphas"]


def plot_alphas(ops: tuple[str, ...] | list[str], record: dict[str, Any], path: str | Path) -> Path:
    """Heatmap of softmax(α) per edge (rows) and op (columns), normal and reduce side by side."""
    fig = Figure(figsize=(2 + 0.55 * len(ops) * 2, 6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, cell in zip(axes, ("normal", "reduce")):
        weights = np.asarray(record[cell])
        im = ax.imshow(weights, aspect="auto", cmap="viridis")  # auto range: early α are close
        ax.set_xticks(range(len(ops)), ops, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(weights.shape[0]), [f"e{i}" for i in range(weights.shape[0])])
        epoch = record.get("epoch")
        ax.set_title(f"softmax(α), {cell} cell" + ("" if epoch is None else f", epoch {epoch + 1}"))
        fig.colorbar(im, ax=ax, shrink=0.8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
