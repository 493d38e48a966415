"""Collapse diagnostics of a DARTS search, logged each epoch (``metrics.csv``, TensorBoard):
how much of the derived cells parameter-free ops take, how decided α is, and how sharp the
validation loss is in α.

- :func:`param_free_share`: the share of a derived cell's edges on ops without parameters
  (skip, pools): the signature of collapse (plain DARTS's normal cells here: 50-58 %).
- :func:`edge_margins`: per edge, the best op's softmax weight minus the second's
  (``none`` excluded, as in the derivation): near 0, the derivation is a coin toss.
- :func:`hessian_eigenvalue`: the largest eigenvalue of ∇²_α L_val (R-DARTS, Zela et al.,
  ICLR 2020), by power iteration on Hessian-vector products taken as central differences of
  α gradients, which work through every custom autograd function of the supernet.
- :func:`eigenvalue_stop`: R-DARTS's early-stop rule on that eigenvalue's growth.
The α entropy per cell is :func:`nas.tensorboard.alpha_entropy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas import distributed
from nas.ops import is_parameter_free

__all__ = ["param_free_share", "edge_margins", "hessian_eigenvalue", "eigenvalue_stop"]


def param_free_share(cell: Sequence[tuple[str, int]]) -> float:
    """Share of a derived cell's ``(op, input)`` edges whose op has no parameters."""
    if not cell:
        return 0.0
    return sum(is_parameter_free(op) for op, _ in cell) / len(cell)


def edge_margins(weights: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
    """Per edge (row of ``weights`` = softmax(α)), the largest minus the second-largest weight
    among the ops other than ``none``; 1-op spaces give the top weight itself."""
    keep = [i for i, op in enumerate(ops) if op != "none"]
    w = weights.detach().float()[:, keep]
    if w.shape[1] == 1:
        return w[:, 0]
    top = w.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def hessian_eigenvalue(
    loss_fn: Callable[[], torch.Tensor], params: list[nn.Parameter], iters: int,
    batch_size: int = 1, radius: float = 1e-3, seed: int = 0,
) -> torch.Tensor:
    """The dominant eigenvalue of the Hessian of ``loss_fn()`` in ``params`` after ``iters``
    power iterations from a seeded random direction; a 0-d tensor (no host sync here).

    Each Hessian-vector product is ``(∇L(p + r·v) − ∇L(p − r·v)) / 2r`` for a unit ``v``
    (second-order accurate in ``r``); ``params`` are restored bit for bit. Under torchrun
    every gradient is averaged over the ranks first (weighted by ``batch_size``), so every
    rank iterates on the same direction.
    """
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen).to(p.device, p.dtype) for p in params]
    saved = [p.detach().clone() for p in params]

    def grad_at(sign: float, direction: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
            torch._foreach_add_(params, direction, alpha=sign * radius)
        grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        distributed.average_(grads, batch_size)
        return grads

    def normalized(vec: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(vec)))
        return torch._foreach_div(vec, norm.clamp_min(1e-20)), norm

    v, _ = normalized(v)
    eigenvalue = torch.zeros((), device=params[0].device)
    try:
        for _ in range(iters):
            g_pos, g_neg = grad_at(1.0, v), grad_at(-1.0, v)
            hv = torch._foreach_div(torch._foreach_sub(g_pos, g_neg), 2 * radius)
            # Rayleigh quotient vᵀHv of the unit v: the eigenvalue estimate, with its sign
            eigenvalue = sum((a * b).sum() for a, b in zip(v, hv))
            v, _ = normalized(hv)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)
    return eigenvalue


def eigenvalue_stop(eigenvalues: Sequence[float], window: int, threshold: float) -> bool:
    """R-DARTS's DARTS-ES rule after the last epoch ``i`` of ``eigenvalues`` (one per epoch):
    with ``λ̄(j)`` the mean of the ``window`` values ending at epoch ``j``, stop once
    ``λ̄(i - window) / λ̄(i) < threshold``, i.e. the curvature grew by more than
    ``1 / threshold`` over one window. Needs ``2 * window`` epochs; a non-positive ``λ̄(i)``
    (no sharp minimum yet) never stops."""
    if len(eigenvalues) < 2 * window:
        return False
    now = sum(eigenvalues[-window:]) / window
    before = sum(eigenvalues[-2 * window : -window]) / window
    return now > 0 and before < threshold * now
