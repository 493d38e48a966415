"""The DARTS architecture step: Adam on α against the validation loss, first order or
with the unrolled second-order gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from nas import distributed
from nas.search.config import ArchConfig
from nas.search.supernet.model import Supernet

__all__ = ["Architect"]


def _grads_or_zeros(grads, params):
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _sgd_groups(
    w_optimizer: torch.optim.Optimizer | None, weights, eta: float | None
) -> list[dict[str, Any]]:
    """Per weight, the settings of its own SGD param group (``eta``, if given, as the lr):
    the unrolled step must be the step the optimizer would take."""
    if w_optimizer is None:  # a plain gradient step with lr eta
        return [{"lr": eta or 0.0}] * len(weights)
    group_of = {id(p): g for g in w_optimizer.param_groups for p in g["params"]}
    lr = {} if eta is None else {"lr": eta}
    # a weight outside every group is never stepped: lr 0
    return [{**group_of[id(p)], **lr} if id(p) in group_of else {"lr": 0.0} for p in weights]


def _sgd_direction(
    p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], buf: torch.Tensor | None
) -> torch.Tensor:
    """What ``torch.optim.SGD`` multiplies by ``-lr`` for ``p``; with its defaults this is
    DARTS's ``momentum·buf + g + wd·w``."""
    d = grad + group.get("weight_decay", 0.0) * p
    momentum = group.get("momentum", 0.0)
    if momentum == 0:
        return d
    buf = d if buf is None else momentum * buf + (1 - group.get("dampening", 0.0)) * d
    return d + momentum * buf if group.get("nesterov", False) else buf


class Architect:
    """Architecture step: Adam on α (and β) against the validation loss.

    Second order follows DARTS: gradient at the one-step unrolled weights ``w'``, minus a
    finite-difference Hessian-vector product. ``w'`` is the step the weight optimizer would
    take (gradient clipping aside, as in DARTS): each weight with its own group's lr,
    momentum buffer and weight decay, so SSL displacements (no weight decay) and frozen ones
    (no gradient, skipped by SGD) move as they really would.

    Under torchrun every gradient is averaged over the ranks as soon as it is taken
    (:func:`nas.distributed.average_`, weighted by each rank's images): the first-order
    α gradient, and in second order the train gradient that builds ``w'``, the validation
    gradients at ``w'`` and the finite-difference term. Every rank then derives the same
    ``w'``, the same perturbation radius and the same α step. In one process these calls
    return at once.
    """

    def __init__(self, model: Supernet, cfg: ArchConfig) -> None:
        self.model = model
        self.order = cfg.order
        # the parameter lists, walked once (model.compile() is in place: same objects)
        self.arch = model.arch_parameters()
        named = list(model.named_weight_parameters())
        self.names = [n for n, _ in named]
        self.weights = [p for _, p in named]
        self.optimizer = torch.optim.Adam(
            self.arch, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )

    def step(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        val_batch: tuple[torch.Tensor, torch.Tensor],
        loss_fn,
        cost_fn,
        w_optimizer: torch.optim.SGD | None = None,
        eta: float | None = None,
    ) -> torch.Tensor:
        """One α update; returns the validation loss (a tensor, no host sync).

        Second order: ``eta=None`` takes each weight's lr from its group in ``w_optimizer``;
        a number overrides every group's lr.
        """
        self.optimizer.zero_grad(set_to_none=True)
        arch = self.arch
        if self.order == "first":
            val_loss = loss_fn(self.model(val_batch[0]), val_batch[1])
            (val_loss + cost_fn()).backward(inputs=arch)
            distributed.average_grads_(arch, val_batch[1].shape[0])
        else:
            val_loss = self._unrolled(train_batch, val_batch, loss_fn, w_optimizer, eta)
            cost = cost_fn()
            if cost.requires_grad:
                cost.backward(inputs=arch)
        self.optimizer.step()
        return val_loss.detach()

    def _train_loss(self, batch, loss_fn, params=None) -> torch.Tensor:
        x, y = batch
        out = self.model(x) if params is None else functional_call(self.model, params, (x,))
        return loss_fn(out, y)

    def _unrolled(self, train_batch, val_batch, loss_fn, w_optimizer, eta) -> torch.Tensor:
        names, weights, arch = self.names, self.weights, self.arch
        grads = torch.autograd.grad(
            self._train_loss(train_batch, loss_fn), weights, allow_unused=True
        )
        n_train, n_val = train_batch[1].shape[0], val_batch[1].shape[0]
        distributed.average_(grads, n_train)
        groups = _sgd_groups(w_optimizer, weights, eta)
        state = {} if w_optimizer is None else w_optimizer.state
        unrolled = {}
        lrs = []  # ξ per weight; 0 where SGD skips it (no gradient, e.g. frozen SSL shifts)
        with torch.no_grad():
            for n, p, g, group in zip(names, weights, grads, groups):
                lr = 0.0 if g is None else group["lr"]
                buf = state.get(p, {}).get("momentum_buffer")
                step = 0.0 if g is None else lr * _sgd_direction(p, g, group, buf)
                # a Parameter, as the weight it stands for: a compiled model's guards check
                # the type, so plain tensors would compile the whole supernet once more
                unrolled[n] = nn.Parameter(p - step)
                lrs.append(lr)
        val_loss = self._train_loss(val_batch, loss_fn, unrolled)
        all_grads = torch.autograd.grad(
            val_loss, [*arch, *unrolled.values()], allow_unused=True
        )
        all_grads = _grads_or_zeros(all_grads, [*arch, *unrolled.values()])
        distributed.average_(all_grads, n_val)
        d_arch, d_w = all_grads[: len(arch)], all_grads[len(arch) :]
        # Σ_p ξ_p ∇²_{α,p} L_train · v_p with v = ∇_{w'} L_val (as ∂w'_p/∂α = −ξ_p ∇²_{p,α}),
        # by central differences along u = ξ·v: (∇_α L(w + r·u) − ∇_α L(w − r·u)) / 2r with
        # r = 0.01/‖u‖. With one ξ for all weights this is exactly DARTS's ξ·(g⁺ − g⁻)/(2ε),
        # ε = 0.01/‖v‖ (same perturbed weights).
        direction = [lr * d for lr, d in zip(lrs, d_w)]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(direction)))
        r = 1e-2 / norm.clamp_min(1e-12)  # a device tensor: never read on the host
        torch._foreach_mul_(direction, r)  # r·u
        # w ± r·u from a saved copy, and w restored from it bit for bit: undoing the steps in
        # place leaves w an ulp off, enough to move an SSL displacement off the integer where
        # its gradient rule changes (and to make data-parallel ranks disagree with one process)
        saved = [p.detach().clone() for p in weights]
        with torch.no_grad():
            torch._foreach_add_(weights, direction)
        g_pos = torch.autograd.grad(self._train_loss(train_batch, loss_fn), arch, allow_unused=True)
        with torch.no_grad():
            torch._foreach_copy_(weights, saved)
            torch._foreach_sub_(weights, direction)
        g_neg = torch.autograd.grad(self._train_loss(train_batch, loss_fn), arch, allow_unused=True)
        with torch.no_grad():
            torch._foreach_copy_(weights, saved)
        g_pos, g_neg = _grads_or_zeros(g_pos, arch), _grads_or_zeros(g_neg, arch)
        diffs = [gp - gn for gp, gn in zip(g_pos, g_neg)]
        distributed.average_(diffs, n_train)  # linear: the difference of the averages
        for a, da, diff in zip(arch, d_arch, diffs):
            a.grad = da - diff / (2 * r)
        return val_loss
