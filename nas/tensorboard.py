"""TensorBoard event files next to ``metrics.csv``, so ``tensorboard --logdir runs`` shows
every run: the metrics of each epoch as scalars, a search's α entropy and α heatmap, a
multi-objective run's Pareto scatter.

The files go straight into the run folder (one TensorBoard "run" per run folder). Ray Tune
writes its own event files into its trial folders, which sit elsewhere, so the two never
mix. Resuming a run purges the events written after its checkpoint (``purge_step``), so a
resumed curve has no duplicate tail.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TensorBoardLog", "alpha_entropy"]

log = logging.getLogger("nas")
_warned = False


def alpha_entropy(weights: Sequence[Sequence[float]]) -> float:
    """Mean entropy (nats) of the op distributions of a cell's edges: ln(#ops) at the
    uniform start, 0 once every edge has picked one op."""
    p = np.clip(np.asarray(weights, dtype=np.float64), 1e-12, 1.0)
    return float(np.mean(-(p * np.log(p)).sum(axis=-1)))


class TensorBoardLog:
    """A lazily opened ``SummaryWriter`` on ``folder``; a no-op when disabled or when the
    ``tensorboard`` package is missing (one warning, the run goes on)."""

    def __init__(self, folder: str | Path, enabled: bool = True,
                 purge_step: int | None = None) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.purge_step = purge_step
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        global _warned
        if self._writer is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is a dependency; a broken install only
                if not _warned:
                    _warned = True
                    log.warning("TensorBoard logging off: %s", err)
                self.enabled = False
                return None
            self._writer = SummaryWriter(str(self.folder), purge_step=self.purge_step)
        return self._writer

    def scalars(self, row: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Every finite number of a metrics row (bools and strings skipped)."""
        if self.writer is None:
            return
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key == "epoch" or not math.isfinite(value):
                continue
            self.writer.add_scalar(f"{prefix}{key}", value, step)
        self.writer.flush()

    def alphas(self, ops: Sequence[str], record: Mapping[str, Any], step: int) -> None:
        """α entropy per cell type and the softmax(α) heatmap of this epoch."""
        if self.writer is None:
            return
        from nas.plots import alpha_figure

        for cell in ("normal", "reduce"):
            if record.get(cell) is not None:
                self.writer.add_scalar(f"alpha_entropy/{cell}", alpha_entropy(record[cell]),
                                       step)
        self.writer.add_figure("alphas", alpha_figure(ops, record), step)
        self.writer.flush()

    def figure(self, tag: str, fig: Any, step: int = 0) -> None:
        """A matplotlib figure as an image (e.g. a Pareto scatter)."""
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step)
            self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
