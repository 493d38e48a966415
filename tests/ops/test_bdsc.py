"""BDSC (balance decoupling spatial convolution): figures from OPERATORS.md, computed here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.deploy import to_deploy
from nas.ops import OPS, op_family
from nas.ops.bdsc import BDSCConv2d, BDSCDeploy2d, clamp_bdsc_


def _perturb_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BN non-trivial running stats and affine params, so eval != identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=gen))
                    m.bias.copy_(torch.randn(m.num_features, generator=gen))


def test_param_count_matches_formula() -> None:
    C, p, K = 64, 1, 3
    S = p * C
    expected = C * S + C * S * K * K  # 1x1 floats + KxK latent Q
    assert expected == 40960
    m = BDSCConv2d(C, C, K)
    assert sum(t.numel() for t in m.parameters()) == expected
    assert m.model_bytes() == 4 * expected


def test_deploy_bytes_vs_conv3x3() -> None:
    C, K = 64, 3
    S = C
    expected = 4 * C * S + math.ceil(C * S * K * K / 8) + 4 * C  # floats + mask bits + alpha
    assert expected == 21248
    dep = to_deploy(BDSCConv2d(C, C, K))
    assert isinstance(dep, BDSCDeploy2d)
    assert dep.model_bytes() == expected
    conv_bytes = 4 * sum(t.numel() for t in nn.Conv2d(C, C, K, padding=1, bias=False).parameters())
    assert conv_bytes == 147456
    assert conv_bytes / expected > 6.9  # tends to 1/(1/32 + 1/9) ≈ 7


def test_expansion_sets_mid_channels() -> None:
    m = BDSCConv2d(16, 24, 3, expansion=0.5)
    assert m.mid_channels == 8
    assert tuple(m.Q.shape) == (24, 8, 3, 3)
    assert tuple(m(torch.randn(2, 16, 9, 9)).shape) == (2, 24, 9, 9)


def test_deploy_masks_are_binary_and_follow_sign() -> None:
    m = BDSCConv2d(8, 12, 3)
    with torch.no_grad():
        m.Q[0, 0, 1, 1] = 0.0  # sign(0) = +1 -> mask 1
    dep = m.deploy_form()
    assert dep.mask.dtype in (torch.bool, torch.uint8)
    assert set(torch.unique(dep.mask.to(torch.int64)).tolist()) <= {0, 1}
    assert torch.equal(dep.mask.bool(), m.Q.detach() >= 0)
    assert bool(dep.mask[0, 0, 1, 1])
    assert torch.allclose(dep.alpha, m.Q.detach().abs().mean(dim=(1, 2, 3)))


def test_binary_weight_is_alpha_sign() -> None:
    m = BDSCConv2d(4, 6, 3)
    with torch.no_grad():
        m.Q[2, 1, 0, 0] = 0.0
    q = m.Q.detach()
    alpha = q.abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    sign = torch.where(q >= 0, 1.0, -1.0)
    assert torch.allclose(m.binary_weight(), alpha * sign)
    assert m.binary_weight()[2, 1, 0, 0] > 0


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("expansion", [1.0, 0.5])
def test_deploy_equals_training_in_eval(stride: int, expansion: float) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    op = OPS["bdsc_conv_3x3"](16, stride, True, expansion=expansion)
    _perturb_bn(op, gen)
    op.eval()
    x = torch.randn(3, 16, 11, 11, generator=gen)
    with torch.no_grad():
        ref = op(x)
    dep = to_deploy(op)
    assert not any(isinstance(m, BDSCConv2d) for m in dep.modules())
    assert any(isinstance(m, BDSCDeploy2d) for m in dep.modules())
    with torch.no_grad():
        out = dep(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_deploy_equals_training_with_bias_and_padding() -> None:
    torch.manual_seed(1)
    m = BDSCConv2d(6, 5, 3, stride=2, padding=0, bias=True)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(2, 6, 10, 10)
    with torch.no_grad():
        assert torch.allclose(m.deploy_form()(x), m(x), rtol=1e-4, atol=1e-4)


def test_ste_gradient_equals_grad_wrt_binary_kernel() -> None:
    torch.manual_seed(2)
    m = BDSCConv2d(8, 8, 3)
    x = torch.randn(2, 8, 7, 7)
    w = torch.randn(2, 8, 7, 7)
    (m(x) * w).sum().backward()
    # Reference: the same computation with Q̃ as a leaf tensor.
    q = m.Q.detach()
    q_tilde = q.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.where(q >= 0, 1.0, -1.0)
    q_tilde.requires_grad_(True)
    z = F.conv2d(x, m.pointwise.weight.detach())
    (F.conv2d(z, q_tilde, padding=1) * w).sum().backward()
    assert torch.allclose(m.Q.grad, q_tilde.grad, rtol=1e-5, atol=1e-6)


def test_clamp_bdsc_and_forward_never_mutates_q() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(BDSCConv2d(4, 4, 3), nn.ReLU(), BDSCConv2d(4, 4, 3))
    for m in model:
        if isinstance(m, BDSCConv2d):
            assert m.Q.abs().max() <= 1.0  # clamped once at init
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.Q.mul_(5.0)
    before = [model[0].Q.detach().clone(), model[2].Q.detach().clone()]
    model(torch.randn(1, 4, 5, 5)).sum().backward()
    assert torch.equal(model[0].Q, before[0]) and torch.equal(model[2].Q, before[1])
    clamp_bdsc_(model)
    for m, b in zip((model[0], model[2]), before):
        assert m.Q.abs().max() <= 1.0
        assert torch.equal(m.Q.detach(), b.clamp(-1, 1))


@pytest.mark.parametrize("stride,size,out_size", [(1, 8, 8), (2, 8, 4), (2, 7, 4), (1, 7, 7)])
def test_registry_op_shapes_and_grads(stride: int, size: int, out_size: int) -> None:
    assert op_family("bdsc_conv_3x3") == "bdsc"
    op = OPS["bdsc_conv_3x3"](12, stride, False)
    assert [type(m) for m in op] == [nn.ReLU, BDSCConv2d, nn.BatchNorm2d]
    x = torch.randn(2, 12, size, size, requires_grad=True)
    y = op(x)
    assert tuple(y.shape) == (2, 12, out_size, out_size)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _trained_like(dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    """ReLU -> BDSC -> BN and a bare BDSCConv2d (with bias), cast to ``dtype``, in eval."""
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    model = nn.Sequential(
        OPS["bdsc_conv_3x3"](8, 2, True), BDSCConv2d(8, 6, 3, bias=True, expansion=1.5)
    )
    _perturb_bn(model, gen)
    with torch.no_grad():
        model[1].bias.normal_(generator=gen)
    x = torch.randn(2, 8, 9, 9, generator=gen)
    return model.to(dtype).eval(), x.to(dtype)


def test_deploy_keeps_float64() -> None:
    """A float64 model deploys as float64 and matches the training form to fp64 rounding."""
    model, x = _trained_like(torch.float64)
    dep = to_deploy(model)
    deployed = [m for m in dep.modules() if isinstance(m, BDSCDeploy2d)]
    assert len(deployed) == 2
    for m in deployed:
        assert m.pointwise.weight.dtype == m.alpha.dtype == torch.float64
    with torch.no_grad():
        ref, out = model(x), dep(x)
    assert out.dtype == torch.float64
    assert (out - ref).abs().max().item() <= 1e-10
    # α stored in fp32 (the old deploy form) is off by ~1e-8 relative: the check can fail
    for m in deployed:
        m.alpha.copy_(m.alpha.float())
    with torch.no_grad():
        assert (dep(x) - ref).abs().max().item() > 1e-10


def test_deploy_keeps_bfloat16() -> None:
    """A bf16 model deploys as bf16 and stays close to the training form at bf16 precision."""
    model, x = _trained_like(torch.bfloat16)
    dep = to_deploy(model)
    for m in dep.modules():
        if isinstance(m, BDSCDeploy2d):
            assert m.pointwise.weight.dtype == m.alpha.dtype == torch.bfloat16
    with torch.no_grad():
        ref, out = model(x), dep(x)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    scale = ref.float().abs().max().item()
    assert (out.float() - ref.float()).abs().max().item() <= 3e-2 * scale
