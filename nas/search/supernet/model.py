"""The DARTS supernet: mixed ops on every edge, α per cell type, PC-DARTS options.

Partial channel connections (PC-DARTS): only ``1/K`` of an edge's channels go through the
mixed op, the rest bypass it, then channels are shuffled; edge normalization weights each
edge by a per-node softmax over β so the derived topology stays stable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.genotype import Genotype
from nas.layout import NetworkLayout, cell_layout
from nas.network import make_stem
from nas.ops import OPS, is_parameter_free
from nas.ops.osep import channel_shuffle
from nas.ops.primitives import FactorizedReduce, ReLUConvBN
from nas.search.stabilizers import dirichlet_mean, dirichlet_sample, smoothed_weights
from nas.search.supernet.fused import cell_plan, edge_order, fused_cell_forward
from nas.spaces import SearchSpace

__all__ = ["MixedOp", "SearchCell", "Supernet", "derive_cell"]


def _weighted_sum(weights: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
    """``Σ_o w_o·y_o`` in the weights' precision, cast back to the ops' dtype: under bf16
    autocast the α gradients are fp32 sums, as in the fused path (``fused._mix``)."""
    total = sum(w * y.to(w.dtype) for w, y in zip(weights, outs))
    return total.to(outs[0].dtype)


def _edge_weighted(weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """An edge's output times its edge-normalization weight, in the weight's precision."""
    return (weight * out.to(weight.dtype)).to(out.dtype)


class SkipDropout(nn.Module):
    """Dropout whose rate is a 0-dim buffer, not a Python float: P-DARTS changes it every
    epoch, and a compiled supernet reads a buffer as data where it would have baked a
    float into the graph and recompiled on each change. ``p`` = 1 drops everything."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("p", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.rand_like(x) < keep
        return x * (mask.to(x.dtype) / keep.clamp_min(1e-12))


class MixedOp(nn.Module):
    """Σ_o w_o·o(x) over the space's ops; with ``partial_k > 1`` only C/K channels pass."""

    def __init__(self, C: int, stride: int, ops: tuple[str, ...], partial_k: int = 1,
                 skip_dropout: bool = False) -> None:
        super().__init__()
        if C % partial_k:
            raise ValueError(f"channels {C} not divisible by partial_k {partial_k}")
        self.k = partial_k
        self.stride = stride
        Cp = C // partial_k
        self.ops = nn.ModuleList()
        for name in ops:
            op = OPS[name](Cp, stride, False)
            if "pool" in name:  # DARTS: BN after pooling so its scale matches the convs
                op = nn.Sequential(op, nn.BatchNorm2d(Cp, affine=False))
            if name == "skip_connect" and stride == 1 and skip_dropout:
                # P-DARTS: dropout after the identity (its rate set per epoch by
                # Supernet.set_skip_dropout); stride 2's skip is a conv and keeps none
                op = nn.Sequential(op, SkipDropout())
            self.ops.append(op)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return _weighted_sum(weights, [op(x) for op in self.ops])
        cp = x.shape[1] // self.k
        active, bypass = x[:, :cp], x[:, cp:]
        out = _weighted_sum(weights, [op(active) for op in self.ops])
        if self.stride > 1:
            bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([out, bypass], dim=1), self.k)


class SearchCell(nn.Module):
    """A supernet cell: every node sums mixed ops over all of its predecessors."""

    def __init__(
        self,
        space: SearchSpace,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        partial_k: int = 1,
        aux_skip: bool = False,
        skip_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = space.steps
        self.multiplier = space.multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and j < 2 else 1, space.ops, partial_k, skip_dropout)
            for i in range(space.steps)
            for j in range(2 + i)
        )
        # DARTS-'s auxiliary skip per edge (FactorizedReduce on stride 2): scaled by the
        # supernet's decaying β, never an op of the space, so never in the genotype
        self.aux_skips = nn.ModuleList(
            (FactorizedReduce(C, C, affine=False) if reduction and j < 2 else nn.Identity())
            for i in range(space.steps) for j in range(2 + i)
        ) if aux_skip else None
        # the fused forward's α row order (nas.search.supernet.fused.edge_order); a buffer so it
        # moves with .to(device) and a compiled call reads it without filling a cache
        self.register_buffer(
            "edge_order", torch.tensor(edge_order(space.steps)), persistent=False
        )

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        weights: torch.Tensor,
        edge_weights: torch.Tensor | None,
        aux_beta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            terms = []
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, weights[offset + j])
                if edge_weights is not None:
                    out = _edge_weighted(edge_weights[offset + j], out)
                terms.append(out)
            node = sum(terms)
            if aux_beta is not None and self.aux_skips is not None:
                aux = [self.aux_skips[offset + j](h) for j, h in enumerate(states)]
                node = node + aux_beta * sum(aux)
            offset += len(states)
            states.append(node)
        return torch.cat(states[-self.multiplier :], dim=1)


def _edge_softmax(betas: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-node softmax over each node's incoming edges (PC-DARTS edge normalization)."""
    parts, start = [], 0
    for i in range(steps):
        parts.append(F.softmax(betas[start : start + 2 + i], dim=-1))
        start += 2 + i
    return torch.cat(parts)


def _cap(chosen: list[tuple[int, int, float]], masked: torch.Tensor, capped: list[int],
         limit: int) -> list[tuple[int, int, float]]:
    """``chosen`` with at most ``limit`` edges on an op of ``capped``: the weakest others
    move to their best op outside ``capped``."""
    hits = sorted((c for c in chosen if c[1] in capped), key=lambda c: c[2])
    demote = {c[0] for c in hits[: max(0, len(hits) - limit)]}
    if not demote:
        return chosen
    others = masked.clone()
    others[:, capped] = float("-inf")
    out = []
    for e, o, strength in chosen:
        if e in demote and torch.isfinite(others[e]).any():
            o = int(others[e].argmax())
        out.append((e, o, strength))
    return out


def derive_cell(
    weights: torch.Tensor,
    ops: tuple[str, ...],
    steps: int,
    inputs_per_node: int = 2,
    edge_weights: torch.Tensor | None = None,
    max_skips: int | None = None,
    max_param_free: int | None = None,
) -> list[tuple[str, int]]:
    """DARTS derivation: per node, the top inputs by their strongest non-``none`` op.

    ``max_skips`` caps ``skip_connect`` edges (P-DARTS-style guard) and ``max_param_free``
    every parameter-free op (:func:`nas.ops.is_parameter_free`: skip, pools): the weakest
    such edges fall back to their best op outside the capped set (an edge with no such op
    keeps its own).
    """
    w = weights.detach().float().cpu()
    if edge_weights is not None:
        w = w * edge_weights.detach().float().cpu()[:, None]
    allowed = torch.tensor([op != "none" for op in ops])
    masked = w.masked_fill(~allowed, float("-inf"))
    chosen: list[tuple[int, int, float]] = []  # (edge index, op index, strength)
    start = 0
    for i in range(steps):
        n_in = 2 + i
        block = masked[start : start + n_in]
        strength, best_op = block.max(dim=1)
        order = sorted(range(n_in), key=lambda j: -strength[j].item())[:inputs_per_node]
        for j in sorted(order):
            chosen.append((start + j, int(best_op[j]), float(strength[j])))
        start += n_in
    if max_skips is not None:
        chosen = _cap(chosen, masked, [i for i, op in enumerate(ops) if op == "skip_connect"],
                      max_skips)
    if max_param_free is not None:
        free = [i for i, op in enumerate(ops) if op != "none" and is_parameter_free(op)]
        chosen = _cap(chosen, masked, free, max_param_free)
    edge_input = [j for i in range(steps) for j in range(2 + i)]
    return [(ops[o], edge_input[e]) for e, o, _ in chosen]


class Supernet(nn.Module):
    """DARTS search network over ``space`` (8 cells, 16 channels by default).

    Architecture parameters are ``nn.Parameter`` (so they live in ``state_dict``) and are
    split from the weights by :meth:`arch_parameters` / :meth:`weight_parameters`.

    ``fused`` selects how the cells run: :func:`nas.search.supernet.fused.fused_cell_forward` (one
    call per op for all edges leaving a state) or the reference :class:`MixedOp` per edge.
    Both compute the same function with the same parameters; the attribute can be flipped
    at any time.
    """

    ARCH_NAMES = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        C: int = 16,
        layers: int = 8,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        partial_k: int = 1,
        edge_norm: bool = False,
        fused: bool = True,
        aux_skip: bool = False,
        dirichlet: bool = False,
        skip_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.space = space
        self.dirichlet = dirichlet
        #: DrNAS draws (False: the Dirichlet mean, e.g. for a deterministic Hessian probe)
        self.sample = True
        self.edge_norm = edge_norm
        self.fused = fused
        self._geometry = (C, layers, stem_multiplier)
        layout = cell_layout(C, layers, space.multiplier, stem_multiplier=stem_multiplier)
        self.stem = make_stem(in_channels, layout.C_stem)
        self.cells = nn.ModuleList()
        for c in layout.cells:
            self.cells.append(SearchCell(space, c.C_prev_prev, c.C_prev, c.C, c.reduction,
                                         c.reduction_prev, partial_k, aux_skip, skip_dropout))
            cell_plan(self.cells[-1])  # built now, outside any torch.compile trace
        C_prev = layout.C_out
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        # which cells are normal/reduction, for expected_cost's index_select: built once
        # (a host list turned into a device tensor each step was a host-to-device copy,
        # and a boolean mask index a device sync)
        reduce_flags = [c.reduction for c in self.cells]
        for name, flag in (("normal_cells", False), ("reduce_cells", True)):
            index = [i for i, r in enumerate(reduce_flags) if r == flag]
            self.register_buffer(name, torch.tensor(index, dtype=torch.long), persistent=False)
        # DARTS-'s β: a tensor, so a compiled forward reads a new value without recompiling
        self.aux_skip = aux_skip
        self.register_buffer("aux_skip_beta", torch.ones(()), persistent=False)
        n_edges, n_ops = space.num_edges, len(space.ops)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, n_ops))
        if edge_norm:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(n_edges))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(n_edges))
        # P-DARTS's pruned ops per edge (True: kept): set by set_op_mask, out of the state
        # dict (each stage of a progressive search sets its own); unpruned: no extra ops
        self.pruned = False
        for name in ("op_mask_normal", "op_mask_reduce"):
            self.register_buffer(name, torch.ones(n_edges, n_ops, dtype=torch.bool),
                                 persistent=False)

    def set_op_mask(self, normal: torch.Tensor, reduce: torch.Tensor) -> None:
        """Keep only the ``True`` ops of each edge (P-DARTS's pruning): their mixing weights
        are the softmax over the kept ops (the Dirichlet mean renormalized), the others 0.
        Pruned ops still run (their weight is 0): the mixing, not the compute, is P-DARTS's."""
        for mask, buf in ((normal, self.op_mask_normal), (reduce, self.op_mask_reduce)):
            if mask.shape != buf.shape or not bool(mask.any(1).all()):
                raise ValueError(f"op mask must be {tuple(buf.shape)} with an op kept per edge")
            buf.copy_(mask)
        self.pruned = not bool(self.op_mask_normal.all() and self.op_mask_reduce.all())

    def set_skip_dropout(self, p: float) -> None:
        """P-DARTS's dropout rate after every stride-1 skip (built with ``skip_dropout``)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                for op in m.ops:
                    if isinstance(op, nn.Sequential) and isinstance(op[-1], SkipDropout):
                        op[-1].p.fill_(p)

    # parameters ----------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [getattr(self, n) for n in self.ARCH_NAMES if hasattr(self, n)]

    def named_weight_parameters(self):
        return ((n, p) for n, p in self.named_parameters() if n not in self.ARCH_NAMES)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]

    # relaxation ----------------------------------------------------------------------
    def op_weights(self, reduction: bool) -> torch.Tensor:
        """The mixing weights α stands for: softmax(α), or with ``dirichlet`` (DrNAS) the
        mean of Dirichlet(elu(α) + 1). Derivation, cost term and diagnostics read these."""
        alpha = self.alphas_reduce if reduction else self.alphas_normal
        if not self.pruned:
            return dirichlet_mean(alpha) if self.dirichlet else F.softmax(alpha, dim=-1)
        return self._masked(dirichlet_mean(alpha) if self.dirichlet else None, alpha,
                            reduction)

    def _masked(self, weights: torch.Tensor | None, alpha: torch.Tensor,
                reduction: bool) -> torch.Tensor:
        """``weights`` (softmax(α) when None) over the kept ops only, renormalized."""
        mask = self.op_mask_reduce if reduction else self.op_mask_normal
        if weights is None:
            return F.softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)
        weights = weights * mask
        return weights / weights.sum(-1, keepdim=True)

    def edge_weights(self, reduction: bool) -> torch.Tensor | None:
        if not self.edge_norm:
            return None
        betas = self.betas_reduce if reduction else self.betas_normal
        return _edge_softmax(betas, self.space.steps)

    def forward(self, x: torch.Tensor,
                noise: dict[bool, torch.Tensor] | None = None,
                weights: dict[bool, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of ``x``; ``noise`` (per cell type, shaped like α) smooths the mixing
        weights as SDARTS-RS does (:func:`nas.search.stabilizers.smoothed_weights`);
        ``weights`` (per cell type, shaped like α) replaces them, e.g. DARTS-PT's supernet
        with an op removed or an edge decided (:mod:`nas.search.perturbation`)."""
        if weights is None and self.dirichlet and self.training and self.sample:
            weights = {r: dirichlet_sample(self.alphas_reduce if r else self.alphas_normal)
                       for r in (False, True)}  # DrNAS: a draw per training forward
            if self.pruned:
                weights = {r: self._masked(w, w, r) for r, w in weights.items()}
        elif weights is None:
            weights = {r: self.op_weights(r) for r in (False, True)}
        if noise is not None:
            weights = {r: smoothed_weights(w, noise[r]) for r, w in weights.items()}
        edges = {r: self.edge_weights(r) for r in (False, True)}
        run = fused_cell_forward if self.fused else SearchCell.__call__
        aux = self.aux_skip_beta if self.aux_skip else None
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, run(cell, s0, s1, weights[cell.reduction], edges[cell.reduction], aux)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

    # cost ----------------------------------------------------------------------------
    def edge_shapes(self, image_size: tuple[int, int]) -> list[list[tuple[int, int, int, int]]]:
        """Per cell, per edge: (C, stride, H, W) of the op's input, for cost tables."""
        return self.layout_at(image_size).edge_shapes(self.space.steps)

    def layout_at(self, image_size: tuple[int, int]) -> NetworkLayout:
        """This supernet's :func:`~nas.network.cell_layout` for ``image_size`` inputs."""
        C, layers, stem_multiplier = self._geometry
        return cell_layout(C, layers, self.space.multiplier, stem_multiplier=stem_multiplier,
                           image_hw=image_size)

    def expected_cost(self, cost: torch.Tensor) -> torch.Tensor:
        """Σ_cells Σ_edges Σ_ops softmax(α)·cost; ``cost`` is (cells, edges, ops)."""
        w_n, w_r = self.op_weights(False), self.op_weights(True)
        total_n = (cost.index_select(0, self.normal_cells.to(cost.device)) * w_n).sum()
        total_r = (cost.index_select(0, self.reduce_cells.to(cost.device)) * w_r).sum()
        return total_n + total_r

    # derivation ----------------------------------------------------------------------
    def genotype(self, max_skips: int | None = None,
                 max_param_free: int | None = None) -> Genotype:
        """Top-``inputs_per_node`` inputs per node, excluding ``none``; the caps (skips,
        parameter-free ops) apply to the normal cell."""
        s = self.space
        normal = derive_cell(
            self.op_weights(False), s.ops, s.steps, s.inputs_per_node,
            self.edge_weights(False), max_skips, max_param_free,
        )
        reduce = derive_cell(
            self.op_weights(True), s.ops, s.steps, s.inputs_per_node, self.edge_weights(True)
        )
        return Genotype(normal, s.concat, reduce, s.concat)
