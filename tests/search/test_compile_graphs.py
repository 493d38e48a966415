"""A compiled search compiles the supernet once per mode: one training graph, one eval graph.

``runtime.compile=true`` compiles the supernet in place (``compile_module``), so every
call goes through dynamo: the architect's (validation batch; second order also through
``functional_call`` at the unrolled weights and at ``w ± r·u``), the weight step's and
evaluation's. Each recompile is a full compile of the whole supernet. What used to add
graphs: a cache dict filled during the first traced call (dynamo guarded on it), a
partial last training batch (a dynamic-shape recompile), plain tensors standing in for
parameters in ``functional_call`` (a type guard), and eval's own partial last batch.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import nas.search.darts as darts
from nas.config import build
from nas.run import RunDir
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob
from nas.search.supernet.fused import cell_plan, edge_order
from nas.search.supernet.model import SkipDropout


def _config(order: str, num_samples: int = 20, compile: bool = True,
            stabilize: dict | None = None) -> SearchConfig:
    return build(SearchConfig, {
        # 20 images: 10 train / 10 val; batches of 4 leave 2 over (train drops them, eval not)
        "data": {"name": "synthetic", "batch_size": 4, "eval_batch_size": 4, "augment": False,
                 "options": {"num_samples": num_samples, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": ["none", "skip_connect", "sep_conv_3x3"], "steps": 1, "multiplier": 1},
        "model": {"init_channels": 4, "layers": 3, "partial_channels": 2, "edge_norm": True},
        "arch": {"order": order, "warmup_epochs": 0},  # α steps from the first epoch
        "stabilize": stabilize or {},
        "runtime": {"device": "cpu", "amp": False, "progress": False, "tensorboard": False,
                    "compile": compile},
    })  # fmt: skip


def test_compiled_search_has_one_graph_per_mode(tmp_path, monkeypatch):
    """Two epochs of a second-order search with uneven splits: exactly two graphs."""
    graphs: list[bool] = []  # grad mode of each compiled graph: True train, False eval

    def backend(gm, example_inputs):
        graphs.append(torch.is_grad_enabled())
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    def compile_module(module, device, enabled=True, **_):  # as nas.runtime's, on a CPU backend
        assert enabled
        module.compile(backend=backend)
        return module

    monkeypatch.setattr(darts, "compile_module", compile_module)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    job = SearchJob(_config("second"), RunDir(tmp_path / "run"))
    eval_sizes = [x.shape[0] for x, _ in job.eval_loader]
    assert eval_sizes == [4, 4, 2]  # evaluation sees every image
    for epoch in range(2):
        job.start_epoch(epoch)
        sizes = []
        for batch in job.batches():
            sizes.append(batch[0].shape[0])
            job.step(batch)
        assert sizes == [4, 4]  # the partial last training batch is dropped
        job.evaluate()
    assert graphs == [True, False], graphs
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert not torch._dynamo.utils.counters["graph_break"]
    torch._dynamo.reset()


def _record_graphs(monkeypatch) -> list[bool]:
    """Compile the search's supernet on aot_eager, recording each new graph's grad mode
    (True: training) in the returned list; dynamo's counters and caches start empty."""
    graphs: list[bool] = []

    def backend(gm, example_inputs):
        graphs.append(torch.is_grad_enabled())
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    def compile_module(module, device, enabled=True, **_):
        module.compile(backend=backend)
        return module

    monkeypatch.setattr(darts, "compile_module", compile_module)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    return graphs


def test_stabilized_search_compiles_once_per_mode_and_never_again(tmp_path, monkeypatch):
    """β-DARTS, SDARTS-RS, DARTS- and DrNAS on: the α step (no noise), the weight step (noise) and
    evaluation are one graph each, and the per-epoch schedules (λ, ε, DARTS-'s β buffer)
    recompile nothing in the next epochs."""
    graphs = _record_graphs(monkeypatch)
    cfg = _config("first", stabilize={"beta": 2.0, "rs_epsilon": 0.3, "aux_skip": True,
                                      "dirichlet": True})
    job = SearchJob(cfg, RunDir(tmp_path / "run"))
    for epoch in range(3):
        job.start_epoch(epoch)
        for batch in job.batches():
            job.step(batch)
        job.evaluate()
        if epoch == 0:
            first = list(graphs)
    assert graphs == first == [True, True, False], graphs
    assert not torch._dynamo.utils.counters["graph_break"]
    torch._dynamo.reset()


def test_p_darts_skip_dropout_schedule_recompiles_nothing(tmp_path, monkeypatch):
    """A P-DARTS stage's skip-dropout rate changes every epoch (the official schedule): the
    rate must be data the compiled graph reads, not a constant it was traced with."""
    graphs = _record_graphs(monkeypatch)
    job = SearchJob(_config("first"), RunDir(tmp_path / "run"), skip_dropout=0.5)
    rates = []
    for epoch in range(3):
        job.start_epoch(epoch)
        rates.append(next(float(m.p) for m in job.model.modules() if isinstance(m, SkipDropout)))
        for batch in job.batches():
            job.step(batch)
        job.evaluate()
        if epoch == 0:
            first = list(graphs)
    assert len(set(rates)) == 3  # the rate did change every epoch
    assert graphs == first == [True, False], graphs  # α and weight steps share one graph
    assert not torch._dynamo.utils.counters["graph_break"]
    torch._dynamo.reset()


def test_edge_order_is_a_buffer_outside_the_state_dict():
    from nas.search.supernet.model import Supernet
    from nas.spaces import get_space

    model = Supernet(get_space("test", ["none", "sep_conv_3x3"], steps=3, multiplier=2), 3,
                     C=4, layers=3)
    for cell in model.cells:
        assert cell.edge_order.tolist() == cell_plan(cell).order == edge_order(3)
        assert cell.edge_order.dtype == torch.long
    assert not any("edge_order" in k or k.endswith("_cells") for k in model.state_dict())
    reduction = [c.reduction for c in model.cells]
    assert model.normal_cells.tolist() == [i for i, r in enumerate(reduction) if not r]
    assert model.reduce_cells.tolist() == [i for i, r in enumerate(reduction) if r]
    cost = torch.rand(len(model.cells), model.space.num_edges, 2)
    mask = ~torch.tensor(reduction)  # the boolean-mask formula it replaces
    expected = (cost[mask] * model.op_weights(False)).sum() + (
        cost[~mask] * model.op_weights(True)
    ).sum()
    torch.testing.assert_close(model.expected_cost(cost), expected)
    moved = model.to("meta")  # buffers follow .to(device): nothing cached per device
    assert all(c.edge_order.device.type == "meta" for c in moved.cells)


@pytest.mark.parametrize("num_samples, train_sizes", [(20, [4, 4]), (6, [3])])
def test_train_loaders_drop_the_partial_batch_unless_it_is_the_only_one(
    tmp_path, num_samples, train_sizes
):
    """6 images: 3 train, fewer than a batch: the one partial batch stays (an epoch has a
    step); the eval loader keeps every image either way."""
    job = SearchJob(_config("first", num_samples, compile=False), RunDir(tmp_path / "run"))
    assert [x.shape[0] for x, _ in job.train_loader] == train_sizes
    assert [x.shape[0] for x, _ in job.val_loader] == train_sizes
    assert sum(x.shape[0] for x, _ in job.eval_loader) == num_samples // 2
    assert len(job.train_loader) == len(train_sizes)

