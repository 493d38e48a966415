"""The experiments' configs load, name what the issue asks for, and the pipeline runs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.config import load_config
from nas.evaluate.compare import CompareConfig
from nas.genotype import load_genotype
from nas.search.config import SearchConfig

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("name", ["fashion_mnist_cpu", "cifar10_gpu"])
def test_configs_load_and_hold_the_entries(name):
    folder = EXPERIMENTS / name
    search = load_config(SearchConfig, folder / "search.yaml", [])
    cost = load_config(SearchConfig, folder / "search_cost.yaml", [])
    assert search.space.name == cost.space.name == "full"
    assert search.cost.weight == 0 and cost.cost.weight > 0
    assert search.stabilize.beta == cost.stabilize.beta == 25  # the measured default
    # plain DARTS, the group the default must beat: searched by the pipeline at paper
    # scale, the committed cells of the first run on Fashion-MNIST
    plain_cfg = folder / ("plain_darts/search.yaml" if name == "fashion_mnist_cpu"
                          else "search_plain.yaml")
    plain = load_config(SearchConfig, plain_cfg, [])
    assert plain.stabilize.beta == 0 and plain.cost.weight == 0
    assert dataclasses.replace(plain, name=search.name, stabilize=search.stabilize) == search
    compare = load_config(CompareConfig, folder / "compare.yaml", [])
    names = {e.name for e in compare.entries}
    assert {"searched", "searched_cost", "plain_darts", "DARTS_V2", "PC_DARTS", "O_DARTS",
            "DO_DARTS", "C2SP_DARTS", "random"} <= names
    [rnd] = [e for e in compare.entries if e.random is not None]
    assert rnd.random.space == "full" and rnd.random.n == 8
    assert compare.seeds == [0, 1, 2]
    for script in ("run.sh", "run_parallel.sh") if name == "fashion_mnist_cpu" else ("run.sh",):
        assert (folder / script).stat().st_mode & 0o111  # executable
        assert "SEARCH_SEEDS:-[0,1,2,3]" in (folder / script).read_text()  # 4 vs 3 < 0.05


def test_committed_plain_darts_cells_load():
    folder = EXPERIMENTS / "fashion_mnist_cpu" / "plain_darts"
    for k in range(3):
        genotype = load_genotype(folder / f"seed{k}" / "genotype.yaml")
        assert len(genotype.normal) == len(genotype.reduce) == 8


@pytest.mark.parametrize("name", ["fashion_mnist_cpu", "cifar10_gpu"])
def test_render_compare_fills_every_placeholder(name, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    here = EXPERIMENTS / name
    script = f'source "{EXPERIMENTS / "render_compare.sh"}"; render_compare'
    out = subprocess.run(["bash", "-c", script], env={**os.environ, "HERE": str(here),
                         "RUNS": str(tmp_path)}, capture_output=True, text=True, check=True)
    assert "@" not in out.stdout
    rendered = tmp_path / "compare.yaml"
    rendered.write_text(out.stdout)
    specs = {e.name: e.genotype for e in load_config(CompareConfig, rendered, []).entries}
    assert specs["searched"] == str(tmp_path / "search")
    assert specs["searched_cost"] == str(tmp_path / "search_cost")
    assert specs["plain_darts"] == (str(here / "plain_darts") if name == "fashion_mnist_cpu"
                                    else str(tmp_path / "search_plain"))


@pytest.mark.slow
def test_smoke_pipeline_writes_every_result(tmp_path):
    """The whole pipeline at smoke scale: searches, compare, report, committed files.

    Runs ``run_parallel.sh``: its two one-thread streams train everything, then it hands
    over to ``run.sh``, which must reuse that work (searches, trainings) and assemble.
    """
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    nas = Path(sys.executable).with_name("nas")  # the console script of this environment
    if not nas.exists():
        pytest.skip("no nas console script next to the interpreter")
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "RESULTS": str(tmp_path / "res"),
           "NAS": str(nas)}
    proc = subprocess.run(["bash", str(EXPERIMENTS / "fashion_mnist_cpu" / "run_parallel.sh"),
                           "--smoke"], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = tmp_path / "res"
    for f in ("compare.md", "compare.csv", "pareto_params.png", "pareto_latency.png",
              "summary.md", "summary.json", "report.html", "commands.txt", "significance.md",
              "wall_times.tsv", "machine.txt"):
        assert (res / f).stat().st_size > 0, f
    csv_text = (res / "compare.csv").read_text()
    for name in ("searched_s3", "searched (n=4)", "searched_cost_s2", "searched_cost (n=3)",
                 "plain_darts_s0", "plain_darts (n=3)", "random_7", "random (n=8)",
                 "C2SP_DARTS"):
        assert name in csv_text, name
    assert sorted(p.name for p in (res / "genotypes").glob("*.yaml")) == [
        "searched_cost_seed0.yaml", "searched_cost_seed1.yaml", "searched_cost_seed2.yaml",
        "searched_seed0.yaml", "searched_seed1.yaml", "searched_seed2.yaml",
        "searched_seed3.yaml"]
    # four searched cells against three plain ones: a p below 0.05 is possible
    assert "| searched (n=4) | plain_darts (n=3) |" in (res / "significance.md").read_text()
    steps = [line.split("\t")[0] for line in
             (res / "wall_times.tsv").read_text().splitlines()[1:]]
    assert sorted(steps[:4]) == ["A:compare", "A:search_seeds", "B:compare", "B:search_cost"]
    assert steps[4:] == ["search_seeds", "search_cost", "compare", "report"]
    commands = (res / "commands.txt").read_text()
    assert commands.count("OMP_NUM_THREADS=1 ") == 4  # the streams' commands, recorded
    # the experiment folder is ".", never this machine's absolute path
    assert str(EXPERIMENTS.resolve()) not in commands and "paths_relative_to=." in commands
    # run.sh trained nothing again: each (entry, seed) log holds one epoch, not two
    logs = sorted((tmp_path / "runs" / "compare").glob("*/seed*/log.txt"))
    assert len(logs) == 23 * 2  # 4 + 3 searched, 3 plain, 5 baselines, 8 random; 2 seeds
    for log in logs:
        assert log.read_text().count("train epoch 1/1") == 1, log


def test_beta_darts_ramp_under_adam_reverses_the_cost_terms_order():
    """experiments/beta_cost_adam.py's finding, on a toy cost: three ops per edge (free,
    cheap, costly). The cost term alone ranks them by cost; β-DARTS's ramp added to the same
    Adam step puts the costly op on top, as the cost-aware experiment's cells showed."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        from beta_cost_adam import simulate
    finally:
        sys.path.remove(str(EXPERIMENTS))
    cfg = load_config(SearchConfig, str(EXPERIMENTS / "fashion_mnist_cpu" / "search_cost.yaml"))
    cost = torch.tensor([0.0, 0.01, 0.03]).expand(2, 14, 3).contiguous()
    alone = simulate(cost, cfg, steps_per_epoch=16, beta=0.0)
    with_beta = simulate(cost, cfg, steps_per_epoch=16, beta=cfg.stabilize.beta)
    assert alone[0] > alone[1] > alone[2]  # free > cheap > costly: the cost term's order
    assert with_beta[2] > with_beta[1] > with_beta[0]  # reversed
