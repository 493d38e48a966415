"""Collapse fixes and diagnostics, each against the quantity that defines it: β-DARTS's
gradient in closed form, SDARTS-RS's noise (bounded, weight step only), the cap on
parameter-free ops, the parameter-free share, edge margins and R-DARTS's Hessian eigenvalue
against an exact Hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.config import build
from nas.run import RunDir
from nas.search.config import ArchConfig, SearchConfig
from nas.search.darts import SearchJob
from nas.search.diagnostics import (
    edge_margins,
    eigenvalue_stop,
    hessian_eigenvalue,
    param_free_share,
)
from nas.search.stabilizers import (
    RS_EPSILON_START,
    beta_regularizer,
    ramp,
    rs_noise,
    smoothed_weights,
)
from nas.search.supernet.model import Supernet, derive_cell
from nas.spaces import get_space
from nas.spaces.baselines import BASELINES

OPS = ["none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3",
       "dil_conv_3x3"]


def _job(tmp_path, diagnostics: dict | None = None, arch: dict | None = None,
         **stabilize) -> SearchJob:
    cfg = build(SearchConfig, {
        "data": {"name": "synthetic", "batch_size": 8, "augment": False,
                 "options": {"num_samples": 32, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": OPS, "steps": 2, "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3, "fused": False},
        "optim": {"epochs": 5},
        "arch": {"warmup_epochs": 0} if arch is None else arch,  # α steps from epoch 0
        "stabilize": stabilize,
        "diagnostics": diagnostics or {},
        "runtime": {"device": "cpu", "amp": False, "progress": False},
    })
    return SearchJob(cfg, RunDir(tmp_path / "run"))


def test_ramp_is_linear_from_start_to_final():
    assert [ramp(4.0, e, 5) for e in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ramp(0.3, 0, 11, 0.03) == pytest.approx(0.03)
    assert ramp(0.3, 10, 11, 0.03) == pytest.approx(0.3)
    assert ramp(2.0, 0, 1) == 2.0


def test_beta_regularizer_gradient_is_softmax_over_edges():
    """β-DARTS: ∂/∂α_ik mean_i logsumexp(α_i) = softmax(α_i)_k / #edges."""
    g = torch.Generator().manual_seed(0)
    a_n = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    a_r = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    reg = beta_regularizer([a_n, a_r])
    assert reg.item() == pytest.approx(torch.cat([a_n, a_r]).logsumexp(-1).mean().item())
    reg.backward()
    for a in (a_n, a_r):
        torch.testing.assert_close(a.grad, F.softmax(a.detach(), -1) / 10)


def test_search_job_ramps_beta_into_the_architecture_loss_only(tmp_path):
    job = _job(tmp_path, beta=4.0)
    alphas = [job.model.alphas_normal, job.model.alphas_reduce]
    for epoch, lam in ((0, 0.0), (2, 2.0), (4, 4.0)):
        job.start_epoch(epoch)
        assert job._beta == pytest.approx(lam)
        term = job._cost_term()
        if lam == 0:  # off at the start: nothing added, nothing to differentiate
            assert not term.requires_grad and term.item() == 0
            continue
        grads = torch.autograd.grad(term, alphas, allow_unused=True)
        for a, grad in zip(alphas, grads):
            want = lam * F.softmax(a.detach(), -1) / (2 * a.shape[0])
            torch.testing.assert_close(torch.zeros_like(want) if grad is None else grad, want)


def test_smoothed_weights_stay_on_the_simplex_within_epsilon():
    g = torch.Generator().manual_seed(1)
    alpha = torch.randn(14, 6, generator=g, requires_grad=True)
    w = F.softmax(alpha, -1)
    eps = 0.2
    noise = (torch.rand(14, 6, generator=g) * 2 - 1) * eps
    out = smoothed_weights(w, noise)
    torch.testing.assert_close(out.sum(-1), torch.ones(14))
    assert (out >= 0).all() and (out <= 1).all()
    clipped = (w + noise).clamp(0, 1)
    torch.testing.assert_close(out, clipped / clipped.sum(-1, keepdim=True))
    assert ((clipped - w).abs() <= eps + 1e-6).all()
    out.sum().backward()  # gradients reach α through softmax
    assert alpha.grad is not None
    # a row clipped to nothing becomes one-hot on its largest weight (SDARTS's rule)
    row = torch.tensor([[0.5, 0.3, 0.2]])
    torch.testing.assert_close(smoothed_weights(row, -torch.ones(1, 3)),
                               torch.tensor([[1.0, 0.0, 0.0]]))


def test_rs_noise_is_uniform_in_minus_epsilon_epsilon():
    torch.manual_seed(0)
    noise = rs_noise({False: torch.zeros(200, 50)}, 0.3)[False]
    assert noise.abs().max() <= 0.3 and noise.abs().max() > 0.29
    assert abs(noise.mean().item()) < 0.01
    assert noise.var().item() == pytest.approx(0.3 ** 2 / 3, rel=0.05)  # U[-ε, ε]


def test_sdarts_noise_reaches_the_weight_step_only(tmp_path):
    """With rs_epsilon, the architecture step's forward passes get no noise and the weight
    step's gets noise bounded by this epoch's ε (ramped from 0.03)."""
    job = _job(tmp_path, rs_epsilon=0.3)
    calls = []
    forward = job.model.forward

    def recording(x, noise=None):
        calls.append(noise)
        return forward(x, noise)

    job.model.forward = recording
    job.start_epoch(2)
    eps = ramp(0.3, 2, 5, RS_EPSILON_START)
    assert job._rs_epsilon == pytest.approx(eps)
    batch = next(iter(job.batches()))
    job.step(batch)
    assert calls[:-1] and all(n is None for n in calls[:-1])  # the α step (first order)
    noise = calls[-1]
    assert set(noise) == {False, True}
    for reduction, n in noise.items():
        alpha = job.model.alphas_reduce if reduction else job.model.alphas_normal
        assert n.shape == alpha.shape and not n.requires_grad
        assert 0 < n.abs().max() <= eps


def test_cap_on_parameter_free_ops_in_the_normal_cell():
    """Pools and skip win every edge; max_param_free=1 keeps only the strongest of them,
    the others fall back to their best op with parameters."""
    steps = 3
    edges = sum(2 + i for i in range(steps))
    w = torch.full((edges, len(OPS)), 0.05)
    w[:, OPS.index("max_pool_3x3")] = torch.linspace(0.5, 0.6, edges)
    w[:, OPS.index("dil_conv_3x3")] = 0.2
    w[3, OPS.index("sep_conv_3x3")] = 0.3  # on edge 3 the sep conv is the better fallback
    free = derive_cell(w, tuple(OPS), steps)
    assert param_free_share(free) == 1.0
    capped = derive_cell(w, tuple(OPS), steps, max_param_free=1)
    assert sum(op == "max_pool_3x3" for op, _ in capped) == 1
    assert [e for e in capped if e[0] == "max_pool_3x3"] == [free[-1]]  # the strongest
    assert [i for _, i in capped] == [i for _, i in free]  # same inputs, only ops change
    assert param_free_share(capped) == pytest.approx(1 / 6)
    assert capped[2] == ("sep_conv_3x3", 1)  # edge 3: node 1's input 1, its best conv
    assert {op for op, _ in capped[:2] + capped[3:5]} == {"dil_conv_3x3"}


def test_param_free_share_of_darts_v2_normal_cell_is_a_quarter():
    assert param_free_share(BASELINES["DARTS_V2"].normal) == 0.25


def test_edge_margins_ignore_none():
    w = torch.tensor([[0.9, 0.05, 0.05, 0.0], [0.1, 0.4, 0.3, 0.2]])
    ops = ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]
    torch.testing.assert_close(edge_margins(w, ops), torch.tensor([0.0, 0.1]))


def test_hessian_eigenvalue_of_a_quadratic():
    """0.5·xᵀAx has Hessian A: the power iteration finds its largest eigenvalue."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    eig = torch.tensor([5.0, 2.0, 1.5, *([0.5] * 9)], dtype=torch.float64)
    A = q @ torch.diag(eig) @ q.T
    x = torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=torch.float64))
    saved = x.detach().clone()
    value = hessian_eigenvalue(lambda: 0.5 * x.reshape(-1) @ A @ x.reshape(-1), [x], 30)
    assert value.item() == pytest.approx(5.0, rel=1e-4)
    assert torch.equal(x.detach(), saved)  # restored bit for bit


@pytest.mark.parametrize("fused", [False, True])
def test_hessian_eigenvalue_matches_the_exact_hessian_of_a_supernet(fused):
    """On a tiny float64 supernet, the finite-difference power iteration agrees with the
    top eigenvalue of the exact α Hessian (torch.autograd.functional.hessian through the
    reference MixedOp); the fused forward gives the same number."""
    torch.manual_seed(0)
    space = get_space("test", ["skip_connect", "avg_pool_3x3", "sep_conv_3x3"], steps=2,
                      multiplier=2)
    model = Supernet(space, 3, C=4, layers=3, fused=False).double().eval()
    with torch.no_grad():  # a decided, non-uniform α: a non-trivial curvature
        model.alphas_normal.normal_(0, 1)
        model.alphas_reduce.normal_(0, 1)
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    a_n, a_r = model.alphas_normal, model.alphas_reduce

    def loss_of(flat):
        n = a_n.numel()
        params = {"alphas_normal": flat[:n].view_as(a_n), "alphas_reduce": flat[n:].view_as(a_r)}
        out = torch.func.functional_call(model, params, (x,))
        return F.cross_entropy(out, y)

    flat = torch.cat([a_n.detach().reshape(-1), a_r.detach().reshape(-1)])
    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat))
    top = exact[exact.abs().argmax()].item()
    model.fused = fused
    value = hessian_eigenvalue(lambda: F.cross_entropy(model(x), y), [a_n, a_r], 60,
                               radius=1e-4)
    assert value.item() == pytest.approx(top, rel=2e-3)


def test_search_logs_collapse_diagnostics_each_epoch(tmp_path):
    job = _job(tmp_path, diagnostics={"hessian_iters": 3})
    job.start_epoch(0)
    buffers = [b.clone() for b in job.model.buffers()]
    alphas = [p.detach().clone() for p in job.model.arch_parameters()]
    row = job.end_epoch(0)
    for cell in ("normal", "reduce"):
        assert 0 <= row[f"{cell}_param_free"] <= 1
        assert 0 <= row[f"{cell}_margin_min"] <= row[f"{cell}_margin_mean"] <= 1
        assert row[f"{cell}_entropy"] == pytest.approx(torch.log(torch.tensor(6.0)).item(),
                                                       abs=1e-3)  # α ≈ 0 at the start
    assert isinstance(row["hessian_eig"], float)
    # the Hessian probe leaves α and the BN statistics as it found them
    assert all(torch.equal(a, b) for a, b in zip(alphas, job.model.arch_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, job.model.buffers()))



def test_hessian_probe_uses_one_architecture_batch(tmp_path, monkeypatch):
    """The eval batch can be far larger than the α step's; the probe's backward must not
    hold the whole supernet's activations for it."""
    job = _job(tmp_path, diagnostics={"hessian_iters": 1})
    job.eval_loader = [(torch.randn(20, 3, 8, 8), torch.randint(0, 3, (20,)))]
    seen = []
    forward = job.model.forward
    monkeypatch.setattr(job.model, "forward", lambda x, *a: seen.append(x.shape[0])
                        or forward(x, *a))
    job._hessian_eigenvalue(0)
    assert seen and set(seen) == {8}  # data.batch_size, not the 20 of the eval batch


def test_alpha_warmup_defaults_to_pcdarts_thirty_percent():
    """PC-DARTS: 15 weight-only epochs of 50; rounded down, so 1-3 epoch runs keep α moving."""
    assert [ArchConfig().warmup(n) for n in (50, 10, 6, 3, 1)] == [15, 3, 1, 0, 0]
    assert ArchConfig(warmup_epochs=2).warmup(50) == 2
    assert ArchConfig(warmup_fraction=0.0).warmup(50) == 0


def test_search_job_makes_no_architecture_step_in_warmup(tmp_path):
    job = _job(tmp_path, arch={})  # the default: 5 epochs, floor(1.5) = 1 weight-only
    assert job._warmup == 1
    alphas = [p.detach().clone() for p in job.model.arch_parameters()]
    job.start_epoch(0)
    job.step(next(iter(job.batches())))
    assert all(torch.equal(a, b) for a, b in zip(alphas, job.model.arch_parameters()))
    job.start_epoch(1)
    job.step(next(iter(job.batches())))
    assert not all(torch.equal(a, b) for a, b in zip(alphas, job.model.arch_parameters()))


def test_eigenvalue_stop_is_rdarts_window_ratio():
    """DARTS-ES: stop when mean(λ over epochs i-2k+1..i-k) / mean(λ over i-k+1..i) < T."""
    assert not eigenvalue_stop([1.0, 2.0, 3.0], 2, 0.75)  # fewer than 2k epochs
    assert eigenvalue_stop([1.0, 1.0, 1.5, 1.5], 2, 0.75)  # 1 / 1.5 = 0.67 < 0.75
    assert not eigenvalue_stop([1.0, 1.0, 1.25, 1.25], 2, 0.75)  # 0.8: not yet
    assert not eigenvalue_stop([3.0, 3.0, 4.0, 4.0], 2, 0.75)  # exactly 0.75: not below
    assert not eigenvalue_stop([-1.0, -1.0, -0.1, -0.1], 2, 0.75)  # no positive curvature
    assert eigenvalue_stop([-1.0, 0.5], 1, 0.75)  # from negative to positive: growth
    assert not eigenvalue_stop([5.0, 5.0, 4.0, 2.0, 2.0, 2.0], 2, 0.75)  # shrinking


def test_eig_stop_ends_the_search_and_derives_from_epoch_i_minus_k(tmp_path, monkeypatch):
    from nas.loop import fit

    job = _job(tmp_path, diagnostics={"hessian_iters": 1, "eig_stop": True,
                                      "eig_window": 1})
    values = iter([1.0, 1.0, 3.0, 9.0, 9.0])  # 1 -> 3 at the 3rd epoch: 1/3 < 0.75
    monkeypatch.setattr(job, "_hessian_eigenvalue", lambda epoch: next(values))
    done = fit(job, job.run, 5, progress=False)
    assert done == 3 and len(job.alpha_history) == 3
    # α now is α at the end of epoch 2 (i - k), not the α epoch 3 moved on to
    for cell, reduction in (("normal", False), ("reduce", True)):
        torch.testing.assert_close(job.model.op_weights(reduction),
                                   torch.tensor(job.alpha_history[1][cell]))
        assert not torch.allclose(job.model.op_weights(reduction),
                                  torch.tensor(job.alpha_history[2][cell]))


def test_eig_stop_needs_the_eigenvalue():
    from nas.errors import ConfigError

    with pytest.raises(ConfigError, match="hessian_iters"):
        build(SearchConfig, {"diagnostics": {"eig_stop": True}})


def _aux_supernet(ops, k=1, fused=False, edge_norm=False) -> Supernet:
    torch.manual_seed(0)
    space = get_space("test", ops, steps=2, multiplier=2)
    return Supernet(space, 3, C=8, layers=3, partial_k=k, edge_norm=edge_norm, fused=fused,
                    aux_skip=True).double()


def test_darts_minus_skip_adds_beta_times_the_inputs_to_every_node():
    """With only skip_connect (softmax weight 1) in a normal cell, DARTS- makes each node
    (1 + β)·Σ of its inputs."""
    model = _aux_supernet(["skip_connect"])
    cell = model.cells[0]
    assert not cell.reduction and all(isinstance(m, torch.nn.Identity) for m in cell.aux_skips)
    s0, s1 = torch.randn(2, 4, 24, 8, 8, dtype=torch.float64)
    w = torch.ones(cell_edges := 5, 1, dtype=torch.float64)
    beta = torch.tensor(0.4, dtype=torch.float64)
    out = cell(s0, s1, w, None, beta)
    h0, h1 = cell.preprocess0(s0), cell.preprocess1(s1)
    n0 = 1.4 * (h0 + h1)
    n1 = 1.4 * (h0 + h1 + n0)
    torch.testing.assert_close(out, torch.cat([n0, n1], dim=1))
    assert cell_edges == len(cell.edges)


@pytest.mark.parametrize("k, edge_norm", [(1, False), (2, True)])
def test_darts_minus_fused_matches_reference(k, edge_norm):
    """Reduction cells' auxiliary skips are FactorizedReduce; fused and reference agree,
    partial channels and edge normalization included; β=0 is the plain supernet."""
    model = _aux_supernet(["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3"], k,
                          edge_norm=edge_norm).eval()
    reduce_cell = next(c for c in model.cells if c.reduction)
    # edges from the two input states stride 2: FactorizedReduce; node 0 -> node 1: identity
    assert [isinstance(m, torch.nn.Identity) for m in reduce_cell.aux_skips] == [
        False, False, False, False, True]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        model.aux_skip_beta.fill_(0.7)
        reference = model(x)
        model.fused = True
        torch.testing.assert_close(model(x), reference)
        model.aux_skip_beta.fill_(0.0)
        with_zero = model(x)
        assert not torch.allclose(with_zero, reference)  # the skips did contribute
        model.aux_skip = False
        torch.testing.assert_close(model(x), with_zero)


def test_darts_minus_beta_decays_and_stays_out_of_the_genotype(tmp_path):
    job = _job(tmp_path, aux_skip=True)
    betas = []
    for epoch in range(5):
        job.start_epoch(epoch)
        betas.append(job.model.aux_skip_beta.item())
    assert betas == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    aux = {id(p) for c in job.model.cells for p in c.aux_skips.parameters()}
    assert aux and aux <= {id(p) for p in job.weights}  # trained with the weights
    ops = {op for op, _ in job.model.genotype().normal + job.model.genotype().reduce}
    assert ops <= set(OPS)


def test_dirichlet_mean_and_reparameterized_gradient():
    """DrNAS: concentration elu(α)+1; draws average to its mean, and the pathwise gradient
    of E[θ·c] matches the gradient of mean·c (the closed form)."""
    from nas.search.stabilizers import dirichlet_concentration, dirichlet_mean, dirichlet_sample

    g = torch.Generator().manual_seed(0)
    alpha = torch.randn(1, 5, generator=g, dtype=torch.float64, requires_grad=True)
    conc = dirichlet_concentration(alpha)
    torch.testing.assert_close(conc, torch.where(alpha > 0, alpha + 1, alpha.exp()))
    mean = dirichlet_mean(alpha)
    torch.testing.assert_close(mean, conc / conc.sum())
    c = torch.arange(5, dtype=torch.float64)
    torch.manual_seed(0)
    draws = dirichlet_sample(alpha.expand(200_000, 5))
    torch.testing.assert_close(draws.sum(-1), torch.ones(200_000, dtype=torch.float64))
    torch.testing.assert_close(draws.mean(0), mean[0].detach(), atol=3e-3, rtol=0)
    (mc,) = torch.autograd.grad((draws @ c).mean(), alpha)
    (exact,) = torch.autograd.grad((mean @ c).sum(), alpha)
    torch.testing.assert_close(mc, exact, atol=1e-2, rtol=0)


def test_dirichlet_kl_is_the_closed_form():
    from nas.search.stabilizers import dirichlet_concentration, dirichlet_kl

    g = torch.Generator().manual_seed(1)
    a_n, a_r = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    total = 0.0
    for a in (a_n, a_r):
        b = dirichlet_concentration(a)
        s = b.sum(-1)
        k = b.shape[-1]
        log_k = torch.lgamma(torch.tensor(float(k), dtype=torch.float64))
        kl = (torch.lgamma(s) - torch.lgamma(b).sum(-1) - log_k
              + ((b - 1) * (torch.digamma(b) - torch.digamma(s)[:, None])).sum(-1))
        total += kl.sum().item()
    assert dirichlet_kl([a_n, a_r]).item() == pytest.approx(total, rel=1e-10)
    assert dirichlet_kl([torch.zeros(3, 4)]).item() == pytest.approx(0.0, abs=1e-6)  # α=0: Dir(1)


def test_drnas_supernet_draws_in_training_and_derives_from_the_mean(tmp_path):
    job = _job(tmp_path, dirichlet=True, dirichlet_kl=0.1)
    model = job.model
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.alphas_normal.normal_()
        model.train()
        assert not torch.allclose(model(x), model(x))  # a fresh draw each forward
        model.eval()
        torch.testing.assert_close(model(x), model(x))  # evaluation: the mean
    from nas.search.stabilizers import dirichlet_kl, dirichlet_mean

    torch.testing.assert_close(model.op_weights(False), dirichlet_mean(model.alphas_normal))
    job.start_epoch(0)
    alphas = [model.alphas_normal, model.alphas_reduce]
    torch.testing.assert_close(job._cost_term(), 0.1 * dirichlet_kl(alphas))


def _cost_job(tmp_path, beta: float) -> None:
    cfg = build(SearchConfig, {
        "data": {"name": "synthetic", "batch_size": 8, "augment": False,
                 "options": {"num_samples": 16, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": OPS, "steps": 2, "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3},
        "cost": {"metric": "params", "weight": 1.0},
        "stabilize": {"beta": beta},
        "runtime": {"device": "cpu", "amp": False, "progress": False},
    })
    SearchJob(cfg, RunDir(tmp_path / f"run{beta}"))


def test_cost_term_with_beta_darts_warns_and_alone_does_not(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="nas"):
        _cost_job(tmp_path, beta=0.0)
    assert "β-DARTS" not in caplog.text
    with caplog.at_level("WARNING", logger="nas"):
        _cost_job(tmp_path, beta=25.0)
    assert "cost-aware search with β-DARTS (stabilize.beta=25)" in caplog.text
