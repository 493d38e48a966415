"""A search step never makes the host wait for the device, in any search mode.

``job.step(batch)`` runs the architecture step and the weight step; every value it needs
on the host (learning rates, the mode) is a Python number already, so none of its aten
calls may read a tensor back (:class:`HostSyncCounter`). On CPU these calls cost nothing,
but they are the calls that would stall a CUDA run, so counting them here finds them.
"""

from __future__ import annotations

import pytest
import torch
from _sync_counter import HostSyncCounter, optimizer_steps

from nas.config import build
from nas.run import RunDir
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob

# bdsc: clamp_bdsc_ after the weight step; ssl_conv: the SSL penalty and its displacements
OPS = ["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "ssl_conv", "bdsc_conv_3x3"]

MODES = {
    "first": {},
    "second": {"arch": {"order": "second"}},
    "K4-edgenorm": {"model": {"partial_channels": 4, "edge_norm": True}},
    "K4-edgenorm-second": {"model": {"partial_channels": 4, "edge_norm": True},
                           "arch": {"order": "second"}},
    "cost": {"cost": {"weight": 0.1}},
    "cost-second": {"cost": {"weight": 0.1}, "arch": {"order": "second"}},
    "ssl": {"ssl": {"penalty": 1e-3}},
    "ssl-second": {"ssl": {"penalty": 1e-3}, "arch": {"order": "second"}},
    # every op of the largest space (DO-Conv, C2sp, OSep, dilated and 5x5 convs too)
    "full-space-second": {"space": {"name": "full", "ops": None},
                          "model": {"partial_channels": 2, "edge_norm": True},
                          "arch": {"order": "second"}, "cost": {"weight": 0.1}},
    # β-DARTS, SDARTS-RS and DARTS- at full strength (one epoch: the ramps end where they start)
    "stabilized": {"stabilize": {"beta": 2.0, "rs_epsilon": 0.3, "aux_skip": True},
                   "optim": {"epochs": 1}},
    "drnas-second": {"stabilize": {"dirichlet": True}, "arch": {"order": "second"}},
    "stabilized-reference-second": {"stabilize": {"beta": 2.0, "rs_epsilon": 0.3,
                                                  "aux_skip": True},
                                    "optim": {"epochs": 1}, "model": {"fused": False},
                                    "arch": {"order": "second"}},
    "reference": {"model": {"fused": False}},
    "reference-all-second": {"model": {"fused": False, "partial_channels": 4, "edge_norm": True},
                             "arch": {"order": "second"}, "cost": {"weight": 0.1},
                             "ssl": {"penalty": 1e-3}},
}  # fmt: skip


def _job(tmp_path, overrides: dict) -> SearchJob:
    doc = {
        "data": {"name": "synthetic", "batch_size": 4, "augment": False,
                 "options": {"num_samples": 16, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": OPS, "steps": 2, "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3},
        "arch": {"warmup_epochs": 0},  # the counted step has its α step
        "runtime": {"device": "cpu", "amp": False, "progress": False, "tensorboard": False},
    }  # fmt: skip
    for group, values in overrides.items():
        doc[group] = {**doc.get(group, {}), **values}
    return SearchJob(build(SearchConfig, doc), RunDir(tmp_path / "run"))


@pytest.mark.filterwarnings("ignore:C2spConv2d")  # 2 channels: uneven C2sp groups
@pytest.mark.parametrize("mode", list(MODES))
def test_search_step_makes_no_host_sync(tmp_path, mode):
    torch.manual_seed(0)
    job = _job(tmp_path, MODES[mode])
    job.start_epoch(0)
    batches = iter(job.batches())
    job.step(next(batches))  # optimizer state (momentum buffers, Adam moments) exists now
    with HostSyncCounter(ignore=optimizer_steps(job.architect.optimizer), stacks=True) as c:
        loss, correct, n = job.step(next(batches))
    assert c.count == 0, f"{c.summary()}\n{c.stacks[0]}"
    assert torch.isfinite(loss) and n == 4 and 0 <= int(correct) <= 4


@pytest.mark.parametrize("fused", [True, False])
def test_pdarts_stage_step_makes_no_host_sync(tmp_path, fused):
    """A later P-DARTS stage: ops pruned on every edge (softmax over the kept ones) and
    dropout after the skips, second order."""
    torch.manual_seed(0)
    n_edges = 5
    mask = torch.ones(n_edges, len(OPS), dtype=torch.bool)
    mask[:, [OPS.index("max_pool_3x3"), OPS.index("ssl_conv")]] = False
    cfg = {"data": {"name": "synthetic", "batch_size": 4, "augment": False,
                    "options": {"num_samples": 16, "image_size": 8, "channels": 3,
                                "num_classes": 3}},
           "space": {"ops": OPS, "steps": 2, "multiplier": 2},
           "model": {"init_channels": 4, "layers": 3, "fused": fused},
           "arch": {"order": "second", "warmup_epochs": 0},
           "runtime": {"device": "cpu", "amp": False, "progress": False, "tensorboard": False}}
    job = SearchJob(build(SearchConfig, cfg), RunDir(tmp_path / "run"), op_mask=(mask, mask),
                    skip_dropout=0.4)
    assert job.model.pruned
    job.start_epoch(0)
    batches = iter(job.batches())
    job.step(next(batches))
    with HostSyncCounter(ignore=optimizer_steps(job.architect.optimizer), stacks=True) as c:
        job.step(next(batches))
    assert c.count == 0, f"{c.summary()}\n{c.stacks[0]}"


def test_counter_sees_the_syncs_it_names():
    """Positive control: each kind of sync the counter claims to find, found once."""
    t = torch.randn(5)
    mask = t > 0
    cases = [
        lambda: float(t.sum()),  # _local_scalar_dense
        lambda: t.nonzero(),
        lambda: t[mask],  # boolean index
        lambda: t.masked_select(mask),
        lambda: torch.equal(t, t),
        lambda: bool(t.sum() > 0),  # is_nonzero / _local_scalar_dense
        lambda: t.add_(t, alpha=float(t[0])),  # the unrolled step's old float(r)
    ]
    for case in cases:
        with HostSyncCounter() as c:
            case()
        assert c.count == 1, (case, c.calls)
    with HostSyncCounter() as c:  # none of these read a value back
        t.index_select(0, torch.tensor([0, 2]))
        torch._foreach_add_([t], [t * torch.tensor(0.5)])
        torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(t.clone())], 1.0, foreach=True)
    assert c.count == 0, c.calls


def test_ignored_host_tensors_are_not_counted():
    step = torch.tensor(3.0)
    with HostSyncCounter(ignore=[step]) as c:
        step.item()
        torch.tensor(1.0).item()
    assert c.calls == ["aten._local_scalar_dense.default"]
