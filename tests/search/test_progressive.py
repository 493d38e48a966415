"""P-DARTS's progressive search: pruning per edge, softmax over the kept ops, the official
skip-dropout schedule, dropout after stride-1 skips only, and a staged search end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from nas.cli.main import main
from nas.errors import ConfigError
from nas.genotype import load_genotype
from nas.search.config import ProgressiveConfig
from nas.search.progressive import prune_ops, skip_dropout_rate
from nas.search.select import stage_mask
from nas.search.supernet.model import MixedOp, SkipDropout, Supernet
from nas.spaces import get_space

OPS = ["none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3",
       "dil_conv_3x3"]


def test_prune_keeps_the_strongest_of_the_kept_ops():
    weights = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05],
                            [0.3, 0.1, 0.2, 0.25, 0.15]])
    mask = torch.tensor([[True, True, True, True, True],
                         [False, True, True, True, True]])  # op 0 already pruned on edge 1
    assert prune_ops(weights, mask, 2).tolist() == [[False, True, True, False, False],
                                                    [False, False, True, True, False]]


def test_skip_dropout_follows_the_official_schedule():
    """p·(E − e − 1)/E while α is warming up, then p·exp(−0.2·(e − W))."""
    assert skip_dropout_rate(0.4, 0, 25, 10) == pytest.approx(0.4 * 24 / 25)
    assert skip_dropout_rate(0.4, 9, 25, 10) == pytest.approx(0.4 * 15 / 25)
    assert skip_dropout_rate(0.4, 10, 25, 10) == pytest.approx(0.4)
    assert skip_dropout_rate(0.4, 15, 25, 10) == pytest.approx(0.4 * math.exp(-1.0))


def _supernet(**kw) -> Supernet:
    torch.manual_seed(0)
    return Supernet(get_space("full", OPS, 2, 2, 2), 3, 4, 3, **kw)


@pytest.mark.parametrize("dirichlet", [False, True])
def test_pruned_ops_get_zero_weight_and_the_rest_their_softmax(dirichlet):
    model = _supernet(dirichlet=dirichlet)
    with torch.no_grad():
        model.alphas_normal.normal_()
    mask = torch.ones_like(model.op_mask_normal)
    mask[:, [1, 2]] = False  # skip and max pool pruned everywhere
    model.set_op_mask(mask, torch.ones_like(mask))
    w = model.op_weights(False)
    assert torch.all(w[:, [1, 2]] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[0]))
    if not dirichlet:
        kept = [0, 3, 4, 5]
        torch.testing.assert_close(w[:, kept], F.softmax(model.alphas_normal[:, kept], -1))
        w[:, 4].sum().backward()  # the pruned ops' α no longer matter
        assert torch.all(model.alphas_normal.grad[:, [1, 2]] == 0)
    with pytest.raises(ValueError, match="op kept per edge"):
        model.set_op_mask(torch.zeros_like(mask), mask)


@pytest.mark.parametrize("fused", [False, True])
def test_skip_dropout_drops_the_stride_one_skip_only(fused):
    model = _supernet(skip_dropout=True, fused=fused).train()
    plain = _supernet(fused=fused).train()
    plain.load_state_dict(model.state_dict())  # same weights and α: the modules differ only
    x = torch.randn(4, 3, 8, 8)
    model.set_skip_dropout(0.0)
    torch.testing.assert_close(model(x), plain(x))
    # a rate of 1 drops every stride-1 skip output: the same as mixing those skips with
    # weight 0; stride-2 skips (reduction cells' inputs 0 and 1: a conv) stay
    model.set_skip_dropout(1.0)
    skip = OPS.index("skip_connect")
    weights = {r: plain.op_weights(r).detach().clone() for r in (False, True)}
    reduction_cell = next(c for c in model.cells if c.reduction)
    for r in (False, True):
        for e, edge in enumerate(reduction_cell.edges):
            if not r or edge.stride == 1:
                weights[r][e, skip] = 0.0
    torch.testing.assert_close(model(x), plain(x, weights=weights))
    for cell in model.cells:
        for edge in cell.edges:
            skip = edge.ops[OPS.index("skip_connect")]
            assert isinstance(skip, nn.Sequential) == (edge.stride == 1)
    model.eval()
    plain.eval()
    torch.testing.assert_close(model(x), plain(x))  # no dropout at evaluation


def test_mixed_op_without_skip_dropout_is_unchanged():
    op = MixedOp(4, 1, tuple(OPS))
    assert not any(isinstance(m, (nn.Dropout, SkipDropout)) for m in op.modules())


def test_skip_dropout_keeps_the_expected_value_and_zeroes_at_the_rate():
    drop = SkipDropout().train()
    drop.p.fill_(0.3)
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = drop(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # inverted dropout: E[y] = x
    assert torch.equal(drop.eval()(x), x)


def test_progressive_config_is_checked():
    with pytest.raises(ConfigError, match="keep_ops"):
        ProgressiveConfig(layers=[3, 5, 7], keep_ops=[3]).validate()
    with pytest.raises(ConfigError, match="not increase"):
        ProgressiveConfig(layers=[3, 5, 7], keep_ops=[3, 4]).validate()
    ProgressiveConfig(layers=[3, 5, 7]).validate()


def test_staged_search_deepens_prunes_and_derives_from_the_kept_ops(tmp_path: Path):
    run = tmp_path / "pdarts"
    args = ["search", "quick", f"run_dir={run}", "data.name=synthetic",
            "data.options={num_samples: 32, image_size: 8, channels: 3, num_classes: 3}",
            "data.batch_size=8", "data.eval_batch_size=16", f"space.ops=[{', '.join(OPS)}]",
            "space.steps=2", "space.multiplier=2", "model.init_channels=4",
            "optim.epochs=1", "runtime.progress=false", "runtime.tensorboard=false",
            "progressive.layers=[3, 4]", "progressive.keep_ops=[3]",
            "progressive.skip_dropout=[0.0, 0.3]"]
    assert main(args) == 0
    stages = json.loads((run / "stages.json").read_text())
    assert [s["layers"] for s in stages] == [3, 4]
    kept = stages[0]["kept_after"]
    assert all(len(ops) == 3 for cell in kept.values() for ops in cell)
    assert stages[1]["kept_after"] == kept  # the last stage prunes nothing more
    cfg1 = yaml.safe_load((run / "stage1" / "config.yaml").read_text())
    assert cfg1["model"]["layers"] == 4 and cfg1["progressive"]["layers"] is None
    assert (run / "stage0" / "metrics.csv").is_file()
    genotype = load_genotype(run / "genotype.yaml")
    for cell in ("normal", "reduce"):
        offsets = [0, 2]
        for j, (op, inp) in enumerate(getattr(genotype, cell)):
            assert op in kept[cell][offsets[j // 2] + inp]
    assert main(args) == 0  # resumed: every stage is finished, the same genotype
    assert load_genotype(run / "genotype.yaml") == genotype
    # DARTS-PT on the finished P-DARTS folder: on its last stage, with its kept ops only
    assert main(["select", str(run), "select.tune_steps=1", "select.eval_batches=1"]) == 0
    picked = load_genotype(run / "genotype_pt.yaml")
    record = json.loads((run / "selection.json").read_text())
    assert record["genotype"] == str(picked)
    for d in record["ops"]:
        assert set(d["accuracy_without"]) == set(kept[d["cell"]][d["edge"]]) - {"none"}
        assert d["op"] in kept[d["cell"]][d["edge"]]
    assert load_genotype(run / "genotype.yaml") == genotype  # the search's stays


def test_stage_mask_is_the_previous_stages_kept_ops():
    ops = ("none", "skip_connect", "max_pool_3x3")
    stages = [{"kept_after": {"normal": [["skip_connect"], ["none", "max_pool_3x3"]],
                              "reduce": [["max_pool_3x3"], ["skip_connect"]]}}, {}]
    assert stage_mask(stages, 0, ops) is None
    normal, reduce = stage_mask(stages, 1, ops)
    assert normal.tolist() == [[False, True, False], [True, False, True]]
    assert reduce.tolist() == [[False, False, True], [False, True, False]]


def test_nas_select_refuses_an_unfinished_p_darts_run(tmp_path, capsys):
    run = tmp_path / "pd"
    run.mkdir()
    (run / "config.yaml").write_text("name: pd\nprogressive: {layers: [3, 4], keep_ops: [3], "
                                     "skip_dropout: [0.0, 0.3]}\n")
    assert main(["select", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finished 0 of 2 stages" in err[0]
