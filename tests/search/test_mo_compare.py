"""The compare.yaml an mo-search writes retrains its front under the study's own budget."""

from __future__ import annotations

from _mo_helpers import tiny_cfg

from nas.config import load_config
from nas.evaluate.compare import CompareConfig, run_compare
from nas.genotype import save_genotype
from nas.search.mo.outputs import compare_config_text
from nas.spaces.baselines import BASELINES


def test_front_compare_config_takes_the_study_budget(tmp_path):
    cfg = tiny_cfg(tmp_path / "mo", "budget.epochs=2", "budget.init_channels=6")
    genotype = tmp_path / "trial_0.yaml"
    save_genotype(BASELINES["DARTS_V1"], genotype)
    path = tmp_path / "compare.yaml"
    entries = [{"name": "trial_0", "genotype": str(genotype)},
               {"name": "DARTS_V2", "genotype": "DARTS_V2"}]
    path.write_text(compare_config_text(cfg, entries))
    assert "600" in path.read_text().split("\n\n")[0]  # the header says how to get the recipe
    compare = load_config(CompareConfig, path, [f"run_dir={tmp_path / 'cmp'}",
                                                "train.runtime.progress=false"])
    assert compare.train.optim.epochs == 2  # not the 600-epoch DARTS recipe
    assert compare.train.model.init_channels == 6 and compare.train.model.layers == 3
    assert compare.train.data.name == "synthetic"
    assert compare.train.data.options == cfg.data.options
    assert compare.train.holdout is None  # the comparison reports test accuracy
    rows = run_compare(compare)
    assert [r["name"] for r in rows] == ["trial_0", "DARTS_V2"]
    assert all(r["channels"] == 6 and 0.0 <= r["acc_mean"] <= 1.0 for r in rows)
