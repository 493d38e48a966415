"""C2sp / C4sp: paper properties with figures taken from OPERATORS.md, not from the code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nas.ops import OPS, C2spConv2d

# (top, bottom, left, right) extra pixel per group, copied from OPERATORS.md.
TABLE = [(0, 1, 0, 1), (1, 0, 1, 0), (0, 1, 1, 0), (1, 0, 0, 1)]


def ones_layer(c_in: int, k: int = 2, stride: int = 1, **kwargs) -> C2spConv2d:
    layer = C2spConv2d(c_in, 1, k, stride=stride, **kwargs)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    return layer


def reference(x: torch.Tensor, weight: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """Four separate F.pad calls (argument order left, right, top, bottom), then one conv."""
    groups = x.chunk(4, dim=1)  # C_in divisible by 4 here
    padded = []
    for g, (top, bottom, left, right) in zip(groups, TABLE):
        side = [k // 2 if flag else k // 2 - 1 for flag in (left, right, top, bottom)]
        padded.append(F.pad(g, side))
    return F.conv2d(torch.cat(padded, 1), weight, stride=stride)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_param_count(k: int, bias: bool) -> None:
    c_in, c_out = 12, 20
    layer = C2spConv2d(c_in, c_out, k, bias=bias)
    expected = c_out * c_in * k * k + (c_out if bias else 0)
    assert sum(p.numel() for p in layer.parameters()) == expected


@pytest.mark.parametrize("k", [1, 3, 5, 6])
def test_rejects_other_kernel_sizes(k: int) -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        C2spConv2d(8, 8, k)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_matches_per_group_pad_reference(k: int, stride: int, size: int) -> None:
    torch.manual_seed(0)
    layer = C2spConv2d(8, 5, k, stride=stride)
    x = torch.randn(2, 8, size, size + 1)
    torch.testing.assert_close(layer(x), reference(x, layer.weight, k, stride))


@pytest.mark.parametrize("size", [3, 5, 6])
def test_stride1_symmetry_and_worked_values(size: int) -> None:
    y = ones_layer(8)(torch.ones(1, 8, size, size))[0, 0]
    assert y.shape == (size, size)
    assert torch.equal(y, y.flip(-1))
    assert torch.equal(y, y.flip(-2))
    for corner in (y[0, 0], y[0, -1], y[-1, 0], y[-1, -1]):
        assert corner.item() == 18
    for edge in (y[0, 1:-1], y[-1, 1:-1], y[1:-1, 0], y[1:-1, -1]):
        assert torch.all(edge == 24)
    assert torch.all(y[1:-1, 1:-1] == 32)


def test_c4sp_stride1_symmetry() -> None:
    y = ones_layer(8, k=4)(torch.ones(1, 8, 7, 7))[0, 0]
    assert torch.equal(y, y.flip(-1)) and torch.equal(y, y.flip(-2))
    assert y[3, 3].item() == 8 * 16  # interior: whole 4x4 window inside


def test_asymmetric_c2_is_not_symmetric() -> None:
    y = ones_layer(8, asymmetric=True)(torch.ones(1, 8, 6, 6))[0, 0]
    assert not torch.equal(y, y.flip(-1))
    assert not torch.equal(y, y.flip(-2))


def test_impulse_in_every_group() -> None:
    x = torch.zeros(1, 4, 5, 5)
    x[0, :, 2, 2] = 1.0  # one channel of each group
    y = ones_layer(4)(x)[0, 0]
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])
    torch.testing.assert_close(y, expected)


def impulse_footprint(top: int, left: int, k: int, r: int = 3, c: int = 3) -> torch.Tensor:
    """Output rows/cols an input impulse at (r, c) reaches with `top`/`left` padding pixels."""
    out = torch.zeros(7, 7)
    out[r + top - k + 1 : r + top + 1, c + left - k + 1 : c + left + 1] = 1.0
    return out


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("group", range(4))
def test_each_group_padded_towards_its_corner(k: int, group: int) -> None:
    """Catches the F.pad order trap (which swaps groups 2 and 3)."""
    x = torch.zeros(1, 8, 7, 7)
    x[0, 2 * group, 3, 3] = 1.0
    y = ones_layer(8, k=k)(x)[0, 0]
    top, _, left, _ = TABLE[group]
    px = [k // 2 if flag else k // 2 - 1 for flag in (top, left)]
    torch.testing.assert_close(y, impulse_footprint(px[0], px[1], k))


def test_uneven_split_warns_and_gives_extra_channels_to_first_groups() -> None:
    # C_in = 6: groups (2, 2, 1, 1), so channel 4 is group 2 and channel 5 is group 3.
    with pytest.warns(UserWarning, match="multiple of 4"):
        layer = ones_layer(6)
    for channel, group in [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 3)]:
        x = torch.zeros(1, 6, 7, 7)
        x[0, channel, 3, 3] = 1.0
        top, _, left, _ = TABLE[group]
        torch.testing.assert_close(layer(x)[0, 0], impulse_footprint(top, left, 2))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("size", [31, 32, 33])
def test_stride2_output_size(k: int, size: int) -> None:
    y = C2spConv2d(4, 6, k, stride=2)(torch.randn(1, 4, size, size))
    assert y.shape == (1, 6, math.ceil(size / 2), math.ceil(size / 2))


def test_stride2_is_not_symmetric() -> None:
    y = ones_layer(8, stride=2)(torch.ones(1, 8, 32, 32))[0, 0]
    assert y.shape == (16, 16)
    assert y[0, 0].item() == 18 and y[-1, -1].item() == 32


def test_channels_last_input() -> None:
    torch.manual_seed(0)
    layer = C2spConv2d(8, 4, 2)
    x = torch.randn(2, 8, 6, 6)
    y = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, layer(x))


@pytest.mark.parametrize("name, k", [("c2sp_conv_2x2", 2), ("c4sp_conv_4x4", 4)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_registry_op(name: str, k: int, stride: int, size: int) -> None:
    C = 8
    op = OPS[name](C, stride, True)
    assert sum(p.numel() for p in op.parameters()) == C * C * k * k + 2 * C
    x = torch.randn(2, C, size, size, requires_grad=True)
    y = op(x)
    assert y.shape == (2, C, math.ceil(size / stride), math.ceil(size / stride))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in op.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_registry_op_without_affine() -> None:
    op = OPS["c2sp_conv_2x2"](8, 1, False)
    assert sum(p.numel() for p in op.parameters()) == 8 * 8 * 4
