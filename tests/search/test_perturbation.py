"""DARTS-PT's perturbation-based selection: each edge goes to the op whose removal costs the
most validation accuracy, each node keeps the inputs whose removal costs the most; on a
running search (``select.method=perturbation``) and on a finished folder (``nas select``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.cli.main import main
from nas.config import build
from nas.genotype import Genotype, load_genotype
from nas.run import RunDir
from nas.search import perturbation
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob
from nas.search.supernet.model import Supernet
from nas.spaces import get_space

OPS = ["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"]
TINY = [
    "data.name=synthetic",
    "data.options={num_samples: 32, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8", "data.eval_batch_size=16",
    f"space.ops=[{', '.join(OPS)}]", "space.steps=2", "space.multiplier=2",
    "model.init_channels=4", "model.layers=3", "optim.epochs=1",
    "runtime.progress=false", "runtime.tensorboard=false",
]


def _job(tmp_path: Path, **select) -> SearchJob:
    cfg = build(SearchConfig, {
        "data": {"name": "synthetic", "batch_size": 8, "eval_batch_size": 16,
                 "options": {"num_samples": 32, "image_size": 8, "channels": 3,
                             "num_classes": 3}},
        "space": {"ops": OPS, "steps": 2, "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3},
        "select": {"method": "perturbation", **select},
        "runtime": {"device": "cpu", "progress": False},
    })
    return SearchJob(cfg, RunDir(tmp_path / "run"))


def test_selection_follows_the_accuracy_lost_by_each_removal(tmp_path, monkeypatch):
    """With an accuracy that is linear in the mixing weights, Σ V·w, removing op o of edge
    e loses V[e, o]·w[e, o]: DARTS-PT must decide each edge to the argmax of V·w and keep
    per node the inputs with the largest V at their decided op, whatever α's ranking."""
    job = _job(tmp_path, tune_steps=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in job.model.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    base = {r: job.model.op_weights(r).detach() for r in (False, True)}
    value = {r: torch.rand(base[r].shape, generator=g) for r in (False, True)}
    monkeypatch.setattr(perturbation, "_accuracy", lambda job, w, n: float(
        sum((value[r] * w[r]).sum() for r in (False, True))))
    genotype, record = perturbation.perturbation_select(job, seed=0)
    ops = job.space.ops
    for reduction, cell in ((False, genotype.normal), (True, genotype.reduce)):
        lost = value[reduction] * base[reduction]
        lost[:, ops.index("none")] = -1  # never a candidate
        best = lost.argmax(1)
        want, start = [], 0
        for node in range(2):
            inputs = list(range(start, start + 2 + node))
            kept = sorted(inputs, key=lambda e: -value[reduction][e, best[e]].item())[:2]
            want += [(ops[best[e]], e - start) for e in inputs if e in kept]
            start += 2 + node
        assert [tuple(e) for e in cell] == want
    # every edge was scored once per candidate op (no `none`), in a seeded random order
    assert len(record["ops"]) == 10
    assert all(len(d["accuracy_without"]) == len(OPS) - 1 for d in record["ops"])


def test_ops_pruned_by_p_darts_are_never_candidates(tmp_path, monkeypatch):
    """Where removing every kept op raises the accuracy, a pruned op (weight 0, removal
    changes nothing) would cost "the most" to remove; it must not be chosen, nor scored."""
    job = _job(tmp_path, tune_steps=0)
    g = torch.Generator().manual_seed(5)
    masks = []
    for reduction in (False, True):
        mask = torch.rand(job.model.op_weights(reduction).shape, generator=g) < 0.5
        mask[:, 1] = True  # one kept op per edge at least (skip_connect)
        masks.append(mask)
    job.model.set_op_mask(*masks)
    value = {r: torch.rand(masks[r].shape, generator=g) for r in (False, True)}
    monkeypatch.setattr(perturbation, "_accuracy", lambda job, w, n: -float(
        sum((value[r] * w[r]).sum() for r in (False, True))))
    _, record = perturbation.perturbation_select(job, seed=0)
    ops = job.space.ops
    for d in record["ops"]:
        mask = masks[d["cell"] == "reduce"][d["edge"]]
        kept = {ops[o] for o in range(len(ops)) if mask[o] and ops[o] != "none"}
        assert set(d["accuracy_without"]) == kept and d["op"] in kept
    assert [d["edge"] for d in record["ops"]] != [0, 1, 2, 3, 4] * 2
    assert len(record["topology"]) == 4


def test_ties_fall_back_to_alpha_not_to_the_order_of_the_space(tmp_path, monkeypatch):
    """A validation split too small to tell two removals apart must not hand the edge to
    the op listed first (skip, pools): with every accuracy equal, DARTS-PT is DARTS."""
    job = _job(tmp_path, tune_steps=0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in job.model.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    monkeypatch.setattr(perturbation, "_accuracy", lambda job, w, n: 0.5)
    genotype, _ = perturbation.perturbation_select(job, seed=0)
    argmax = job.model.genotype()
    assert genotype.normal == argmax.normal and genotype.reduce == argmax.reduce


def test_weights_override_is_the_mixture_it_names():
    space = get_space("full", OPS, 2, 2, 2)
    model = Supernet(space, 3, 4, 3).eval()
    x = torch.randn(2, 3, 8, 8)
    own = {r: model.op_weights(r).detach() for r in (False, True)}
    torch.testing.assert_close(model(x, weights=own), model(x))
    # a decided edge: one-hot on its op, whatever α says
    decided = {r: w.clone() for r, w in own.items()}
    decided[False][0] = torch.eye(len(OPS))[OPS.index("sep_conv_3x3")]
    with torch.no_grad():
        model.alphas_normal[0] = -1e4
        model.alphas_normal[0, OPS.index("sep_conv_3x3")] = 1e4
    torch.testing.assert_close(model(x, weights=decided), model(x))


def test_accuracy_uses_batch_statistics_and_restores_the_running_ones(tmp_path):
    job = _job(tmp_path)
    buffers = [b.clone() for b in job.model.buffers()]
    weights = {r: job.model.op_weights(r).detach() for r in (False, True)}
    acc = perturbation._accuracy(job, weights, 1)
    assert 0 <= acc <= 1
    assert all(torch.equal(a, b) for a, b in zip(buffers, job.model.buffers()))
    x, y = next(iter(job.eval_loader))
    with torch.no_grad():  # train-mode BN: what the search's own steps normalize with
        want = (job.model.train()(x, weights=weights).argmax(1) == y).double().mean().item()
    assert acc == pytest.approx(want)


def test_tuning_trains_the_weights_and_leaves_alpha(tmp_path):
    job = _job(tmp_path, tune_steps=2, eval_batches=1)
    alphas = [p.detach().clone() for p in job.model.arch_parameters()]
    weights = [p.detach().clone() for p in job.weights]
    genotype, record = perturbation.perturbation_select(job, seed=1)
    assert record["tune_steps"] == 2 and 0 <= record["final_accuracy"] <= 1
    assert all(torch.equal(a, b) for a, b in zip(alphas, job.model.arch_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(weights, job.weights))
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)
    genotype.validate(steps=2)


def test_search_with_perturbation_selection_and_nas_select_on_the_folder(tmp_path, capsys):
    run = tmp_path / "pt"
    assert main(["search", "quick", f"run_dir={run}", *TINY, "select.method=perturbation",
                 "select.tune_steps=1", "select.eval_batches=1"]) == 0
    record = json.loads((run / "selection.json").read_text())
    assert load_genotype(run / "genotype.yaml") == Genotype.parse(record["genotype"])
    assert (run / "genotype_argmax.yaml").is_file()
    # a finished plain search, re-derived afterwards: genotype.yaml stays as it was
    plain = tmp_path / "plain"
    assert main(["search", "quick", f"run_dir={plain}", *TINY]) == 0
    before = (plain / "genotype.yaml").read_text()
    capsys.readouterr()
    assert main(["select", str(plain), "select.tune_steps=1", "select.eval_batches=1"]) == 0
    assert capsys.readouterr().out.strip() == str(plain / "genotype_pt.yaml")
    load_genotype(plain / "genotype_pt.yaml").validate(steps=2)
    assert (plain / "genotype.yaml").read_text() == before
    assert (plain / "genotype_pt_normal.png").is_file()


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_nas_select_refuses_a_folder_without_a_search(tmp_path, capsys, make):
    folder = tmp_path / "nothing"
    if make == "empty":
        folder.mkdir()
    assert main(["select", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a search run folder" in err[0]
