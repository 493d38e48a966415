"""osep: solver, parameter counts and the dense-Jacobian invariant, figures from OPERATORS.md."""

from __future__ import annotations

import math

import pytest
import torch

from nas.ops import OPS, OSepConv2d, solve_osep_groups
from nas.ops.osep import channel_shuffle


def formula_params(c_in: int, c2: int, c_out: int, k1: int, k2: int, g1: int, g2: int) -> int:
    return c2 * (c_in // g1) * k1 + c_out * (c2 // g2) * k2


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_worked_example_c64_k3() -> None:
    assert solve_osep_groups(64, 64, 64, 9, 1) == (32, 2)
    layer = OSepConv2d(64, 64, 3)
    assert (layer.g1, layer.g2) == (32, 2)
    assert n_params(layer) == formula_params(64, 64, 64, 9, 1, 32, 2) == 64 * 2 * 9 + 64 * 32
    assert n_params(layer) == 3200
    # The runner-up named in the spec, and the baselines it beats.
    assert formula_params(64, 64, 64, 9, 1, 16, 4) == 3328
    assert 3200 < 64 * 9 + 64 * 64 < 64 * 64 * 9  # depthwise-separable 4672, conv3x3 36864


def test_tie_c18_takes_larger_g1() -> None:
    # OPERATORS.md: (9, 2) and (18, 1) tie at C = 18, K = 3; on an exact tie the larger g1.
    assert formula_params(18, 18, 18, 9, 1, 9, 2) == formula_params(18, 18, 18, 9, 1, 18, 1)
    assert 9 * 18 == 18 * 18 * 9 / 18  # tied g1 values multiply to g1*^2
    assert solve_osep_groups(18, 18, 18, 9, 1) == (18, 1)


@pytest.mark.parametrize("c", range(1, 17))
def test_small_c_degenerates_to_depthwise_separable(c: int) -> None:
    assert solve_osep_groups(c, c, c, 9, 1) == (c, 1)


def test_spatial_separable_worked_example() -> None:
    assert solve_osep_groups(64, 64, 64, 3, 3) == (8, 8)
    layer = OSepConv2d(64, 64, 3, spatial_separable=True)
    assert (layer.g1, layer.g2) == (8, 8)
    assert n_params(layer) == 64 * 8 * 3 + 64 * 8 * 3 == 3072
    assert layer.conv1.kernel_size == (3, 1) and layer.conv2.kernel_size == (1, 3)


def brute_force(c_in: int, c2: int, c_out: int, k1: int, k2: int) -> tuple[int, int]:
    """Independent enumeration over all integers (not divisors); ties to the larger g1."""
    pairs = [
        (g1, g2)
        for g1 in range(1, min(c_in, c2) + 1)
        for g2 in range(1, min(c2, c_out) + 1)
        if not (c_in % g1 or c2 % g1 or c2 % g2 or c_out % g2) and g1 * g2 <= c2
    ]
    fewest = min(formula_params(c_in, c2, c_out, k1, k2, *p) for p in pairs)
    tied = [p for p in pairs if formula_params(c_in, c2, c_out, k1, k2, *p) == fewest]
    return max(tied, key=lambda p: (p[0], p[1]))


@pytest.mark.parametrize("k1, k2", [(9, 1), (25, 1), (3, 3)])
def test_solver_sweep(k1: int, k2: int) -> None:
    cases = [(c, c, c) for c in range(1, 97)] + [(16, 16, 32), (32, 32, 64), (48, 24, 24)]
    for c_in, c2, c_out in cases:
        g1, g2 = solve_osep_groups(c_in, c2, c_out, k1, k2)
        assert c_in % g1 == 0 and c2 % g1 == 0 and c2 % g2 == 0 and c_out % g2 == 0
        assert g1 <= min(c_in, c2) and g2 <= min(c2, c_out)
        assert g1 * g2 <= c2  # channel condition, gamma = 1
        assert (g1, g2) == brute_force(c_in, c2, c_out, k1, k2), (c_in, c2, c_out)


def test_paper_rounding_would_break_channel_condition() -> None:
    g1, g2 = solve_osep_groups(64, 64, 64, 9, 1)
    assert 24 * 3 > 64 and g1 * g2 <= 64


def test_channel_shuffle_permutation() -> None:
    c, g = 12, 3
    x = torch.arange(c, dtype=torch.float32).view(1, c, 1, 1)
    y = channel_shuffle(x, g).flatten().tolist()
    # Output position a*g + b holds input channel b*(c/g) + a.
    expected = [float(b * (c // g) + a) for a in range(c // g) for b in range(g)]
    assert y == expected


def jacobian_at(layer: torch.nn.Module, c_in: int, size: int = 7) -> torch.Tensor:
    """|d out[:, centre] / d input|, shape (C_out, C_in, size, size)."""
    torch.manual_seed(0)
    layer = layer.double()
    x = torch.randn(1, c_in, size, size, dtype=torch.float64)
    centre = size // 2
    jac = torch.autograd.functional.jacobian(lambda t: layer(t)[0, :, centre, centre], x)
    return jac[:, 0].abs()


@pytest.mark.parametrize(
    "c, k, spatial", [(64, 3, False), (18, 3, False), (64, 3, True), (32, 5, False)]
)
def test_jacobian_dense_over_channels_and_window(c: int, k: int, spatial: bool) -> None:
    layer = OSepConv2d(c, c, k, spatial_separable=spatial)
    jac = jacobian_at(layer, c)
    lo, hi = 3 - k // 2, 3 + k // 2 + 1
    assert torch.all(jac[:, :, lo:hi, lo:hi] > 0)  # every (out, in, window position)
    outside = jac.clone()
    outside[:, :, lo:hi, lo:hi] = 0
    assert torch.all(outside == 0)  # and nothing beyond the K x K window


def test_gamma_below_one_breaks_density() -> None:
    g1, g2 = solve_osep_groups(64, 64, 64, 9, 1, gamma=0.5)
    assert g1 * g2 > 64  # channel condition with gamma = 1 violated
    layer = OSepConv2d(64, 64, 3, gamma=0.5)
    assert (layer.g1, layer.g2) == (g1, g2)
    connected = jacobian_at(layer, 64)[:, :, 2:5, 2:5].amax(dim=(-1, -2)) > 0
    assert not connected.all()
    # Each output sees only C2/g2 shuffled channels, one from each of C2/g2 first-conv groups.
    assert connected.sum(1).max().item() == (64 // g2) * (64 // g1)


def test_groups_override_validation() -> None:
    assert (OSepConv2d(16, 16, groups=(4, 4)).g1, OSepConv2d(16, 16, groups=(4, 4)).g2) == (4, 4)
    with pytest.raises(ValueError, match="divide"):
        OSepConv2d(16, 16, groups=(3, 1))


def test_internal_channels_default_is_min() -> None:
    layer = OSepConv2d(16, 32, 3)
    assert layer.internal_channels == 16
    assert layer(torch.randn(1, 16, 5, 5)).shape == (1, 32, 5, 5)


@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("size", [7, 32])
def test_stride2_shapes(spatial: bool, k: int, size: int) -> None:
    layer = OSepConv2d(16, 16, k, stride=2, spatial_separable=spatial)
    out = math.ceil(size / 2)
    assert layer(torch.randn(1, 16, size, size)).shape == (1, 16, out, out)


@pytest.mark.parametrize("name, k", [("osep_conv_3x3", 3), ("osep_conv_5x5", 5)])
@pytest.mark.parametrize("stride", [1, 2])
def test_registry_op(name: str, k: int, stride: int) -> None:
    C, size = 16, 7
    op = OPS[name](C, stride, True)
    g1, g2 = solve_osep_groups(C, C, C, k * k, 1)
    assert n_params(op) == 2 * (formula_params(C, C, C, k * k, 1, g1, g2) + 2 * C)
    x = torch.randn(2, C, size, size, requires_grad=True)
    y = op(x)
    assert y.shape == (2, C, math.ceil(size / stride), math.ceil(size / stride))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in op.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_registry_op_c64_params() -> None:
    op = OPS["osep_conv_3x3"](64, 1, True)
    assert n_params(op) == 2 * (3200 + 2 * 64)
