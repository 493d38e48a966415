"""DARTS candidate operations: shapes, parameter counts (from formulas), values, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.ops import OPS
from nas.ops.primitives import DilConv, FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero

DARTS_OPS = [
    "none",
    "skip_connect",
    "max_pool_3x3",
    "avg_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_7x1_1x7",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation cost (and stall on busy CPUs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Like torch.testing.assert_close (whose first call costs ~1 s of imports)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"max abs diff {diff}"


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_all_darts_ops_registered() -> None:
    assert set(DARTS_OPS) <= set(OPS)


@pytest.mark.parametrize("name", DARTS_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(8, 8), (7, 7), (9, 6)])
def test_shapes(name: str, stride: int, hw: tuple[int, int]) -> None:
    C = 6
    op = OPS[name](C, stride, True)
    y = op(torch.randn(2, C, *hw))
    assert y.shape == (2, C, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))


def _bn(C: int, affine: bool) -> int:
    return 2 * C if affine else 0


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("C", [16, 36])
def test_param_counts(C: int, affine: bool) -> None:
    expected = {
        "none": 0,
        "max_pool_3x3": 0,
        "avg_pool_3x3": 0,
        # two units of (depthwise k*k*C + pointwise C*C + BN)
        "sep_conv_3x3": 2 * (9 * C + C * C + _bn(C, affine)),
        "sep_conv_5x5": 2 * (25 * C + C * C + _bn(C, affine)),
        "sep_conv_7x7": 2 * (49 * C + C * C + _bn(C, affine)),
        # one unit of (dilated depthwise k*k*C + pointwise C*C + BN)
        "dil_conv_3x3": 9 * C + C * C + _bn(C, affine),
        "dil_conv_5x5": 25 * C + C * C + _bn(C, affine),
        # 1x7 dense + 7x1 dense + BN
        "conv_7x1_1x7": 7 * C * C + 7 * C * C + _bn(C, affine),
    }
    for stride in (1, 2):
        for name, count in expected.items():
            assert n_params(OPS[name](C, stride, affine)) == count, (name, stride)
    assert n_params(OPS["skip_connect"](C, 1, affine)) == 0
    # FactorizedReduce: two 1x1 convs C -> C/2 each, then BN(C)
    assert n_params(OPS["skip_connect"](C, 2, affine)) == 2 * C * (C // 2) + _bn(C, affine)


def test_relu_conv_bn_params_and_shape() -> None:
    m = ReLUConvBN(8, 12, 1, 1, 0, affine=True)
    assert n_params(m) == 8 * 12 + 2 * 12
    assert m(torch.randn(2, 8, 5, 5)).shape == (2, 12, 5, 5)


def test_skip_connect_types() -> None:
    assert isinstance(OPS["skip_connect"](4, 1, True), Identity)
    assert isinstance(OPS["skip_connect"](4, 2, True), FactorizedReduce)
    x = torch.randn(1, 4, 5, 5)
    assert OPS["skip_connect"](4, 1, True)(x) is x


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_output_is_zero_and_strided(stride: int) -> None:
    x = torch.randn(2, 3, 7, 8, requires_grad=True)
    y = Zero(stride)(x)
    assert y.shape == (2, 3, math.ceil(7 / stride), math.ceil(8 / stride))
    assert torch.count_nonzero(y) == 0
    y.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_avg_pool_excludes_padding() -> None:
    y = OPS["avg_pool_3x3"](2, 1, True)(torch.ones(1, 2, 4, 4))
    # count_include_pad=True would give 4/9 in the corners
    assert torch.allclose(y, torch.ones_like(y))


def _fr_reference(fr: FactorizedReduce, x: torch.Tensor) -> torch.Tensor:
    """Independent formula: 1x1 convs at the even and the odd pixels, zeros past the edge."""
    r = x.clamp_min(0)
    a = torch.einsum("oi,nihw->nohw", fr.conv_1.weight[:, :, 0, 0], r[:, :, ::2, ::2])
    b_core = torch.einsum("oi,nihw->nohw", fr.conv_2.weight[:, :, 0, 0], r[:, :, 1::2, 1::2])
    b = a.new_zeros(a.shape[0], b_core.shape[1], *a.shape[-2:])
    b[:, :, : b_core.shape[-2], : b_core.shape[-1]] = b_core
    return fr.bn(torch.cat([a, b], dim=1))


@pytest.mark.parametrize("hw", [(8, 8), (7, 7), (7, 8), (8, 9)])
def test_factorized_reduce_values(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    fr = FactorizedReduce(4, 6).eval()
    x = torch.randn(2, 4, *hw)
    y = fr(x)
    assert y.shape == (2, 6, math.ceil(hw[0] / 2), math.ceil(hw[1] / 2))
    assert_close(y, _fr_reference(fr, x))


def test_factorized_reduce_odd_channels() -> None:
    fr = FactorizedReduce(5, 7)
    assert fr(torch.randn(2, 5, 6, 6)).shape == (2, 7, 3, 3)
    assert n_params(fr) == 5 * 4 + 5 * 3 + 2 * 7


def test_sep_conv_structure() -> None:
    m = SepConv(8, 8, 3, 2, 1)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    # dw(stride) -> pw -> dw -> pw, as in DARTS
    assert [c.groups for c in convs] == [8, 1, 8, 1]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert sum(isinstance(c, nn.ReLU) for c in m.modules()) == 2
    assert sum(isinstance(c, nn.BatchNorm2d) for c in m.modules()) == 2


def test_dil_conv_structure() -> None:
    m = DilConv(8, 8, 5, 1, 4, 2)
    dw = next(c for c in m.modules() if isinstance(c, nn.Conv2d))
    assert dw.dilation == (2, 2) and dw.groups == 8


def test_sep_conv_depthwise_factory_is_used() -> None:
    made: list[tuple[int, int, int, int, int]] = []

    def factory(C: int, k: int, s: int, p: int, d: int) -> nn.Module:
        made.append((C, k, s, p, d))
        return nn.Conv2d(C, C, k, s, p, d, groups=C, bias=False)

    SepConv(4, 4, 3, 2, 1, depthwise=factory)
    assert made == [(4, 3, 2, 1, 1), (4, 3, 1, 1, 1)]


def test_conv_7x1_1x7_matches_formula() -> None:
    torch.manual_seed(0)
    op = OPS["conv_7x1_1x7"](3, 2, True).eval()
    x = torch.randn(1, 3, 9, 9)
    c1, c2, bn = op[1], op[2], op[3]
    ref = F.conv2d(x.relu(), c1.weight, stride=(1, 2), padding=(0, 3))
    ref = bn(F.conv2d(ref, c2.weight, stride=(2, 1), padding=(3, 0)))
    assert_close(op(x), ref)


@pytest.mark.parametrize("name", [n for n in DARTS_OPS if n != "none"])
@pytest.mark.parametrize("stride", [1, 2])
def test_grads_flow(name: str, stride: int) -> None:
    torch.manual_seed(0)
    op = OPS[name](4, stride, True)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    op(x).square().sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert torch.count_nonzero(p.grad) > 0, pname
