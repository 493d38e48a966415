"""The DARTS evaluation network: official size, drop path, auxiliary head."""

from __future__ import annotations

import torch

from nas.cost import count_macs, count_params
from nas.network import NetworkCIFAR


def test_darts_v2_official_parameter_count(darts_v2):
    model = NetworkCIFAR(36, 10, 20, True, darts_v2)
    # DARTS paper / official code: 3.35 M parameters without the auxiliary head.
    assert round(count_params(model) / 1e6, 2) == 3.35
    assert count_params(model, include_auxiliary=True) > count_params(model)


def test_darts_v2_multiply_adds(darts_v2):
    model = NetworkCIFAR(36, 10, 20, False, darts_v2)
    macs = count_macs(model, (1, 3, 32, 32))
    assert 520e6 < macs < 536e6  # ~528 M on a 32x32 input


def test_grayscale_and_shapes(darts_v2):
    model = NetworkCIFAR(8, 7, 5, True, darts_v2, in_channels=1)
    model.train()
    logits, aux = model(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    model.eval()
    out = model(torch.randn(2, 1, 28, 28))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


def test_auxiliary_only_in_training(darts_v2):
    model = NetworkCIFAR(8, 10, 5, True, darts_v2)
    model.train()
    assert isinstance(model(torch.randn(2, 3, 16, 16)), tuple)
    model.eval()
    assert isinstance(model(torch.randn(2, 3, 16, 16)), torch.Tensor)


def test_drop_path_active_in_training_only(darts_v2):
    torch.manual_seed(0)
    model = NetworkCIFAR(8, 10, 5, False, darts_v2)
    model.drop_path_prob = 0.5
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    assert torch.equal(model(x), model(x))  # deterministic in eval, drop path off
    model.train()
    for m in model.modules():  # freeze BN statistics so only drop path can differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)
    model.drop_path_prob = 0.0
    assert torch.allclose(model(x), model(x))


def test_all_paper_ops_network_backward(all_paper_ops):
    model = NetworkCIFAR(8, 10, 5, True, all_paper_ops)
    model.drop_path_prob = 0.2
    logits, aux = model(torch.randn(2, 3, 16, 16))
    (logits.sum() + 0.4 * aux.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


def test_compiled_network_keeps_one_graph_as_drop_path_ramps(darts_v2):
    """The retraining loop sets a new drop-path probability every epoch; compiled, that must
    not recompile (after dynamo's recompile limit the network would silently run eagerly)."""
    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 3, auxiliary=False, genotype=darts_v2).train()
    counter = CompileCounter()
    compiled = torch.compile(net, backend=counter)
    x = torch.randn(4, 3, 8, 8)
    for epoch in range(10):
        net.drop_path_prob = 0.2 * epoch / 10
        compiled(x).sum().backward()
    assert counter.frame_count == 1


def test_compiled_drop_path_matches_eager(darts_v2):
    """The compiled path passes the probability as a tensor: at 0 the branch is unchanged,
    and at p the kept share of samples is about 1 - p, rescaled by 1 / (1 - p)."""
    from nas.network import drop_path

    torch.manual_seed(0)
    x = torch.randn(4000, 2, 3, 3)
    assert torch.equal(drop_path(x, torch.tensor(0.0)), x)
    out = drop_path(x, torch.tensor(0.3))
    kept = (out != 0).flatten(1).all(1)
    assert abs(kept.float().mean().item() - 0.7) < 0.03
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    assert torch.equal(out[~kept], torch.zeros_like(out[~kept]))
    net = NetworkCIFAR(4, 10, 3, auxiliary=False, genotype=darts_v2).eval()
    net.drop_path_prob = 0.3  # eval: no drop path, compiled or not
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(compiled(x), net(x))
