"""SSL (sparse shift layer): references built here from OPERATORS.md formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.config import SSLConfig, build
from nas.deploy import to_deploy
from nas.errors import ConfigError
from nas.ops import OPS, op_family
from nas.ops.ssl import (
    IntegerShift2d,
    SparseShift2d,
    apply_shift_freeze,
    displacement_parameters,
    set_shifts_frozen,
    shift_freeze_epoch,
    ssl_penalty,
    ssl_sparsity,
)


def ref_shift(x: torch.Tensor, dx: list[int], dy: list[int]) -> torch.Tensor:
    """O[c, i, j] = I[c, i + dy[c], j + dx[c]], zero outside; explicit slicing per channel."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for c, (sx, sy) in enumerate(zip(dx, dy)):
        i0, i1 = max(0, -sy), min(h, h - sy)
        j0, j1 = max(0, -sx), min(w, w - sx)
        if i0 < i1 and j0 < j1:
            out[:, c, i0:i1, j0:j1] = x[:, c, i0 + sy : i1 + sy, j0 + sx : j1 + sx]
    return out


def relaxed_shift(x: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of x at (i + β_c, j + α_c), zero padding (grid_sample)."""
    n, c, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype).view(1, h, 1) + disp[:, 1].view(c, 1, 1)
    xs = torch.arange(w, dtype=x.dtype).view(1, 1, w) + disp[:, 0].view(c, 1, 1)
    gx = 2 * xs / (w - 1) - 1
    gy = 2 * ys / (h - 1) - 1
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (C, H, W, 2)
    grid = grid.unsqueeze(0).expand(n, c, h, w, 2).reshape(n * c, h, w, 2)
    out = F.grid_sample(
        x.reshape(n * c, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.view(n, c, h, w)


def _layer(disp: list[tuple[float, float]], dtype: torch.dtype = torch.float32) -> SparseShift2d:
    layer = SparseShift2d(len(disp), init="zeros").to(dtype)
    with torch.no_grad():
        layer.displacement.copy_(torch.tensor(disp, dtype=dtype))
    return layer


# (α, β) and the expected integer shift, rounded half away from zero.
ROUNDING_CASES = [
    ((0.5, -0.5), (1, -1)),
    ((1.5, 2.5), (2, 3)),
    ((-1.5, -2.5), (-2, -3)),
    ((0.49, -0.49), (0, 0)),
    ((-2.0, 1.0), (-2, 1)),
    ((0.0, 0.0), (0, 0)),
    ((3.2, -1.7), (3, -2)),
    ((9.0, 0.0), (9, 0)),  # shifts the whole map out: all zeros
]


def test_forward_is_integer_shift_rounded_half_away_from_zero() -> None:
    disp = [d for d, _ in ROUNDING_CASES]
    dx = [s[0] for _, s in ROUNDING_CASES]
    dy = [s[1] for _, s in ROUNDING_CASES]
    x = torch.randn(2, len(disp), 6, 7)
    out = _layer(disp)(x)
    assert torch.equal(out, ref_shift(x, dx, dy))
    assert torch.equal(out[:, -1], torch.zeros_like(out[:, -1]))
    # torch.round would give 0 for 0.5 and 2 for 2.5: make sure that is not what we do.
    assert torch.round(torch.tensor(0.5)) == 0


def test_input_gradient_is_inverse_shift() -> None:
    disp = [d for d, _ in ROUNDING_CASES]
    dx = [s[0] for _, s in ROUNDING_CASES]
    dy = [s[1] for _, s in ROUNDING_CASES]
    x = torch.randn(2, len(disp), 6, 7, requires_grad=True)
    g = torch.randn(2, len(disp), 6, 7)
    (_layer(disp)(x) * g).sum().backward()
    assert torch.equal(x.grad, ref_shift(g, [-v for v in dx], [-v for v in dy]))
    x2 = x.detach().clone().requires_grad_(True)
    (ref_shift(x2, dx, dy) * g).sum().backward()
    assert torch.equal(x.grad, x2.grad)


def _fd_grad(x: torch.Tensor, g: torch.Tensor, disp: torch.Tensor, side: str) -> torch.Tensor:
    """Finite-difference gradient of Σ g·relaxed_shift(x, disp): central, right or left.

    The relaxed output is piecewise linear in each displacement (bilinear), so one-sided
    differences with a step inside a cell are exact up to rounding error.
    """
    h = 1e-4
    grad = torch.zeros_like(disp)
    for c in range(disp.shape[0]):
        for k in range(2):
            up, down = disp.clone(), disp.clone()
            if side in ("central", "right"):
                up[c, k] += h
            if side in ("central", "left"):
                down[c, k] -= h
            step = (up[c, k] - down[c, k]).item()
            f_up = (relaxed_shift(x, up) * g).sum()
            f_down = (relaxed_shift(x, down) * g).sum()
            grad[c, k] = (f_up - f_down) / step
    return grad


def test_displacement_gradient_matches_bilinear_at_real_values() -> None:
    gen = torch.Generator().manual_seed(0)
    C = 6
    ints = torch.randint(-2, 3, (C, 2), generator=gen).double()
    frac = 0.1 + 0.8 * torch.rand(C, 2, generator=gen, dtype=torch.float64)
    disp = ints + frac
    x = torch.randn(2, C, 7, 8, generator=gen, dtype=torch.float64)
    g = torch.randn(2, C, 7, 8, generator=gen, dtype=torch.float64)
    layer = _layer(disp.tolist(), torch.float64)
    (layer(x) * g).sum().backward()
    expected = _fd_grad(x, g, disp, "central")
    assert torch.allclose(layer.displacement.grad, expected, rtol=1e-6, atol=1e-6)


def test_displacement_gradient_at_integers_is_mean_of_one_sided() -> None:
    gen = torch.Generator().manual_seed(1)
    # Both integer, α integer only, β integer only (incl. the grouped-init values ±1, 0).
    disp = torch.tensor(
        [[-1.0, -1.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.3], [-0.6, -1.0], [0.0, 0.0]],
        dtype=torch.float64,
    )
    C = disp.shape[0]
    x = torch.randn(3, C, 6, 6, generator=gen, dtype=torch.float64)
    g = torch.randn(3, C, 6, 6, generator=gen, dtype=torch.float64)
    layer = _layer(disp.tolist(), torch.float64)
    (layer(x) * g).sum().backward()
    right = _fd_grad(x, g, disp, "right")
    left = _fd_grad(x, g, disp, "left")
    assert not torch.allclose(left, right)  # the derivative really jumps here
    assert torch.allclose(layer.displacement.grad, (left + right) / 2, rtol=1e-6, atol=1e-6)


def test_grouped_init_values() -> None:
    layer = SparseShift2d(9)
    alpha = [-1, 0, 1, -1, 0, 1, -1, 0, 1]
    beta = [-1, -1, -1, 0, 0, 0, 1, 1, 1]
    assert layer.displacement[:, 0].tolist() == alpha
    assert layer.displacement[:, 1].tolist() == beta
    C, K = 20, 3
    expected = []
    for c in range(C):
        grp = (c * K * K) // C
        expected.append([grp % K - 1, grp // K - 1])
    assert SparseShift2d(C).displacement.tolist() == expected
    assert SparseShift2d(5, init="zeros").displacement.abs().sum() == 0


def test_penalty_l1_l2_and_parameters() -> None:
    a = _layer([(0.5, -1.0), (2.0, 0.0)])
    b = _layer([(-3.0, 0.25)])
    model = nn.Sequential(a, nn.ReLU(), b)
    l2 = 0.25 + 1.0 + 4.0 + 0.0 + 9.0 + 0.0625
    l1 = 0.5 + 1.0 + 2.0 + 0.0 + 3.0 + 0.25
    assert ssl_penalty(model).item() == pytest.approx(l2)
    assert ssl_penalty(model, norm="l2").item() == pytest.approx(l2)
    assert ssl_penalty(model, norm="l1").item() == pytest.approx(l1)
    with pytest.raises(ValueError):
        ssl_penalty(model, norm="l3")
    params = displacement_parameters(model)
    assert len(params) == 2 and params[0] is a.displacement and params[1] is b.displacement
    ssl_penalty(model).backward()
    assert torch.allclose(a.displacement.grad, 2 * a.displacement.detach())
    assert ssl_penalty(nn.Linear(2, 2)).item() == 0.0


def test_sparsity() -> None:
    a = _layer([(0.4, -0.49), (0.5, 0.0), (0.0, 0.0), (-0.2, 1.2)])  # zero, no, zero, no
    b = _layer([(0.0, 0.0), (0.0, -0.5)])  # zero, no
    model = nn.Sequential(a, b)
    assert ssl_sparsity(model) == pytest.approx(3 / 6)
    assert ssl_sparsity(to_deploy(model)) == pytest.approx(3 / 6)
    assert ssl_sparsity(nn.Identity()) == 0.0


def test_frozen_gets_no_displacement_grad() -> None:
    layer = _layer([(0.3, 0.7), (1.0, -1.0)])
    model = nn.Sequential(layer)
    set_shifts_frozen(model, True)
    assert layer.frozen
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    (model(x).sum() + ssl_penalty(model)).backward()
    assert layer.displacement.grad is None
    assert x.grad is not None
    set_shifts_frozen(model, False)
    model(x).sum().backward()
    assert layer.displacement.grad is not None


@pytest.mark.parametrize(
    ("epochs", "freeze_at", "first_frozen"),
    [(64, 0.75, 48), (50, 0.75, 38), (10, 0.7, 7), (3, 0.5, 2), (4, 1.0, 4)],
)
def test_shift_freeze_epoch_rule(epochs: int, freeze_at: float, first_frozen: int) -> None:
    """Frozen from epoch ceil(freeze_at·epochs): the shifts learn for >= freeze_at of training."""
    assert shift_freeze_epoch(epochs, freeze_at) == first_frozen
    model = nn.Sequential(SparseShift2d(4))
    states = [apply_shift_freeze(model, e, epochs, freeze_at) for e in range(epochs)]
    assert states == [e >= first_frozen for e in range(epochs)]
    assert not any(apply_shift_freeze(model, e, epochs, None) for e in range(epochs))


@pytest.mark.parametrize("freeze_at", [0.0, -0.5, 1.5, float("nan")])
def test_shift_freeze_rejects_bad_fraction(freeze_at: float) -> None:
    with pytest.raises(ConfigError):
        apply_shift_freeze(nn.Sequential(SparseShift2d(4)), 0, 10, freeze_at)
    with pytest.raises(ConfigError):
        build(SSLConfig, {"freeze_at": freeze_at})
    assert build(SSLConfig, {"freeze_at": 0.75}).freeze_at == 0.75
    assert build(SSLConfig, {}).freeze_at is None


def test_freeze_stops_displacements_under_momentum_and_weight_decay() -> None:
    """Shifts move while learning and are bit-identical after the freeze epoch, although SGD
    has momentum and weight decay on them; unfreezing (a resume before the freeze) moves them."""
    torch.manual_seed(0)
    shift = SparseShift2d(4, init="zeros")
    with torch.no_grad():
        shift.displacement.uniform_(-0.4, 0.4)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), shift, nn.Conv2d(4, 2, 3, padding=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, target = torch.randn(4, 3, 6, 6), torch.randn(4, 2, 6, 6)
    epochs, freeze_at, steps = 4, 0.5, 3

    def epoch_of_training(epoch: int) -> bool:
        frozen = apply_shift_freeze(model, epoch, epochs, freeze_at)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), target) + 1e-2 * ssl_penalty(model)
            loss.backward()
            opt.step()
        return frozen

    disp = [shift.displacement.detach().clone()]
    conv = [model[0].weight.detach().clone()]
    frozen = []
    for epoch in range(epochs):
        frozen.append(epoch_of_training(epoch))
        disp.append(shift.displacement.detach().clone())
        conv.append(model[0].weight.detach().clone())
    assert frozen == [False, False, True, True]
    for e in range(epochs):
        assert not torch.equal(conv[e], conv[e + 1])  # the network keeps training
    assert not torch.equal(disp[0], disp[1]) and not torch.equal(disp[1], disp[2])
    assert torch.equal(disp[2], disp[3]) and torch.equal(disp[3], disp[4])
    assert shift.displacement.grad is None
    assert torch.count_nonzero(opt.state[shift.displacement]["momentum_buffer"]) > 0
    # The check can fail: a zero gradient (instead of None) lets momentum and decay move them.
    shift.displacement.grad = torch.zeros_like(shift.displacement)
    opt.step()
    assert not torch.equal(shift.displacement.detach(), disp[4])
    # Resuming at an epoch before the freeze unfreezes: the shifts learn again.
    before = shift.displacement.detach().clone()
    assert epoch_of_training(1) is False and not shift.frozen
    assert not torch.equal(shift.displacement.detach(), before)


def _perturb_bn(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=gen))
                    m.bias.copy_(torch.randn(m.num_features, generator=gen))


@pytest.mark.parametrize("stride", [1, 2])
def test_deploy_equivalence(stride: int) -> None:
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    op = OPS["ssl_conv"](12, stride, True)
    shift = next(m for m in op.modules() if isinstance(m, SparseShift2d))
    with torch.no_grad():
        shift.displacement.add_(torch.randn(12, 2, generator=gen))
    _perturb_bn(op, gen)
    op.eval()
    x = torch.randn(2, 12, 9, 9, generator=gen)
    with torch.no_grad():
        ref = op(x)
    dep = to_deploy(op)
    assert not any(isinstance(m, SparseShift2d) for m in dep.modules())
    shifts = [m for m in dep.modules() if isinstance(m, IntegerShift2d)]
    assert len(shifts) == 1
    assert not shifts[0].shifts.is_floating_point()
    assert list(shifts[0].parameters()) == []
    with torch.no_grad():
        assert torch.allclose(dep(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_ssl_conv_param_count(affine: bool) -> None:
    C = 16
    op = OPS["ssl_conv"](C, 1, affine)
    displacement = 2 * C  # (α, β) per channel at e = 1
    bn = 2 * (2 * C) if affine else 0
    assert sum(p.numel() for p in op.parameters()) == 2 * C * C + displacement + bn
    weights = sum(m.weight.numel() for m in op.modules() if isinstance(m, nn.Conv2d))
    assert weights == 2 * C * C
    op6 = OPS["ssl_conv"](C, 1, False, expansion=6)
    weights6 = sum(m.weight.numel() for m in op6.modules() if isinstance(m, nn.Conv2d))
    assert weights6 == 12 * C * C


@pytest.mark.parametrize("stride,size,out_size", [(1, 8, 8), (2, 8, 4), (2, 7, 4)])
def test_ssl_conv_shapes_and_grads(stride: int, size: int, out_size: int) -> None:
    assert op_family("ssl_conv") == "ssl"
    op = OPS["ssl_conv"](8, stride, True)
    x = torch.randn(2, 8, size, size, requires_grad=True)
    y = op(x)
    assert tuple(y.shape) == (2, 8, out_size, out_size)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
