"""Pareto fronts over (accuracy up, costs down), shared by comparisons and MO searches."""

from __future__ import annotations

import numpy as np

__all__ = ["pareto_mask"]


def pareto_mask(accuracy: np.ndarray, *costs: np.ndarray) -> np.ndarray:
    """True for points no other point dominates (accuracy ≥, every cost ≤, one strictly)."""
    acc = np.asarray(accuracy, dtype=float)
    cost = np.stack([np.asarray(c, dtype=float) for c in costs], axis=1)
    n = len(acc)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = (acc >= acc[i]) & np.all(cost <= cost[i], axis=1)
        better = (acc > acc[i]) | np.any(cost < cost[i], axis=1)
        mask[i] = not np.any(no_worse & better)
    return mask
