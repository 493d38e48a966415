"""DARTS-PT's perturbation-based selection (Wang et al., ICLR 2021): the genotype from what
each op and edge is worth to the trained supernet's validation accuracy, not from α.

α's magnitude is a poor guide to an op's strength (the paper's point: skip's α grows while
removing skip hurts little), so after the search:

1. **ops**: the edges of both cells in a seeded random order; for each, the supernet's
   validation accuracy with each candidate op removed from that edge; the edge is decided
   to the op whose removal costs the most (its mixing weight becomes 1, the others 0);
   then the weights are tuned for a while with the edge decided.
2. **topology** (``select.topology``): per node, in a random order, the accuracy with each
   input edge removed; the ``inputs_per_node`` edges whose removal costs the most stay, the
   others are removed; tuned again. Off: the decided edges are kept by α's strength.

Only the ops a P-DARTS stage kept are candidates (a pruned op, weight 0, would look
harmless to remove, and win whenever removing the kept ones helps).
Undecided edges keep the supernet's own mixing weights (softmax(α), DrNAS's Dirichlet
mean). Tuning is SGD on the weights only (α no longer matters), its learning rate annealed
from ``optim.lr`` to ``optim.lr_min`` over all of the selection's tuning steps. Every
accuracy and decision goes into the returned record (``selection.json`` of the run).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from nas import distributed
from nas.genotype import Genotype
from nas.run import RunDir, atomic_write_text
from nas.search.config import SearchConfig
from nas.search.supernet.model import Supernet

__all__ = ["Selectable", "perturbation_select", "select_by_perturbation"]

log = logging.getLogger("nas")

Weights = dict[bool, torch.Tensor]


class Selectable(Protocol):
    """What the selection needs of a finished search (:class:`nas.search.darts.SearchJob`)."""

    cfg: SearchConfig
    model: Supernet
    weights: list[nn.Parameter]
    train_loader: Iterable[Any]
    eval_loader: Iterable[Any]

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


class _State:
    """Decisions so far: the op of each decided edge and the removed edges, per cell."""

    def __init__(self, base: Weights) -> None:
        self.base = base
        self.ops: dict[bool, dict[int, int]] = {False: {}, True: {}}
        self.removed: dict[bool, set[int]] = {False: set(), True: set()}

    def weights(self, cell: bool | None = None, edge: int = -1,
                op: int | None = None) -> Weights:
        """The mixing weights of the decisions, with ``op`` (or, if None, the whole edge)
        of ``edge`` in ``cell`` removed when ``cell`` is given."""
        out = {}
        for reduction, base in self.base.items():
            w = base.clone()
            for e, o in self.ops[reduction].items():
                w[e] = 0.0
                w[e, o] = 1.0
            for e in self.removed[reduction]:
                w[e] = 0.0
            if reduction == cell:
                if op is None:
                    w[edge] = 0.0
                else:
                    w[edge, op] = 0.0
            out[reduction] = w
        return out


def _num_batches(loader: Iterable[Any]) -> int:
    return len(loader)  # type: ignore[arg-type]


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        yield from loader


def perturbation_select(job: Selectable, seed: int = 0,
                        progress: Callable[[int], None] | None = None
                        ) -> tuple[Genotype, dict[str, Any]]:
    """DARTS-PT's genotype of ``job``'s trained supernet, and the record of every decision.
    ``progress(n)`` is told each finished evaluation (e.g. a tqdm bar's ``update``)."""
    cfg, model = job.cfg, job.model
    space, sel = model.space, cfg.select
    candidates = [i for i, op in enumerate(space.ops) if op != "none"]
    state = _State({r: model.op_weights(r).detach().clone() for r in (False, True)})
    n_edges = state.base[False].shape[0]
    gen = torch.Generator().manual_seed(seed)
    steps_per_tune = (sel.tune_steps if sel.tune_steps is not None
                      else sel.tune_epochs * _num_batches(job.train_loader))
    node_edges = _node_edges(space.steps)
    decisions = n_edges * 2 + (len(node_edges) * 2 if sel.topology else 0)  # tunes
    tuner = _Tuner(job, steps_per_tune, steps_per_tune * decisions)
    record: dict[str, Any] = {"method": "perturbation", "seed": seed, "ops": [],
                              "topology": [], "tune_steps": steps_per_tune}

    def accuracy(weights: Weights) -> float:
        value = _accuracy(job, weights, sel.eval_batches)
        if progress is not None:
            progress(1)
        return value

    edges = [(r, e) for r in (False, True) for e in range(n_edges)]
    for i in torch.randperm(len(edges), generator=gen).tolist():
        reduction, edge = edges[i]
        kept = model.op_mask_reduce if reduction else model.op_mask_normal
        ops_here = [o for o in candidates if kept[edge, o]]  # P-DARTS: pruned ops never
        accs = {space.ops[o]: accuracy(state.weights(reduction, edge, o)) for o in ops_here}
        # removal hurts the most; on a tie (a small validation split) the op α prefers, so
        # the ops listed first (skip, pools) get no edge from the order of the space
        best = min(ops_here, key=lambda o: (accs[space.ops[o]],
                                              -state.base[reduction][edge, o].item()))
        state.ops[reduction][edge] = best
        record["ops"].append({"cell": _cell(reduction), "edge": edge,
                              "op": space.ops[best], "accuracy_without": accs})
        log.info("DARTS-PT %s edge %d: %s (accuracy without it %.4f)", _cell(reduction),
                 edge, space.ops[best], accs[space.ops[best]])
        tuner.tune(state.weights())
    if sel.topology:
        nodes = [(r, n) for r in (False, True) for n in range(space.steps)]
        for i in torch.randperm(len(nodes), generator=gen).tolist():
            reduction, node = nodes[i]
            inputs = node_edges[node]
            accs = {e: accuracy(state.weights(reduction, e)) for e in inputs}
            strength = {e: state.base[reduction][e, state.ops[reduction][e]].item()
                        for e in inputs}
            keep = sorted(inputs, key=lambda e: (accs[e], -strength[e]))[
                : space.inputs_per_node]
            state.removed[reduction].update(e for e in inputs if e not in keep)
            record["topology"].append({"cell": _cell(reduction), "node": node,
                                       "kept": sorted(keep),
                                       "accuracy_without": {str(e): a for e, a in accs.items()}})
            tuner.tune(state.weights())
    else:  # the decided ops' own mixing weight ranks a node's inputs, as DARTS does
        for reduction in (False, True):
            for inputs in node_edges:
                strength = {e: state.base[reduction][e, state.ops[reduction][e]].item()
                            for e in inputs}
                keep = sorted(inputs, key=lambda e: -strength[e])[: space.inputs_per_node]
                state.removed[reduction].update(e for e in inputs if e not in keep)
    record["final_accuracy"] = _accuracy(job, state.weights(), sel.eval_batches)
    genotype = _genotype(state, space.ops, node_edges, space.concat)
    return genotype, record


def select_by_perturbation(job: Selectable, run: RunDir, argmax: Genotype) -> Genotype:
    """DARTS-PT's genotype of the trained ``job`` (:mod:`nas.search.perturbation`); every
    decision goes to ``selection.json``, beside the argmax genotype it replaces."""
    cfg = job.cfg
    quiet = not cfg.runtime.progress or os.environ.get("TQDM_DISABLE") == "1"  # nas -q
    tic = time.perf_counter()
    with tqdm(desc="DARTS-PT selection", unit="eval", disable=quiet, leave=False) as bar:
        genotype, record = perturbation_select(job, cfg.runtime.seed, bar.update)
    record["seconds"] = round(time.perf_counter() - tic, 1)
    log.info("DARTS-PT selection: %s (validation accuracy %.4f)", genotype,
             record["final_accuracy"])
    if run.writes:
        atomic_write_text(run / "selection.json",
                          json.dumps({**record, "genotype": str(genotype),
                                      "argmax_genotype": str(argmax)}, indent=1))
    return genotype


def _cell(reduction: bool) -> str:
    return "reduce" if reduction else "normal"


def _node_edges(steps: int) -> list[list[int]]:
    """Per intermediate node, the indices of its input edges (node i has 2 + i inputs)."""
    out, start = [], 0
    for i in range(steps):
        out.append(list(range(start, start + 2 + i)))
        start += 2 + i
    return out


def _genotype(state: _State, ops: tuple[str, ...], node_edges: list[list[int]],
              concat: Any) -> Genotype:
    cells = {}
    for reduction in (False, True):
        cells[reduction] = [
            (ops[state.ops[reduction][e]], j)
            for inputs in node_edges
            for j, e in enumerate(inputs) if e not in state.removed[reduction]
        ]
    return Genotype(cells[False], concat, cells[True], concat)


@torch.no_grad()
def _accuracy(job: Selectable, weights: Weights, max_batches: int | None) -> float:
    """Validation accuracy of the supernet mixed with ``weights`` (every rank's shard).

    BN normalizes with each batch's statistics, as in the search's own steps: the running
    statistics were gathered for the full mixture, not for this one with an op removed.
    They are restored afterwards, so no evaluation leaks into the next."""
    model = job.model
    buffers = list(model.buffers())
    saved = [b.clone() for b in buffers]
    model.train()
    device = next(model.parameters()).device
    correct = torch.zeros((), device=device, dtype=torch.float64)
    n = torch.zeros((), device=device, dtype=torch.float64)
    weights = {r: w.to(device) for r, w in weights.items()}
    for b, (x, y) in enumerate(job.eval_loader):
        if max_batches is not None and b >= max_batches:
            break
        correct += (model(x, weights=weights).argmax(1) == y).sum()
        n += y.shape[0]
    for b, value in zip(buffers, saved):
        b.copy_(value)
    totals = distributed.all_reduce_sum_(torch.stack([correct, n]))
    return float(totals[0] / totals[1].clamp_min(1))


class _Tuner:
    """The weight training between decisions: ``steps`` SGD steps each time, one cosine
    schedule over the selection's ``total`` steps."""

    def __init__(self, job: Selectable, steps: int, total: int) -> None:
        self.job, self.steps, self.total, self.done = job, steps, max(total, 1), 0
        optim = job.cfg.optim
        self.optimizer = torch.optim.SGD(job.weights, lr=optim.lr, momentum=optim.momentum,
                                         weight_decay=optim.weight_decay)
        self.batches = _cycle(job.train_loader)

    def tune(self, weights: Weights) -> None:
        job, optim = self.job, self.job.cfg.optim
        device = next(job.model.parameters()).device
        weights = {r: w.to(device) for r, w in weights.items()}
        job.model.train()
        for _ in range(self.steps):
            t = min(self.done / self.total, 1.0)
            lr = optim.lr_min + 0.5 * (optim.lr - optim.lr_min) * (1 + math.cos(math.pi * t))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = next(self.batches)
            loss = job._loss(job.model(x, weights=weights), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=job.weights)
            distributed.average_grads_(job.weights, y.shape[0])
            nn.utils.clip_grad_norm_(job.weights, optim.grad_clip, foreach=True)
            self.optimizer.step()
            self.done += 1
