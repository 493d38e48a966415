"""Two gloo ranks on 2 x B/2 images take the step one process takes on the B images.

Cases: PC-DARTS search (K=2, edge normalisation, params cost term on) in first and second
order, and retraining. Two steps each (the second-order unrolled step then uses momentum
buffers). BatchNorm is per rank, so the single-process reference normalises each half of
its batch on its own (``ghost_batch_norm``, see ``_ddp_helpers``): the equality tested is
"2 ranks x B/2 == one process on B as two micro-batches of B/2, losses averaged".
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _ddp_helpers import (
    CASES,
    REPO,
    WORKER,
    free_port,
    ghost_batch_norm,
    make_job,
    rank_env,
    take_steps,
)

TOL = 1e-5


@pytest.fixture(scope="module")
def ranks_states(tmp_path_factory) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """Both ranks' parameters and gradients after the steps of every case (one launch)."""
    out = tmp_path_factory.mktemp("ddp-steps")
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), "steps", str(out)], cwd=REPO,
                         env=rank_env(rank, 2, port), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, text in zip(procs, logs):
        assert p.returncode == 0, text[-3000:]
    return {
        (case, rank): torch.load(out / f"{case}-rank{rank}.pt", weights_only=True)
        for case in CASES
        for rank in (0, 1)
    }


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_step_like_one_process(ranks_states, case, tmp_path):
    rank0, rank1 = ranks_states[case, 0], ranks_states[case, 1]
    # every rank holds the same weights, α and gradients, bit for bit
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    with ghost_batch_norm(2):
        job = make_job(case, tmp_path / "run")
        initial = {n: p.detach().clone() for n, p in job.model.named_parameters()}
        reference = take_steps(job)
    assert reference.keys() == rank0.keys()
    arch = [k for k in initial if k.startswith(("alphas_", "betas_"))]
    assert bool(arch) == (case != "train")
    moved = 0.0
    for name in initial:
        torch.testing.assert_close(rank0[name], reference[name], atol=TOL, rtol=0, msg=name)
        moved = max(moved, float((reference[name] - initial[name]).abs().max()))
    for name in arch:  # α moved far more than the tolerance: the check can fail
        assert float((reference[name] - initial[name]).abs().max()) > 100 * TOL, name
    assert moved > 100 * TOL
    grads = [k for k in reference if k.startswith("grad:")]
    assert len(grads) > len(arch)
    for key in grads:  # gradients too: Adam's α step would hide a wrong scale
        torch.testing.assert_close(rank0[key], reference[key], atol=TOL, rtol=1e-4, msg=key)


def test_plain_batch_norm_reference_differs(ranks_states, tmp_path):
    """Without the per-half BatchNorm the single-process step is another step: the
    comparison above is sensitive to what each rank computes."""
    plain = take_steps(make_job("first", tmp_path / "run"))
    rank0 = ranks_states["first", 0]
    worst = max(float((plain[k] - rank0[k]).abs().max()) for k in plain if k.startswith("grad:"))
    assert worst > 10 * TOL
