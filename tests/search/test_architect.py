"""Second-order DARTS architecture gradient against an independent reference architect.

The reference follows the official DARTS architect (Liu et al., ``architect.py``): build an
unrolled copy of the network with ``w' = w − ξ·(momentum·buf + g + wd·w)``, take the
validation gradient there, and subtract ``ξ`` times a central-difference Hessian-vector
product with ``ε = 0.01/‖v‖``. Here every weight uses its *own* SGD group's momentum, weight
decay (and lr), which is what the weight optimizer really does; with several lrs the
difference runs along ``u = ξ_p·v_p`` (``ε = 0.01/‖u‖``), which is DARTS's formula when all
``ξ`` are equal. Computed in float64 so that the comparison can be tight.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.config import build
from nas.ops.ssl import set_shifts_frozen, ssl_penalty
from nas.search.architect import Architect
from nas.search.config import ArchConfig
from nas.search.supernet.model import Supernet
from nas.spaces import get_space

OPS = ["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "ssl_conv"]
LAMBDA = 1e-2  # SSL penalty weight: the displacements get a training gradient of their own
# per group: weight decay and momentum; the SSL displacements have no weight decay
CONV = {"weight_decay": 0.05, "momentum": 0.9}
BN_BIAS = {"weight_decay": 0.5, "momentum": 0.3}
SHIFT = {"weight_decay": 0.0, "momentum": 0.6}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 4, (n,), generator=g)


def _setup(lrs: tuple[float, float, float], frozen: bool):
    """Tiny float64 supernet with SSL ops, SGD with three groups, momentum buffers filled."""
    torch.manual_seed(0)
    model = Supernet(get_space("test", OPS, steps=2, multiplier=2), 4, C=8, layers=3).double()
    shifts = [p for n, p in model.named_weight_parameters() if n.endswith("displacement")]
    assert len(shifts) == 3 * 5  # one ssl_conv on each of the 5 edges of the 3 cells
    ids = {id(p) for p in shifts}
    rest = [p for p in model.weight_parameters() if id(p) not in ids]
    groups = [
        {"params": [p for p in rest if p.dim() > 1], "lr": lrs[0], **CONV},
        {"params": [p for p in rest if p.dim() <= 1], "lr": lrs[1], **BN_BIAS},
        {"params": shifts, "lr": lrs[2], **SHIFT},
    ]
    opt = torch.optim.SGD(groups, lr=0.1)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # as SearchJob._loss
        return F.cross_entropy(logits, y) + LAMBDA * ssl_penalty(model)

    for seed in (10, 11):  # two real weight steps: momentum buffers become non-trivial
        x, y = _batch(seed)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward(inputs=model.weight_parameters())
        opt.step()
    if frozen:
        set_shifts_frozen(model, True)
    return model, opt, loss_fn


def _reference(model: Supernet, opt: torch.optim.SGD, train, val, eta, old: bool = False):
    """Independent DARTS architect on copies; ``old=True`` applies group 0's momentum and
    weight decay to every weight (the previous formula), for the can-fail check."""
    model, opt = copy.deepcopy((model, opt))
    names = [n for n, _ in model.named_parameters() if n not in Supernet.ARCH_NAMES]
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    arch = [model.alphas_normal, model.alphas_reduce]
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}

    def train_loss(m: nn.Module) -> torch.Tensor:  # lower level: CE + λ·Σ(α² + β²)
        shifts = [p for n, p in m.named_parameters() if n.endswith("displacement")]
        return F.cross_entropy(m(train[0]), train[1]) + LAMBDA * sum(p.pow(2).sum() for p in shifts)

    grads = torch.autograd.grad(train_loss(model), weights, allow_unused=True)
    unrolled_model = copy.deepcopy(model)
    unrolled = dict(unrolled_model.named_parameters())
    lrs = {}
    with torch.no_grad():
        for n, p, g in zip(names, weights, grads):
            group = opt.param_groups[0] if old else group_of[id(p)]
            lr = group_of[id(p)]["lr"] if eta is None else eta
            if g is None:  # frozen shift: SGD skips it
                lrs[n] = 0.0
                continue
            buf = opt.state[p]["momentum_buffer"]
            unrolled[n].copy_(p - lr * (group["momentum"] * buf + g + group["weight_decay"] * p))
            lrs[n] = lr
    # upper level: validation cross-entropy at w' (the penalty does not depend on α)
    F.cross_entropy(unrolled_model(val[0]), val[1]).backward()
    d_alpha = [unrolled_model.alphas_normal.grad, unrolled_model.alphas_reduce.grad]
    u = {
        n: lrs[n] * (torch.zeros_like(p) if unrolled[n].grad is None else unrolled[n].grad)
        for n, p in zip(names, weights)
    }
    eps = 0.01 / torch.cat([v.flatten() for v in u.values()]).norm()
    g_at = {}
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for n, p in zip(names, weights):
                p.add_(u[n], alpha=sign * float(eps))
        g_at[sign] = torch.autograd.grad(train_loss(model), arch)
        with torch.no_grad():
            for n, p in zip(names, weights):
                p.sub_(u[n], alpha=sign * float(eps))
    return [da - (gp - gn) / (2 * eps) for da, gp, gn in zip(d_alpha, g_at[1.0], g_at[-1.0])]


def _architect_grads(model, opt, loss_fn, train, val, eta):
    arch = Architect(model, build(ArchConfig, {"order": "second"}))
    arch.optimizer.step = lambda: None  # keep α: compare the gradients
    weights = [p.detach().clone() for p in model.weight_parameters()]
    arch.step(train, val, loss_fn, lambda: torch.zeros((), dtype=torch.float64), opt, eta)
    for before, p in zip(weights, model.weight_parameters()):  # perturbations undone
        torch.testing.assert_close(p.detach(), before, rtol=0, atol=1e-12)
    return [model.alphas_normal.grad.clone(), model.alphas_reduce.grad.clone()]


def _close(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float = 1e-4) -> bool:
    scale = max(t.abs().max().item() for t in b)
    return all(torch.allclose(x, y, rtol=rtol, atol=rtol * 1e-2 * scale) for x, y in zip(a, b))


@pytest.mark.parametrize(
    ("lrs", "eta", "frozen"),
    [
        ((0.3, 0.3, 0.3), None, False),  # one lr: the DARTS formula itself
        ((0.3, 0.1, 0.05), None, False),  # each group's own lr
        ((0.3, 0.1, 0.05), 0.2, False),  # an explicit ξ overrides every group's lr
        ((0.3, 0.3, 0.3), None, True),  # frozen SSL shifts stay where they are
    ],
)
def test_second_order_matches_reference_architect(lrs, eta, frozen) -> None:
    model, opt, loss_fn = _setup(lrs, frozen)
    train, val = _batch(1), _batch(2)
    expected = _reference(model, opt, train, val, eta)
    got = _architect_grads(model, opt, loss_fn, train, val, eta)
    assert all(torch.count_nonzero(g) > 0 for g in got)
    assert _close(got, expected), [(g - e).abs().max().item() for g, e in zip(got, expected)]
    # the previous formula (group 0's momentum and weight decay for every weight, SSL shifts
    # included) gives a measurably different α gradient: the comparison above can fail
    assert not _close(_reference(model, opt, train, val, eta, old=True), expected)
