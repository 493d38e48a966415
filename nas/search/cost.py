"""The cost-aware term of a search: per (cell, edge, op) cost from a lookup table of params
or measured latency, whose expectation under softmax(α) (:meth:`Supernet.expected_cost`) is
added to the architecture loss with weight λ (``cost.weight``)."""

from __future__ import annotations

import logging

import torch

from nas import distributed
from nas.cost.lookup import CostTable
from nas.search.config import CostConfig
from nas.search.supernet.model import Supernet

__all__ = ["BETA_WITH_COST", "cost_tensor"]

#: measured in experiments/fashion_mnist_cpu (2026-12-07): with β-DARTS's ramped term in the
#: same Adam step, the cost term chose the costliest ops (experiments/beta_cost_adam.py)
BETA_WITH_COST = (
    "cost-aware search with β-DARTS (stabilize.beta=%g): β's term dominates every α gradient "
    "and Adam's per-element normalization then no longer keeps the cost term's direction "
    "(experiments/beta_cost_adam.py); set stabilize.beta=0 for a cost-aware search")

log = logging.getLogger("nas")


def cost_tensor(cfg: CostConfig, model: Supernet, image_size: tuple[int, int],
                device: torch.device) -> torch.Tensor | None:
    """The (cells, edges, ops) cost of every op on every edge of ``model``, on ``device``;
    None when the term is off (``cfg.weight == 0``). Under torchrun every rank gets rank 0's
    (latencies timed on each rank would differ)."""
    if cfg.weight <= 0:
        return None
    table = CostTable(cfg.metric, cfg.device or device, batch_size=cfg.batch_size,
                      table=cfg.table)
    cost = table.tensor(model.space.ops, model.edge_shapes(image_size)).to(device)
    log.info("cost-aware search: λ=%g on %s (%s, %s)", cfg.weight, table.metric, table.unit,
             table.source)
    distributed.broadcast_([cost])
    return cost
