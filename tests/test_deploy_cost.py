"""Deploy conversion over every op and a whole network; costs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.cost import count_bytes, count_macs, count_params, measure_latency
from nas.deploy import deployable_modules, to_deploy
from nas.network import NetworkCIFAR
from nas.ops import OPS, list_ops


def _perturb_bn(model: nn.Module) -> None:
    """Random BN statistics so a wrong fold cannot hide behind identity BN."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _train_one_step(model: nn.Module, x: torch.Tensor) -> None:
    """Move every parameter off its init (DO-Conv's D' leaves zero, SSL shifts move)."""
    params = list(model.parameters())
    if not params:
        return
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    out.square().mean().backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= 0.05 * p.grad


@pytest.mark.parametrize("name", list_ops())
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_shape_grad_deploy(name, stride):
    torch.manual_seed(0)
    op = OPS[name](8, stride, True)
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    y = op(x)
    assert y.shape == (2, 8, 5, 5) if stride == 2 else (2, 8, 9, 9)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    if name != "none":
        assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None, pname
    _train_one_step(op, x.detach())
    _perturb_bn(op)
    op.eval()
    deployed = to_deploy(op)
    assert not deployable_modules(deployed)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), op(x), rtol=1e-4, atol=1e-5)


def test_whole_network_deploy_equivalence(all_paper_ops):
    torch.manual_seed(0)
    model = NetworkCIFAR(8, 10, 5, True, all_paper_ops)
    x = torch.randn(4, 3, 16, 16)
    _train_one_step(model, x)
    _perturb_bn(model)
    names = deployable_modules(model)
    kinds = {type(model.get_submodule(n)).__name__ for n in names}
    assert {"DOConv2d", "SparseShift2d", "BDSCConv2d"} <= kinds
    model.eval()
    deployed = to_deploy(model)
    assert model.training is False and deployable_modules(deployed) == []
    assert deployable_modules(model) == names  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), rtol=1e-4, atol=1e-4)
    # DO-Conv folds away its D': deploy has fewer parameters.
    assert count_params(deployed) < count_params(model)


def test_bytes_bdsc_one_bit_masks():
    op = OPS["bdsc_conv_3x3"](64, 1, False)
    train_bytes = count_bytes(op)
    deploy_bytes = count_bytes(to_deploy(op))
    # OPERATORS.md: 64*64 floats + 64*64*9 bits + 64 floats = 21,248 bytes in deploy form.
    assert deploy_bytes == 64 * 64 * 4 + 64 * 64 * 9 // 8 + 64 * 4
    assert train_bytes == 4 * (64 * 64 + 64 * 64 * 9)


def test_count_params_excludes_auxiliary(darts_v2):
    model = NetworkCIFAR(8, 10, 5, True, darts_v2)
    aux = sum(p.numel() for p in model.auxiliary_head.parameters())
    assert count_params(model, include_auxiliary=True) - count_params(model) == aux


def test_count_macs_conv_formula():
    conv = nn.Conv2d(16, 32, 3, padding=1, bias=False)
    assert count_macs(conv, (1, 16, 8, 8)) == 32 * 16 * 9 * 8 * 8


def test_measure_latency_positive():
    ms = measure_latency(nn.Conv2d(4, 4, 3, padding=1), (1, 4, 8, 8), "cpu", warmup=1, repeats=3)
    assert ms > 0
