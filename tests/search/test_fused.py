"""The fused supernet forward computes what the reference MixedOp path computes.

Same weights, same batch: outputs, weight gradients, α/β gradients and BN running
statistics agree (fp64 to rounding, fp32 within 5e-5 of each tensor's largest entry), for
the ``darts``, ``paper`` and ``full`` spaces, partial channels K=1 and K=4 (with edge
normalization), first- and second-order architecture steps, and in eval mode after a few
training steps.
"""

from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas import runtime
from nas.config import build
from nas.ops.primitives import Zero
from nas.search.architect import Architect
from nas.search.config import ArchConfig
from nas.search.supernet.fused_conv import depthwise_conv2d, pointwise_conv2d, uses_fast_backward
from nas.search.supernet.model import Supernet
from nas.spaces import get_space

SPACES = ("darts", "paper", "full")
PARTIAL = [(1, False), (4, True)]  # (K, edge normalization)


@pytest.fixture(autouse=True)
def _quiet_c2sp():
    """C/K channels that are not a multiple of 4 make C2sp warn (expected here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="C2spConv2d", category=UserWarning)
        yield


def _pair(space: str, k: int, edge_norm: bool, dtype=torch.float32, **kw):
    """A reference supernet and a fused copy with the same weights and non-trivial α."""
    torch.manual_seed(0)
    ref = Supernet(
        get_space(space, **kw), 5, C=8, layers=3, partial_k=k, edge_norm=edge_norm, fused=False
    ).to(dtype)
    with torch.no_grad():
        for a in ref.arch_parameters():
            a.normal_()
    fus = copy.deepcopy(ref)
    fus.fused = True
    return ref, fus


def _batch(dtype=torch.float32, seed: int = 1, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g).to(dtype), torch.randint(0, 5, (n,), generator=g)


def _tol(dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 5e-5


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """Largest difference within ``tol`` of the largest entry (relative, per tensor)."""
    scale = expected.detach().abs().max().clamp_min(1e-12)
    err = (actual.detach() - expected.detach()).abs().max() / scale
    assert err <= tol, f"{what}: relative error {float(err):.2e} > {tol:.0e}"


def _assert_same_grads(ref, fus, tol: float) -> None:
    for (name, p), (_, q) in zip(ref.named_parameters(), fus.named_parameters()):
        if p.grad is None:
            assert q.grad is None or not q.grad.any(), name
            continue
        assert q.grad is not None, name
        _close(q.grad, p.grad, tol, name)


def _assert_same_buffers(ref, fus, tol: float) -> None:
    """BN statistics are O(0.01 .. 1) and can be ~0 (the mean of a pooled zero-mean map):
    compared with an absolute tolerance as well."""
    for (name, b), (_, c) in zip(ref.named_buffers(), fus.named_buffers()):
        if b.is_floating_point():
            torch.testing.assert_close(c, b, rtol=tol, atol=tol, msg=name)
        else:
            assert torch.equal(c, b), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("k,edge_norm", PARTIAL, ids=["K1", "K4-edgenorm"])
@pytest.mark.parametrize("space", SPACES)
def test_forward_backward_match_reference(space, k, edge_norm, dtype):
    ref, fus = _pair(space, k, edge_norm, dtype)
    x, y = _batch(dtype)
    outs = []
    for model in (ref, fus):
        out = model(x)
        F.cross_entropy(out, y).backward()
        outs.append(out)
    tol = _tol(dtype)
    _close(outs[1], outs[0], tol, "logits")
    _assert_same_grads(ref, fus, tol)  # weights and α/β
    _assert_same_buffers(ref, fus, tol)  # BN running statistics, batches tracked


@pytest.mark.parametrize("k,edge_norm", PARTIAL, ids=["K1", "K4-edgenorm"])
@pytest.mark.parametrize("space", SPACES)
def test_channels_last_fused_matches_contiguous_reference(space, k, edge_norm):
    """channels_last (runtime.channels_last=true) runs other kernels on the same
    function: fp32 outputs and gradients equal the NCHW reference path's."""
    ref, fus = _pair(space, k, edge_norm)
    fus = fus.to(memory_format=torch.channels_last)
    x, y = _batch()
    outs = []
    for model, inp in ((ref, x), (fus, x.contiguous(memory_format=torch.channels_last))):
        out = model(inp)
        F.cross_entropy(out, y).backward()
        outs.append(out)
    _close(outs[1], outs[0], 5e-5, "logits")
    _assert_same_grads(ref, fus, 5e-5)
    _assert_same_buffers(ref, fus, 5e-5)


@pytest.mark.parametrize("k,edge_norm", PARTIAL, ids=["K1", "K4-edgenorm"])
@pytest.mark.parametrize("space", SPACES)
def test_eval_mode_matches_after_training_steps(space, k, edge_norm):
    """Running statistics updated by fused training steps give the reference's eval output.

    In fp64: over several steps fp32 rounding differences grow, and the discrete parts of
    the paper ops (BDSC signs, SSL rounded shifts) can flip on them.
    """
    ref, fus = _pair(space, k, edge_norm, torch.float64)
    for model in (ref, fus):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for step in range(3):
            x, y = _batch(torch.float64, seed=step)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    _assert_same_buffers(ref, fus, 1e-9)
    x, _ = _batch(torch.float64, seed=9)
    with torch.no_grad():
        _close(fus.eval()(x), ref.eval()(x), 1e-9, "eval logits")


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("k,edge_norm", PARTIAL, ids=["K1", "K4-edgenorm"])
@pytest.mark.parametrize("space", SPACES)
def test_architect_gradients_match(space, k, edge_norm, order):
    """α/β gradients of a first- or second-order step (``functional_call`` on the unrolled
    weights, finite-difference Hessian) are the reference's."""
    grads, buffers = [], []
    for model in _pair(space, k, edge_norm, torch.float64):
        arch = Architect(model, build(ArchConfig, {"order": order}))
        arch.optimizer.step = lambda: None  # keep α: compare the gradients
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
        train, val = _batch(torch.float64, 1), _batch(torch.float64, 2)
        arch.step(train, val, F.cross_entropy, lambda: torch.zeros((), dtype=torch.float64), w_opt)
        grads.append([a.grad.clone() for a in model.arch_parameters()])
        buffers.append(model)
    for g_fused, g_ref in zip(grads[1], grads[0]):
        _close(g_fused, g_ref, 1e-8, f"{order}-order arch gradient")
    _assert_same_buffers(*buffers, 1e-10)


def test_functional_call_sees_substituted_weights():
    """The fused path reads the modules' parameters at call time (no cached copies)."""
    ref, fus = _pair("full", 4, True, torch.float64)
    params = {n: p.detach() * 1.1 for n, p in ref.named_weight_parameters()}
    x, _ = _batch(torch.float64)
    expected = functional_call(ref, params, (x,))
    actual = functional_call(fus, params, (x,))
    _close(actual, expected, 1e-10, "functional_call logits")
    assert not torch.allclose(actual, fus(x))


def test_same_state_dict_and_switchable():
    ref, fus = _pair("darts", 1, False)
    assert list(fus.state_dict()) == list(ref.state_dict())
    x, _ = _batch()
    with torch.no_grad():
        a = fus.eval()(x)
        fus.fused = False
        _close(fus(x), a, 5e-5, "flipped switch")


def test_none_costs_nothing(monkeypatch):
    """``none`` is never run in the fused path; its α still enters the softmax."""
    ref, fus = _pair("darts", 1, False)

    def boom(self, x):
        raise AssertionError("Zero.forward called")

    monkeypatch.setattr(Zero, "forward", boom)
    x, y = _batch()
    F.cross_entropy(fus(x), y).backward()
    assert fus.alphas_normal.grad[:, 0].abs().sum() > 0  # via the softmax


def test_one_call_per_op_and_state():
    """Convolutions run once per (state, op, layer) instead of once per edge."""
    ref, fus = _pair("darts", 1, False)
    x, _ = _batch()

    def conv_calls(model) -> int:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with torch.no_grad():
                model(x)
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::convolution",
                                                                      "aten::bmm"))

    assert conv_calls(fus) < 0.5 * conv_calls(ref)


# --- the rewritten convolutions -------------------------------------------------------------


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [6, 7])
def test_depthwise_gradients_match_native(kernel, dilation, stride, size):
    torch.manual_seed(0)
    pad = dilation * (kernel - 1) // 2
    x = torch.randn(3, 5, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    out = depthwise_conv2d(x, w, (stride, stride), (pad, pad), (dilation, dilation))
    expected = F.conv2d(x, w, None, stride, pad, dilation, 5)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(out, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
        torch.testing.assert_close(a, b)


def test_depthwise_rewrite_only_where_it_helps():
    x = torch.randn(2, 4, 8, 8)
    w5, w3 = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 3, 3)
    assert uses_fast_backward(x, w5, (1, 1), (2, 2), (1, 1))
    assert uses_fast_backward(x, w3, (1, 1), (2, 2), (2, 2))  # dilated
    assert not uses_fast_backward(x, w5, (1, 1), (1, 1), (1, 1))  # not "same" padding
    assert not uses_fast_backward(x, torch.randn(4, 2, 5, 5), (1, 1), (2, 2), (1, 1))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_pointwise_matches_conv(groups):
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 8 // groups, 1, 1, dtype=torch.float64, requires_grad=True)
    out, expected = pointwise_conv2d(x, w, groups), F.conv2d(x, w, groups=groups)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(out, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
        torch.testing.assert_close(a, b)


# --- torch.compile ----------------------------------------------------------------------------


def test_compile_falls_back_without_compiler(monkeypatch, caplog):
    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr(runtime, "_cpu_compiler_missing", lambda: "no C++ compiler found (tried x)")
    with caplog.at_level(logging.WARNING, logger="nas"):
        out = runtime.compile_module(model, torch.device("cpu"))
    assert out is model and model._compiled_call_impl is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["runtime.compile: no C++ compiler found (tried x); running eagerly"]


@pytest.mark.slow
def test_compiled_fused_supernet_matches_reference():
    """Inductor on CPU: a compiled fused supernet (tiny, to keep compilation short) gives the
    reference's outputs and gradients, without graph breaks."""
    from nas.runtime import _cpu_compiler_missing

    if _cpu_compiler_missing() is not None:
        pytest.skip("no C++ compiler for inductor")
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    ref, fus = _pair("darts", 2, True, ops=["none", "max_pool_3x3", "sep_conv_3x3"], steps=1,
                     multiplier=1)
    runtime.compile_module(fus, torch.device("cpu"))
    x, y = _batch()
    for model in (ref, fus):
        F.cross_entropy(model(x), y).backward()
    _assert_same_grads(ref, fus, 5e-5)
    _assert_same_buffers(ref, fus, 5e-5)
    assert not torch._dynamo.utils.counters["graph_break"]


def test_search_config_selects_path(tmp_path):
    from nas.run import RunDir
    from nas.search.config import SearchConfig
    from nas.search.darts import SearchJob

    assert build(SearchConfig, {}).model.fused is True
    cfg = build(SearchConfig, {
        "data": {"name": "synthetic", "batch_size": 4, "augment": False,
                 "options": {"num_samples": 16, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": ["none", "skip_connect", "sep_conv_3x3"], "steps": 2, "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3, "fused": False},
        "runtime": {"device": "cpu", "amp": False, "progress": False},
    })  # fmt: skip
    job = SearchJob(cfg, RunDir(tmp_path / "run"))
    assert job.model.fused is False
    job.start_epoch(0)
    loss, _, _ = job.step(next(iter(job.batches())))
    assert torch.isfinite(loss)
