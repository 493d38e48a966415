"""Supernet mechanics: mixed ops, partial channels, bilevel steps, derivation, cost term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nas.config import build
from nas.network import NetworkCIFAR
from nas.search.architect import Architect
from nas.search.config import ArchConfig
from nas.search.supernet.model import MixedOp, Supernet, derive_cell
from nas.spaces import get_space

SMALL_OPS = [
    "none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "c2sp_conv_2x2", "ssl_conv"
]


def _space(ops=SMALL_OPS, steps=2):
    return get_space("test", ops, steps=steps, multiplier=steps)


def test_mixed_op_is_weighted_sum():
    torch.manual_seed(0)
    mixed = MixedOp(8, 1, tuple(SMALL_OPS)).eval()
    x = torch.randn(2, 8, 6, 6)
    w = torch.softmax(torch.randn(len(SMALL_OPS)), 0)
    expected = sum(w[i] * op(x) for i, op in enumerate(mixed.ops))
    torch.testing.assert_close(mixed(x, w), expected)
    one_hot = torch.zeros(len(SMALL_OPS))
    one_hot[3] = 1.0
    torch.testing.assert_close(mixed(x, one_hot), mixed.ops[3](x))


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_partial_channels_shapes_and_memory():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    w = torch.softmax(torch.randn(len(SMALL_OPS)), 0)
    full, partial = MixedOp(16, 1, tuple(SMALL_OPS), 1), MixedOp(16, 1, tuple(SMALL_OPS), 4)
    assert partial(x, w).shape == full(x, w).shape == (2, 16, 8, 8)
    assert MixedOp(16, 2, tuple(SMALL_OPS), 4)(x, w).shape == (2, 16, 4, 4)
    full_bytes = _saved_bytes(lambda: full(x, w).sum())
    partial_bytes = _saved_bytes(lambda: partial(x, w).sum())
    assert partial_bytes < 0.4 * full_bytes  # ~1/K of the activations are kept for backward


def _net(**kw):
    torch.manual_seed(0)
    return Supernet(_space(), 4, C=8, layers=3, **kw)


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _arch_step(order: str) -> None:
    model = _net(partial_k=2, edge_norm=True)
    arch = Architect(model, build(ArchConfig, {"order": order, "lr": 0.01}))
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
    before = [a.detach().clone() for a in model.arch_parameters()]
    weights_before = [p.detach().clone() for p in model.weight_parameters()]
    arch.step(_batch(), _batch(), F.cross_entropy, lambda: torch.zeros(()), w_opt, 0.1)
    for b, a in zip(before, model.arch_parameters()):
        assert not torch.equal(b, a)
    # The unrolled step must leave the weights as they were (perturbations undone).
    for b, p in zip(weights_before, model.weight_parameters()):
        torch.testing.assert_close(b, p)


def test_first_order_step_changes_alpha():
    _arch_step("first")


def test_second_order_step_changes_alpha():
    _arch_step("second")


def test_second_order_differs_from_first_order():
    grads = {}
    for order in ("first", "second"):
        model = _net()
        arch = Architect(model, build(ArchConfig, {"order": order}))
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1)
        arch.optimizer.step = lambda: None  # keep α; we only compare the gradients
        arch.step(_batch(), _batch(), F.cross_entropy, lambda: torch.zeros(()), w_opt, 0.5)
        grads[order] = model.alphas_normal.grad.clone()
    assert not torch.allclose(grads["first"], grads["second"])


def test_derivation_on_hand_set_alpha():
    ops = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")
    # steps=2: node 0 has edges 0,1 (inputs 0,1); node 1 has edges 2,3,4 (inputs 0,1,2)
    w = torch.full((5, 4), 0.1)
    w[:, 0] = 0.9  # 'none' dominates everywhere but must be ignored
    w[0, 2] = 0.5  # node 0 <- input 0 sep_conv
    w[1, 3] = 0.4  # node 0 <- input 1 max_pool
    w[2, 1] = 0.2  # weak
    w[3, 2] = 0.6  # node 1 <- input 1 sep_conv
    w[4, 1] = 0.7  # node 1 <- input 2 skip
    cell = derive_cell(w, ops, steps=2)
    expected = [("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 2)]
    assert cell == expected
    capped = derive_cell(w, ops, steps=2, max_skips=0)
    assert ("skip_connect", 2) not in capped and len(capped) == 4
    # Edge normalization reweights inputs: a small β on edge 3 drops input 1 of node 1.
    beta = torch.tensor([1.0, 1.0, 1.0, 0.1, 1.0])
    assert derive_cell(w, ops, steps=2, edge_weights=beta)[2:] == [
        ("skip_connect", 0), ("skip_connect", 2)
    ]


def test_cost_term_moves_alpha_toward_cheaper_ops():
    model = _net()
    ops = model.space.ops
    shapes = model.edge_shapes((8, 8))
    # params of each op at each edge's shape, as the cost table would give
    from nas.cost.lookup import CostTable

    cost = CostTable("params").tensor(ops, shapes)
    sep, skip = ops.index("sep_conv_3x3"), ops.index("skip_connect")
    assert (cost[..., sep] > 0).all()
    opt = torch.optim.Adam(model.arch_parameters(), lr=0.05)
    start = model.op_weights(False)[:, sep].mean().item()
    for _ in range(5):
        opt.zero_grad()
        model.expected_cost(cost).backward()
        opt.step()
    end = model.op_weights(False)
    assert end[:, sep].mean().item() < start
    assert end[:, skip].mean() > end[:, sep].mean()


def test_derived_genotype_builds_network():
    model = _net()
    genotype = model.genotype()
    genotype.validate(steps=2)
    net = NetworkCIFAR(8, 4, 3, False, genotype)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_search_freezes_ssl_shifts_at_freeze_at(tmp_path):
    """A tiny second-order search with ssl.freeze_at=0.5 over 4 epochs: the SSL displacements
    move in epochs 0-1 and are bit-identical in epochs 2-3 (SGD momentum and weight decay on),
    while the other weights and α keep training; a resumed job unfreezes before epoch 2."""
    from nas.run import RunDir
    from nas.search.config import SearchConfig
    from nas.search.darts import SearchJob

    cfg = build(SearchConfig, {
        "data": {"name": "synthetic", "batch_size": 8, "augment": False,
                 "options": {"num_samples": 48, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": ["none", "skip_connect", "sep_conv_3x3", "ssl_conv"], "steps": 2,
                  "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3},
        "optim": {"epochs": 4, "momentum": 0.9, "weight_decay": 3e-4},
        "arch": {"order": "second", "warmup_epochs": 0},  # α moves from epoch 0
        "ssl": {"penalty": 1e-3, "freeze_at": 0.5},
        "runtime": {"device": "cpu", "amp": False, "progress": False},
    })
    job = SearchJob(cfg, RunDir(tmp_path / "run"))
    model = job.model

    def snapshot():
        shifts = {n: p.detach().clone() for n, p in model.named_weight_parameters()
                  if n.endswith("displacement")}
        others = {n: p.detach().clone() for n, p in model.named_weight_parameters()
                  if n not in shifts}
        return shifts, others, [a.detach().clone() for a in model.arch_parameters()]

    snaps = [snapshot()]
    for epoch in range(4):
        job.start_epoch(epoch)
        for batch in job.batches():
            job.step(batch)
        job.scheduler.step()
        snaps.append(snapshot())
    assert len(snaps[0][0]) == 3 * 5  # one ssl_conv on every edge of the 3 cells
    for e in range(4):
        (s0, o0, a0), (s1, o1, a1) = snaps[e], snaps[e + 1]
        shifts_moved = any(not torch.equal(s0[n], s1[n]) for n in s0)
        assert shifts_moved == (e < 2), f"epoch {e}"
        assert any(not torch.equal(o0[n], o1[n]) for n in o0)
        assert any(not torch.equal(x, y) for x, y in zip(a0, a1))
    # resume: the freeze is a function of the epoch, not of the saved state
    resumed = SearchJob(cfg, RunDir(tmp_path / "run"))
    resumed.load_state_dict(job.state_dict())
    for epoch, frozen in ((1, False), (2, True)):
        resumed.start_epoch(epoch)
        assert all(m.frozen == frozen for m in resumed.model.modules() if hasattr(m, "frozen"))
