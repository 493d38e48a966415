"""DO-Conv / DO-DConv: parameter counts (from the paper's formulas), equivalence with the
plain conv at init, kernel composition, fp32 composition under autocast, deploy folding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.deploy import to_deploy
from nas.ops import OPS, DOConv2d


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


def _perturb(m: nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Give every D' a non-zero value so that D != I (otherwise folding is trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, DOConv2d) and mod.D_prime is not None:
                mod.D_prime.copy_(scale * torch.randn(mod.D_prime.shape, generator=g))


def _compose_loop(D: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Independent reference: W'[o, i, s] = sum_d D[i or o, s, d] * W[o, i, d], by loops."""
    C_out, C_in_g, d_mul = W.shape
    mn = D.shape[1]
    out = torch.zeros(C_out, C_in_g, mn, dtype=torch.float64)
    depthwise = C_in_g == 1 and D.shape[0] == C_out and C_out > 1
    for o in range(C_out):
        for i in range(C_in_g):
            Di = D[o] if depthwise else D[i]
            for s in range(mn):
                out[o, i, s] = sum(float(Di[s, d]) * float(W[o, i, d]) for d in range(d_mul))
    return out


# ---------------------------------------------------------------- parameter counts


def test_param_count_example_c64_k3() -> None:
    m = DOConv2d(64, 64, 3)
    assert n_params(m) == 64 * 64 * 9 + 64 * 9 * 9 == 42048
    assert {n for n, _ in m.named_parameters()} == {"W", "D_prime"}  # I is a buffer
    deployed = m.deploy_form()
    assert isinstance(deployed, nn.Conv2d)
    assert n_params(deployed) == 64 * 64 * 9 == 36864
    assert n_params(to_deploy(nn.Sequential(m))) == 36864


@pytest.mark.parametrize("C", [16, 36, 64])
def test_param_count_do_dconv(C: int) -> None:
    # W: C*1*9, D: C*9*9
    assert n_params(DOConv2d(C, C, 3, groups=C)) == 90 * C


@pytest.mark.parametrize(
    ("C_in", "C_out", "k", "d_mul", "groups"),
    [
        (8, 16, 3, 12, 1),
        (6, 6, 3, 20, 6),
        (4, 5, (3, 5), 16, 1),
    ],
)
def test_param_count_d_mul_larger(C_in, C_out, k, d_mul, groups) -> None:
    M, N = (k, k) if isinstance(k, int) else k
    m = DOConv2d(C_in, C_out, k, groups=groups, d_mul=d_mul)
    assert n_params(m) == C_out * (C_in // groups) * d_mul + C_in * M * N * d_mul
    # I: D_mul // (M*N) whole identity blocks, then zero columns (paper Sec. 4.5)
    assert torch.equal(m.D_eye, _identity_rule(M * N, d_mul))


def _identity_rule(mn: int, d_mul: int) -> torch.Tensor:
    """I[s, d] = 1 iff column d lies in a whole block (d < (d_mul // mn)*mn) and d % mn == s."""
    eye = torch.zeros(mn, d_mul)
    whole = (d_mul // mn) * mn
    for s in range(mn):
        for d in range(d_mul):
            eye[s, d] = float(d < whole and d % mn == s)
    return eye


@pytest.mark.parametrize(("d_mul", "blocks", "zero_cols"), [(25, 2, 7), (36, 4, 0)])
@pytest.mark.parametrize("groups", [1, 4])
def test_table8_d_mul_tiles_identity(d_mul: int, blocks: int, zero_cols: int, groups) -> None:
    """Paper Table 8 settings at 3x3: I tiles eye(9) as often as it fits (not one block)."""
    C_in, C_out = 4, 4 if groups > 1 else 5
    torch.manual_seed(0)
    m = DOConv2d(C_in, C_out, 3, groups=groups, d_mul=d_mul)
    # layout of I, per input channel (the buffer is broadcast over channels)
    full = m.D_eye.expand(C_in, 9, d_mul)
    assert full.shape == m.D_prime.shape == (C_in, 9, d_mul)
    for i in range(C_in):
        for k in range(blocks):
            assert torch.equal(full[i, :, 9 * k : 9 * (k + 1)], torch.eye(9))
        assert torch.count_nonzero(full[i, :, 9 * blocks :]) == 0
        assert full[i, :, 9 * blocks :].shape[1] == zero_cols
    assert int(m.D_eye.sum()) == 9 * blocks
    # params: C_out*(C_in/groups)*D_mul + C_in*M*N*D_mul
    assert n_params(m) == C_out * (C_in // groups) * d_mul + C_in * 9 * d_mul
    # at init (D' = 0): W'[o, i, s] = sum over the identity copies of W[o, i, 9k + s]
    W = m.W.detach().double()
    expected = torch.zeros(C_out, C_in // groups, 9, dtype=torch.float64)
    for o in range(C_out):
        for i in range(C_in // groups):
            for s in range(9):
                expected[o, i, s] = sum(float(W[o, i, 9 * k + s]) for k in range(blocks))
    expected = expected.reshape(C_out, C_in // groups, 3, 3)
    assert_close(m.composed_weight().double(), expected, rtol=1e-6, atol=1e-7)
    x = torch.randn(2, C_in, 7, 7)
    assert_close(m(x), F.conv2d(x, expected.float(), padding=1, groups=groups))
    # one identity copy only (the old layout) gives a different layer: the check can fail
    assert not torch.allclose(m.composed_weight().double(), W[..., :9].reshape_as(expected))
    # deploy fold equals the training form in eval, with D' != 0
    _perturb(m, scale=0.3)
    m.eval()
    deployed = to_deploy(m)
    assert type(deployed) is nn.Conv2d and n_params(deployed) == C_out * (C_in // groups) * 9
    assert_close(deployed(x), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d_mul", [9, 25, 36])
def test_init_variance_matches_conv_default(d_mul: int) -> None:
    """W' at init (a sum over the identity blocks) has nn.Conv2d's variance 1/(3*fan_in)."""
    torch.manual_seed(0)
    m = DOConv2d(64, 64, 3, d_mul=d_mul)
    var = m.composed_weight().detach().double().var().item()
    assert var == pytest.approx(1 / (3 * 64 * 9), rel=0.05)


def test_one_by_one_not_overparameterized() -> None:
    m = DOConv2d(8, 4, 1)
    assert m.D_prime is None and n_params(m) == 32
    x = torch.randn(2, 8, 5, 5)
    assert_close(m(x), F.conv2d(x, m.W.reshape(4, 8, 1, 1)))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        DOConv2d(8, 8, 3, groups=2)
    with pytest.raises(ValueError):
        DOConv2d(8, 16, 3, groups=8)  # depthwise needs C_in == C_out
    with pytest.raises(ValueError):
        DOConv2d(8, 8, 3, d_mul=8)  # d_mul < M*N


# ---------------------------------------------------------------- init and composition


@pytest.mark.parametrize("groups", [1, 6])
@pytest.mark.parametrize("d_mul", [None, 13])
def test_starts_equal_to_plain_conv(groups: int, d_mul: int | None) -> None:
    torch.manual_seed(0)
    m = DOConv2d(6, 6, 3, groups=groups, d_mul=d_mul)
    assert torch.count_nonzero(m.D_prime) == 0
    x = torch.randn(2, 6, 7, 7)
    kernel = m.W[..., :9].reshape(6, 6 // groups, 3, 3)
    assert_close(m(x), F.conv2d(x, kernel, padding=1, groups=groups))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(5, 7, 3, padding=1, bias=True),
        nn.Conv2d(5, 7, (3, 5), stride=2, padding=(2, 1), dilation=2, bias=False),
        nn.Conv2d(6, 6, 5, stride=2, padding=2, groups=6, bias=False),
        nn.Conv2d(4, 4, 3, padding="same", dilation=2),
    ],
)
def test_from_conv_equals_conv(conv: nn.Conv2d) -> None:
    torch.manual_seed(1)
    m = DOConv2d.from_conv(conv)
    x = torch.randn(2, conv.in_channels, 11, 10)
    assert_close(m(x), conv(x))
    assert_close(DOConv2d.from_conv(conv, d_mul=30)(x), conv(x))


def test_init_scale_matches_conv_default() -> None:
    torch.manual_seed(0)
    m = DOConv2d(64, 64, 3)
    bound = 1 / math.sqrt(64 * 9)  # nn.Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert m.W.abs().max() <= bound and m.W.abs().max() > 0.9 * bound


@pytest.mark.parametrize(
    ("C_in", "C_out", "groups", "d_mul"),
    [
        (3, 4, 1, 9),
        (3, 4, 1, 11),
        (4, 4, 4, 9),
        (4, 4, 4, 12),
    ],
)
def test_composition_matches_formula(C_in, C_out, groups, d_mul) -> None:
    torch.manual_seed(0)
    m = DOConv2d(C_in, C_out, 3, groups=groups, d_mul=d_mul)
    _perturb(m, scale=0.5)
    D = (m.D_prime + m.D_eye).detach().double()
    expected = _compose_loop(D, m.W.detach().double()).reshape(C_out, C_in // groups, 3, 3)
    assert_close(m.composed_weight().double(), expected)


@pytest.mark.parametrize("groups", [1, 5])
def test_stride_dilation_padding(groups: int) -> None:
    torch.manual_seed(0)
    m = DOConv2d(5, 5, (3, 5), stride=(2, 1), padding=(1, 3), dilation=(1, 2), groups=groups)
    _perturb(m)
    x = torch.randn(2, 5, 9, 12)
    y = m(x)
    # H: (9 + 2 - 3) // 2 + 1 = 5; W: (12 + 6 - 2*4 - 1) // 1 + 1 = 10
    assert y.shape == (2, 5, 5, 10)
    ref = F.conv2d(x, m.composed_weight(), None, (2, 1), (1, 3), (1, 2), groups)
    assert_close(y, ref)


@pytest.mark.parametrize(("k", "dilation"), [(3, 1), (5, 1), (3, 2), (5, 2)])
def test_default_padding_is_same(k: int, dilation: int) -> None:
    m = DOConv2d(3, 4, k, dilation=dilation)
    assert m(torch.randn(1, 3, 9, 9)).shape == (1, 4, 9, 9)


def test_grads_reach_w_and_d_prime() -> None:
    torch.manual_seed(0)
    for m in (DOConv2d(4, 6, 3, bias=True), DOConv2d(4, 4, 3, groups=4, d_mul=12)):
        m(torch.randn(2, m.in_channels, 6, 6)).square().sum().backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


# ---------------------------------------------------------------- mixed precision


def test_composition_in_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    m = DOConv2d(4, 4, 3)
    with torch.no_grad():
        m.D_prime.copy_(1e-3 * m.D_eye)  # small, as early in training: W' = 1.001 W
    ref = m.composed_weight()  # fp32, no autocast
    assert_close(ref, 1.001 * m.W.reshape(4, 4, 3, 3), rtol=1e-6, atol=0)
    # The test can fail: in bf16, 1 + 1e-3 rounds to 1 and D' is lost entirely.
    assert torch.equal((m.D_prime + m.D_eye).bfloat16(), m.D_eye.bfloat16().expand(4, 9, 9))
    x = torch.randn(2, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = m.composed_weight()
        y = m(x)
    assert w.dtype == torch.float32
    assert_close(w, ref, rtol=0, atol=0)
    assert y.dtype == torch.bfloat16
    assert_close(y.float(), m(x), rtol=2e-2, atol=2e-2)


def test_bf16_module_casts_weight_to_input_dtype() -> None:
    m = DOConv2d(4, 4, 3).bfloat16()
    y = m(torch.randn(1, 4, 5, 5, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


# ---------------------------------------------------------------- deploy


@pytest.mark.parametrize(("groups", "d_mul", "bias"), [(1, None, False), (6, 12, True)])
def test_deploy_equivalence_after_training_step(groups: int, d_mul: int | None, bias) -> None:
    torch.manual_seed(0)
    m = DOConv2d(6, 6, 3, stride=2, groups=groups, d_mul=d_mul, bias=bias)
    x = torch.randn(4, 6, 9, 9)
    before = m(x).detach()
    F.mse_loss(m(x), torch.randn_like(before)).backward()
    with torch.no_grad():  # one SGD step (torch.optim's first step costs seconds of imports)
        for p in m.parameters():
            p -= 0.5 * p.grad
    assert torch.count_nonzero(m.D_prime) > 0  # D != I: the fold is non-trivial
    after = m(x).detach()
    assert not torch.allclose(after, before)
    deployed = to_deploy(m)
    assert type(deployed) is nn.Conv2d
    assert_close(deployed(x), after, rtol=1e-5, atol=1e-5)
    # folding W alone (ignoring D') would be wrong: the check can fail
    kernel_w_only = m.W.detach()[..., :9].reshape(6, 6 // groups, 3, 3)
    assert not torch.allclose(F.conv2d(x, kernel_w_only, m.bias, 2, 1, 1, groups), after)


# ---------------------------------------------------------------- registry ops


@pytest.mark.parametrize("name", ["do_conv_3x3", "do_sep_conv_3x3"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_registry_shapes(name: str, stride: int, hw: tuple[int, int]) -> None:
    op = OPS[name](6, stride, True)
    y = op(torch.randn(2, 6, *hw))
    assert y.shape == (2, 6, math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))


@pytest.mark.parametrize("C", [16, 36])
def test_registry_param_counts(C: int) -> None:
    # ReLU -> DO-Conv 3x3 (9C^2 + 81C) -> BN (2C)
    assert n_params(OPS["do_conv_3x3"](C, 1, True)) == 9 * C * C + 81 * C + 2 * C
    # sep_conv_3x3 with DO-DConv depthwise: 2 * (90C + C^2 + 2C)
    assert n_params(OPS["do_sep_conv_3x3"](C, 2, True)) == 2 * (90 * C + C * C + 2 * C)
    # deployed: the DARTS sep_conv_3x3 count 2 * (9C + C^2 + 2C)
    deployed = to_deploy(OPS["do_sep_conv_3x3"](C, 1, True))
    assert n_params(deployed) == n_params(OPS["sep_conv_3x3"](C, 1, True))


@pytest.mark.parametrize("name", ["do_conv_3x3", "do_sep_conv_3x3"])
def test_registry_deploy_equivalence(name: str) -> None:
    torch.manual_seed(0)
    op = OPS[name](6, 2, True)
    _perturb(op)
    x = torch.randn(2, 6, 9, 9)
    op.train()
    op(x)  # update BN running stats
    op.eval()
    deployed = to_deploy(op)
    assert not any(isinstance(mod, DOConv2d) for mod in deployed.modules())
    assert_close(deployed(x), op(x), rtol=1e-5, atol=1e-5)
