"""Multi-seed search: one run per seed, the summary, reuse of finished seeds, the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from nas.cli.main import main
from nas.config import load_config
from nas.errors import ConfigError
from nas.genotype import Genotype, load_genotype
from nas.search.config import SearchConfig
from nas.search.seeds import edge_agreement, format_summary, summarize_seeds

TINY = [
    "data.name=synthetic",
    "data.options={num_samples: 32, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "space.ops=[none, skip_connect, max_pool_3x3, sep_conv_3x3, c2sp_conv_2x2]",
    "space.steps=2",
    "space.multiplier=2",
    "model.init_channels=4",
    "model.layers=3",
    "model.partial_channels=1",
    "model.edge_norm=false",
    "optim.epochs=1",
    "runtime.progress=false",
    "runtime.deterministic=true",
    "runtime.tensorboard=false",
    "runtime.threads=1",  # 2 threads on a busy 2-core machine: 20x slower (OpenMP spinning)
]

A = Genotype(
    normal=[("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 2)],
    normal_concat=[2, 3],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3],
)
# node 0 of the normal cell lists A's edges in the other order (still the same node);
# node 1 differs in one edge; the reduce cell shares 2 of 4 edges
B = Genotype(
    normal=[("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3],
    reduce=[("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3],
)


def test_agreement_of_identical_and_different_genotypes():
    assert edge_agreement(A, A) == 1.0
    assert edge_agreement(A, B, "normal") == 3 / 4
    assert edge_agreement(A, B, "reduce") == 2 / 4
    assert edge_agreement(A, B) == 5 / 8
    assert edge_agreement(B, A) == edge_agreement(A, B)


def test_summary_of_hand_built_genotypes():
    summary = summarize_seeds({3: A, 7: B, 9: A}, val_acc={3: 0.5, 7: None, 9: 0.25})
    assert summary["seeds"] == [3, 7, 9]
    assert summary["op_counts"]["normal"] == {"sep_conv_3x3": 6, "skip_connect": 4,
                                              "max_pool_3x3": 2}
    assert summary["op_counts"]["reduce"] == {"max_pool_3x3": 9, "skip_connect": 2,
                                              "sep_conv_3x3": 1}
    pairs = {tuple(p["seeds"]): p for p in summary["agreement"]["pairs"]}
    assert pairs[(3, 9)] == {"seeds": [3, 9], "normal": 1.0, "reduce": 1.0, "overall": 1.0}
    assert pairs[(3, 7)]["overall"] == pairs[(7, 9)]["overall"] == 5 / 8
    assert summary["agreement"]["mean"] == pytest.approx((1 + 5 / 8 + 5 / 8) / 3)
    slot = summary["edges"]["normal"][3]  # node 1, second edge
    assert (slot["node"], slot["slot"]) == (1, 1)
    assert [(c["seed"], c["op"], c["input"]) for c in slot["choices"]] == [
        (3, "max_pool_3x3", 2), (7, "skip_connect", 2), (9, "max_pool_3x3", 2)]
    assert [r["genotype_file"] for r in summary["runs"]] == [
        "seed3/genotype.yaml", "seed7/genotype.yaml", "seed9/genotype.yaml"]
    md = format_summary(summary, "demo")
    assert "| 1 | 1 | max_pool_3x3 ← 2 | skip_connect ← 2 | max_pool_3x3 ← 2 |" in md
    assert "| 3 | `seed3/genotype.yaml` | 50.00% | n/a |" in md
    assert "| 3, 9 | 1.000 | 1.000 | 1.000 |" in md
    assert "| max_pool_3x3 | 2 | 9 |" in md
    json.dumps(summary)  # plain data


def test_single_seed_summary_has_no_pairs():
    summary = summarize_seeds({0: A})
    assert summary["agreement"]["pairs"] == [] and summary["agreement"]["mean"] is None
    assert "nothing to compare" in format_summary(summary)


@pytest.mark.parametrize(
    "value, needle",
    [("[]", "seeds"), ("[1, 1]", "seeds"), ("[-1]", "seeds"), ("[0, 1.5]", "seeds[1]"),
     ("3", "seeds"), ("[true]", "seeds[0]")],
)
def test_bad_seeds_are_config_errors(value, needle):
    with pytest.raises(ConfigError, match=r"seeds") as err:
        load_config(SearchConfig, None, [f"seeds={value}", *TINY])
    assert needle in str(err.value) and "\n" not in str(err.value)


def _counts(genotypes: list[Genotype], cell: str) -> dict[str, int]:
    return dict(Counter(op for g in genotypes for op, _ in g.cell(cell)[0]))


def test_two_seed_search_cli_summary_and_reuse(tmp_path: Path, capsys):
    run = tmp_path / "multi"
    args = ["search", "quick", f"run_dir={run}", "seeds=[0, 1]", *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out.split()
    files = [run / "seed0" / "genotype.yaml", run / "seed1" / "genotype.yaml"]
    assert printed == [str(files[0]), str(files[1]), str(run / "summary.md")]
    genotypes = [load_genotype(f) for f in files]
    summary = json.loads((run / "summary.json").read_text())
    for cell in ("normal", "reduce"):
        assert summary["op_counts"][cell] == _counts(genotypes, cell)
    assert [r["genotype"] for r in summary["runs"]] == [str(g) for g in genotypes]
    for r, seed in zip(summary["runs"], (0, 1)):  # the last metrics row of each seed's search
        rows = (run / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
        assert r["val_acc"] == json.loads(rows[-1])["val_acc"] and r["epochs"] == 1
    assert summary["agreement"]["pairs"][0]["overall"] == edge_agreement(*genotypes)
    for r, g in zip(summary["runs"], genotypes):  # collapse at a glance: parameter-free share
        free = {"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"}
        for cell in ("normal", "reduce"):
            edges = g.cell(cell)[0]
            assert r[f"{cell}_param_free"] == sum(op in free for op, _ in edges) / len(edges)
    # each seed is an ordinary search with its own seed; the parent keeps the seeds config
    for seed in (0, 1):
        sub = (run / f"seed{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}\n" in sub and "seeds: null" in sub
    assert "seeds:\n- 0\n- 1\n" in (run / "config.yaml").read_text()
    assert (run / "summary.md").read_text().startswith("# Multi-seed search: quick")

    # the same command again reuses both finished searches: no epoch is trained again
    ckpts = [run / f"seed{s}" / "checkpoint.pt" for s in (0, 1)]
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    logged = [run / f"seed{s}" / name for s in (0, 1) for name in ("metrics.jsonl", "metrics.csv")]
    metrics = [p.read_text() for p in logged]
    assert main(args) == 0
    assert capsys.readouterr().out.split() == printed
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    assert [p.read_text() for p in logged] == metrics
    assert [load_genotype(f) for f in files] == genotypes

    # a third seed trains only that seed
    assert main(["search", "quick", f"run_dir={run}", "seeds=[0, 1, 2]", *TINY]) == 0
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    assert (run / "seed2" / "genotype.yaml").is_file()
    assert json.loads((run / "summary.json").read_text())["seeds"] == [0, 1, 2]

    # a one-seed search of the same config refuses the multi-seed folder
    capsys.readouterr()
    assert main(["search", "quick", f"run_dir={run}", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seeds=[...]" in err, err
    assert not (run / "checkpoint.pt").exists()


def test_multi_seed_refuses_a_one_seed_run_folder(tmp_path: Path, capsys):
    run = tmp_path / "single"
    assert main(["search", "quick", f"run_dir={run}", *TINY]) == 0
    capsys.readouterr()
    assert main(["search", "quick", f"run_dir={run}", "seeds=[0, 1]", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run_dir" in err and "one-seed" in err
    assert not (run / "seed0").exists()


def test_multi_seed_refused_under_torchrun(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["search", "quick", f"run_dir={tmp_path / 'r'}", "seeds=[0, 1]", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torchrun" in err and "seeds" in err
    assert not (tmp_path / "r").exists()


def test_run_search_refuses_seeds(tmp_path):
    """run_search runs one search: given seeds it says where they go instead of ignoring
    them, and writes nothing."""
    from nas.search.darts import run_search

    cfg = load_config(SearchConfig, None, [*TINY, f"run_dir={tmp_path / 'r'}", "seeds=[0,1]"])
    with pytest.raises(ConfigError, match="run_search_seeds"):
        run_search(cfg)
    assert not (tmp_path / "r").exists()
