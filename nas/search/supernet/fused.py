"""Fused supernet cell forward: the mathematics of :class:`~nas.search.supernet.model.SearchCell`,
executed as fewer and larger calls.

The reference cell runs every edge's :class:`~nas.search.supernet.model.MixedOp` on its own:
``Σ_edges Σ_ops`` module calls, each op starting with its own ReLU, ``none`` multiplying a
tensor by zero. Here the edges are grouped by the state they read (every state feeds all
later nodes), and for each group:

- each op runs once for all its edges (:func:`nas.search.supernet.fused_ops.batched_op`): per-edge
  weights concatenated, one grouped convolution, one BatchNorm call; the ReLU shared by the
  conv ops and the pooling (and its training-mode BN) run once for the state;
- ``none`` costs nothing (its α still enters the softmax, so the gradients are the same);
- the op outputs are mixed with ``softmax(α)`` (times the edge-normalization weight) into
  one ``(N, E, C, H, W)`` tensor, whose slices go to the nodes the edges feed;
- with partial channels the bypass (and its stride-2 pooling) is computed once per state;
  each node adds up its active and bypass parts and shuffles once.

A group is run as soon as its state exists (a node is complete once its last input state
was run), so the order of the computation is that of the reference, and the parameters and
BN buffers are the modules' own: state dicts, optimizers and hooks see no difference.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops.osep import channel_shuffle
from nas.search.supernet.fused_ops import StateCache, Stream, batched_op, is_batchable

__all__ = [
    "CellPlan", "cell_plan", "edge_order", "rebuild_plans", "fused_cell_forward",
]

log = logging.getLogger("nas")


@dataclasses.dataclass(frozen=True)
class _OpGroup:
    """Op ``index`` of the space on every edge of a source group."""

    index: int
    modules: tuple[nn.Module, ...]
    batchable: bool


@dataclasses.dataclass(frozen=True)
class _SourceGroup:
    """The edges leaving one state: their α rows, target nodes, stride and ops."""

    state: int
    edges: tuple[int, ...]
    nodes: tuple[int, ...]
    stride: int
    ops: tuple[_OpGroup, ...]


class CellPlan:
    """How to run a :class:`SearchCell` fused; built once per cell from its structure.

    Holds references to the cell's op modules (never copies of their parameters).
    """

    def __init__(self, cell: nn.Module) -> None:
        self.steps = cell.steps
        self.multiplier = cell.multiplier
        self.partial_k = cell.edges[0].k
        self.groups = tuple(self._group(cell, j) for j in range(self.steps + 1))
        #: α rows in group order, so each group's rows are one contiguous slice
        self.order = [e for g in self.groups for e in g.edges]

    @staticmethod
    def _group(cell: nn.Module, state: int) -> _SourceGroup:
        offsets = [sum(2 + i for i in range(node)) for node in range(cell.steps)]
        nodes = tuple(range(max(0, state - 1), cell.steps))
        edges = tuple(offsets[i] + state for i in nodes)
        mixed = [cell.edges[e] for e in edges]
        ops = []
        for index in range(len(mixed[0].ops)):
            mods = tuple(m.ops[index] for m in mixed)
            # SyncBatchNorm (runtime.sync_bn) must run its own forward to synchronise
            batchable = is_batchable(mods) and not _has_sync_bn(mods[0])
            ops.append(_OpGroup(index, mods, batchable))
        return _SourceGroup(state, edges, nodes, mixed[0].stride, tuple(ops))


def edge_order(steps: int) -> list[int]:
    """The cell's edges grouped by the state they read (state 0, 1, then each node in
    turn): the order :class:`CellPlan` runs them in, so each group's α rows are one
    contiguous slice of ``weights[edge_order]``.

    :class:`~nas.search.supernet.model.SearchCell` keeps it as a buffer built at construction,
    so a compiled forward reads a tensor that is already on the cell's device and fills no
    cache while it is traced (a cache filled mid-trace made dynamo compile twice).
    """
    offsets = [sum(2 + i for i in range(node)) for node in range(steps)]
    return [offsets[node] + state for state in range(steps + 1)
            for node in range(max(0, state - 1), steps)]


def _has_sync_bn(module: nn.Module) -> bool:
    return any(isinstance(m, nn.SyncBatchNorm) for m in module.modules())


def rebuild_plans(module: nn.Module) -> None:
    """Rebuild the plan of every cell in ``module``: after its op modules were replaced
    (e.g. BatchNorm converted to SyncBatchNorm), a plan would still hold the old ones."""
    for m in module.modules():
        if "_fused_plan" in m.__dict__:
            m.__dict__["_fused_plan"] = CellPlan(m)


def cell_plan(cell: nn.Module) -> CellPlan:
    """The cell's plan, built on first use and kept on the cell (not a module or buffer)."""
    plan = cell.__dict__.get("_fused_plan")
    if plan is None:
        plan = CellPlan(cell)
        cell.__dict__["_fused_plan"] = plan
    return plan


def _add_all(terms: list[Tensor]) -> Tensor:
    return functools.reduce(torch.add, terms)


def _run_op(op: _OpGroup, s: Stream, cache: StateCache) -> Stream | None:
    if op.batchable:
        return batched_op(op.modules, s, cache)
    outs = [m(s.x) for m in op.modules]  # s is the shared state input here
    return Stream(torch.cat(outs, dim=1), shared=False, edges=s.edges)


def _mix(group: _SourceGroup, active: Tensor, coef: Tensor) -> Tensor:
    """``Σ_o coef[e, o]·op_o(x)`` for every edge ``e`` of the group: ``(N, E, C, H, W)``.

    ``coef`` holds the group's rows of ``softmax(α)`` (times the edge weights), ``(E, ops)``.

    Mixed in ``coef``'s precision (fp32) whatever the ops ran in: under bf16 autocast the
    products and their sum are fp32 and only the result is cast back to the ops' dtype, so
    the gradient of each mixing weight (a sum over the whole batch) is an fp32 sum, as in
    the official DARTS code. Rounded to bf16, those sums differ from one op to the next by
    less than their rounding error, and softmax's backward subtracts them: the α gradient
    was 10-19% off (tests/search/test_bf16_mixing.py).
    """
    e = len(group.edges)
    per_op = coef.t().reshape(coef.shape[1], 1, e, 1, 1, 1)
    s = Stream(active, shared=True, edges=e)
    cache = StateCache()
    total: Tensor | None = None
    dtype = active.dtype
    for op in group.ops:
        out = _run_op(op, s, cache)
        if out is None:
            continue
        y = out.x.unsqueeze(1) if out.shared else out.x.unflatten(1, (e, -1))
        dtype = y.dtype
        w = per_op[op.index]  # fp32: y·w promotes a bf16 y, the sum stays fp32
        total = y * w if total is None else torch.addcmul(total, y, w)
    if total is None:
        raise ValueError("a supernet edge needs at least one op besides 'none'")
    return total.to(dtype)


def _bypass(rest: Tensor, stride: int, edge_weights: Tensor | None) -> Tensor:
    """The channels partial connections skip, strided as the reference does, weighted per
    edge when edge normalization is on: ``(N, 1 or E, C − C/K, H, W)``."""
    if stride > 1:
        rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
    rest = rest.unsqueeze(1)
    if edge_weights is None:
        return rest
    # fp32 product (β's gradient an fp32 sum, as in _mix), cast back to the state's dtype
    return (rest * edge_weights.view(1, -1, 1, 1, 1)).to(rest.dtype)


class _NodeSums:
    """Each intermediate node's inputs as they arrive: the mixed (active) channels and, with
    partial channels, the bypassed ones; a node is their sum, concatenated and shuffled."""

    def __init__(self, steps: int, k: int) -> None:
        self.k = k
        self.active: list[list[Tensor]] = [[] for _ in range(steps)]
        self.bypass: list[list[Tensor]] = [[] for _ in range(steps)]

    def add(self, nodes: tuple[int, ...], mixed: Tensor, rest: Tensor | None) -> None:
        """Edge ``j`` of a group feeds ``nodes[j]``. ``unbind`` rather than slicing: its
        backward is one stack, not a zero-filled full-size gradient per slice."""
        for target, part in zip(nodes, mixed.unbind(1)):
            self.active[target].append(part)
        if rest is not None:
            parts = rest.unbind(1)
            for j, target in enumerate(nodes):
                self.bypass[target].append(parts[j if len(parts) > 1 else 0])

    def value(self, i: int) -> Tensor:
        out = _add_all(self.active[i])
        if self.k == 1:
            return out
        return channel_shuffle(torch.cat([out, _add_all(self.bypass[i])], dim=1), self.k)


def _run_group(
    group: _SourceGroup, x: Tensor, coef: Tensor, edge_weights: Tensor | None, k: int
) -> tuple[Tensor, Tensor | None]:
    """The mixed outputs of a group's edges and, with partial channels, their bypass."""
    if k == 1:
        return _mix(group, x, coef), None
    cp = x.shape[1] // k
    active, rest = x.split([cp, x.shape[1] - cp], dim=1)
    return _mix(group, active, coef), _bypass(rest, group.stride, edge_weights)


def fused_cell_forward(
    cell: nn.Module,
    s0: Tensor,
    s1: Tensor,
    weights: Tensor,
    edge_weights: Tensor | None,
    aux_beta: Tensor | None = None,
) -> Tensor:
    """What ``cell(s0, s1, weights, edge_weights, aux_beta)`` computes, fused (see the
    module doc).

    Edge normalization scales an edge's whole output: its mixed channels through the op
    weights (``coef``), its bypassed channels directly. DARTS-'s auxiliary skips
    (``aux_beta``) add ``β·Σ_e skip_e(state)`` to each node after the partial-channel
    shuffle, as the reference adds them to the node sum.
    """
    plan = cell_plan(cell)
    k = plan.partial_k
    index = cell.edge_order  # a buffer: on the cell's device, no per-call cache
    coef = weights if edge_weights is None else weights * edge_weights[:, None]
    coef = coef.index_select(0, index)
    edge_w = None if edge_weights is None or k == 1 else edge_weights.index_select(0, index)
    nodes = _NodeSums(plan.steps, k)
    skips = cell.aux_skips if aux_beta is not None else None
    aux: list[list[Tensor]] = [[] for _ in range(plan.steps)]

    def node(i: int) -> Tensor:
        value = nodes.value(i)
        return value if skips is None else value + aux_beta * _add_all(aux[i])

    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    start = 0
    for group in plan.groups:
        if group.state == len(states):
            states.append(node(group.state - 2))
        stop = start + len(group.edges)
        ew = None if edge_w is None else edge_w[start:stop]
        mixed, rest = _run_group(group, states[group.state], coef[start:stop], ew, k)
        nodes.add(group.nodes, mixed, rest)
        if skips is not None:
            for e, target in zip(group.edges, group.nodes):
                aux[target].append(skips[e](states[group.state]))
        start = stop
    states.append(node(plan.steps - 1))
    return torch.cat(states[-plan.multiplier :], dim=1)

