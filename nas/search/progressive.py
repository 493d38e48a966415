"""P-DARTS's progressive search rules (Chen et al., ICCV 2019), for
:func:`nas.search.darts.run_search` to run stage by stage (``progressive.*``).

The gap P-DARTS closes: a shallow supernet searched for a deep network. Each stage is a
deeper supernet, affordable because every edge keeps only its strongest ops of the stage
before; dropout after the skips keeps the parameter-free path from winning early, while the
convolutions are still untrained.

- :func:`prune_ops`: after a stage, per edge the ``keep`` kept ops of largest mixing weight.
- :func:`skip_dropout_rate`: the stage's skip dropout at an epoch (the official schedule).
"""

from __future__ import annotations

import math

import torch

__all__ = ["prune_ops", "skip_dropout_rate", "stage_dir"]

#: the official code's exponential decay of the skip dropout after the warm-up
DECAY = 0.2


def stage_dir(stage: int) -> str:
    """A stage's run folder inside the search's: ``stage0``, ``stage1``, ..."""
    return f"stage{stage}"


def prune_ops(weights: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """The new mask of kept ops: per edge (row) of ``weights``, the ``keep`` ops of largest
    weight among those ``mask`` still keeps."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    w = weights.detach().float().cpu().masked_fill(~mask.cpu(), float("-inf"))
    top = w.topk(min(keep, w.shape[1]), dim=1, sorted=False).indices
    out = torch.zeros_like(mask, device="cpu").scatter_(1, top, True)
    return out & mask.cpu()


def skip_dropout_rate(p: float, epoch: int, epochs: int, warmup: int) -> float:
    """P-DARTS's skip dropout in epoch ``epoch`` of a stage: ``p·(E − e − 1)/E`` during the
    α warm-up, ``p·exp(−0.2·(e − W))`` once α moves."""
    if epoch < warmup:
        return p * (epochs - epoch - 1) / epochs
    return p * math.exp(-(epoch - warmup) * DECAY)
