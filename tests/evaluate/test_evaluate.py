"""Retraining, deploy, baselines, transplants and comparison on tiny CPU settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.cli.main import main
from nas.config import load_config
from nas.cost import count_params
from nas.evaluate.compare import CompareConfig, run_compare
from nas.evaluate.deploy_report import deploy_run
from nas.evaluate.train import TrainConfig, TrainJob, run_train
from nas.genotype import save_genotype
from nas.network import NetworkCIFAR
from nas.pareto import pareto_mask
from nas.spaces.baselines import BASELINES, transplant

DATA = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.cutout=2",
]
SMALL = [*DATA, "model.layers=3", "model.init_channels=4", "runtime.progress=false"]


def _train_cfg(tmp: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"run_dir={tmp}", "optim.epochs=2", *SMALL, *extra])


@pytest.mark.parametrize(
    "name, published_m", [("DARTS_V2", 3.35), ("PC_DARTS", 3.63), ("P_DARTS", 3.43)]
)
def test_baseline_parameter_counts(name, published_m):
    model = NetworkCIFAR(36, 10, 20, True, BASELINES[name])
    assert round(count_params(model) / 1e6, 2) == published_m


def test_transplant_swaps_ops_and_changes_size():
    o_darts = transplant(BASELINES["DARTS_V2"], "osep")
    assert o_darts.ops_used() == {"osep_conv_3x3", "skip_connect", "dil_conv_3x3", "max_pool_3x3"}
    assert [i for _, i in o_darts.normal] == [i for _, i in BASELINES["DARTS_V2"].normal]
    assert o_darts == BASELINES["O_DARTS"]
    v2 = count_params(NetworkCIFAR(36, 10, 20, False, BASELINES["DARTS_V2"]))
    ours = count_params(NetworkCIFAR(42, 10, 20, False, o_darts))
    assert ours != v2
    # OPERATORS.md: o-DARTS at 42 channels with the integer group solver ~3.300 M params.
    assert round(ours / 1e6, 2) == 3.30


def test_searched_genotype_trains_and_deploys(tmp_path):
    search_dir = tmp_path / "search"
    assert main(["search", "quick", f"run_dir={search_dir}", "optim.epochs=1", *DATA,
                 "space.steps=2", "space.multiplier=2", "model.init_channels=4",
                 "model.layers=3", "runtime.progress=false"]) == 0
    genotype_file = search_dir / "genotype.yaml"
    run = tmp_path / "train"
    cfg = _train_cfg(run, f"model.genotype={genotype_file}")
    [result] = run_train(cfg)
    assert result.test_acc is not None and 0.0 <= result.test_acc <= 1.0
    state = torch.load(run / "model.pt", weights_only=True)  # plain tensors only
    assert "classifier.weight" in state
    report = deploy_run(run, batch_size=16)
    assert report["max_abs_diff"] < 1e-4
    assert report["deploy_form"]["params"] <= report["train_form"]["params"]
    assert json.loads((run / "deploy.json").read_text())["max_abs_diff"] == report["max_abs_diff"]


def test_drop_path_ramps_and_aux_is_used(tmp_path):
    cfg = _train_cfg(tmp_path, "model.drop_path=0.3", "optim.epochs=4")
    job = TrainJob(cfg)
    probs = []
    for epoch in range(4):
        job.start_epoch(epoch)
        probs.append(job.model.drop_path_prob)
    assert probs == pytest.approx([0.0, 0.075, 0.15, 0.225])
    x, y = next(iter(job.train_loader))
    assert isinstance(job.model.train()(x), tuple)
    loss, _, _ = job.step((x, y))
    assert job.model.auxiliary_head.classifier.weight.grad is not None
    assert isinstance(job.model.eval()(x), torch.Tensor)


def test_compare_table_rows_match_runs(tmp_path):
    genotype_file = tmp_path / "g.yaml"
    save_genotype(BASELINES["DARTS_V1"], genotype_file)
    cfg = load_config(CompareConfig, None, [
        f"run_dir={tmp_path / 'cmp'}",
        "train.optim.epochs=1",
        *[f"train.{o}" for o in SMALL],
        f"entries=[{{name: mine, genotype: {genotype_file}}}, "
        "{name: V2, genotype: DARTS_V2, init_channels: 6}]",
        "seeds=[0, 1]",
    ])
    rows = run_compare(cfg)
    assert [r["name"] for r in rows] == ["mine", "V2"]
    assert rows[1]["channels"] == 6 and rows[0]["seeds"] == 2
    for row in rows:
        seeds = sorted((tmp_path / "cmp" / row["name"]).glob("seed*/result.json"))
        accs = [json.loads(p.read_text())["test_acc"] for p in seeds]
        assert len(accs) == 2
        assert row["acc_mean"] == pytest.approx(sum(accs) / 2)
        params = json.loads(seeds[0].read_text())["params"]
        assert row["params_M"] == pytest.approx(params / 1e6)
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert table.count("\n| mine |") == 1 and "| V2 |" in table
    assert (tmp_path / "cmp" / "compare.csv").read_text().count("\n") == 3
    for plot in ("pareto_params.png", "pareto_latency.png"):
        assert (tmp_path / "cmp" / plot).stat().st_size > 1000
    # A second call reuses the finished runs (no retraining: metrics unchanged).
    before = (tmp_path / "cmp" / "mine" / "seed0" / "metrics.jsonl").read_text()
    run_compare(cfg)
    assert (tmp_path / "cmp" / "mine" / "seed0" / "metrics.jsonl").read_text() == before


def test_pareto_mask_hand_made():
    import numpy as np

    acc = np.array([0.90, 0.92, 0.91, 0.85, 0.92])
    cost = np.array([1.0, 2.0, 3.0, 0.5, 2.5])
    assert pareto_mask(acc, cost).tolist() == [True, True, False, True, False]


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.cli.main", "train", "quick", f"run_dir={run}",
           "optim.epochs=4", "data.name=synthetic", "data.options={num_samples: 256, "
           "image_size: 16, channels: 3, num_classes: 3}", "data.batch_size=8",
           "model.layers=3", "model.init_channels=8", "runtime.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "result.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]
    assert json.loads((run / "result.json").read_text())["test_acc"] is not None


def test_runtime_compile_compiles_retraining_in_place(tmp_path, monkeypatch, caplog):
    """runtime.compile compiles the network itself (so evaluation runs compiled too), and
    falls back to eager with one warning where inductor has no C++ compiler."""
    import logging

    from nas import runtime

    monkeypatch.setattr(runtime, "_cpu_compiler_missing", lambda: None)
    job = TrainJob(_train_cfg(tmp_path / "a", "runtime.compile=true"))
    assert job.forward is job.model and job.model._compiled_call_impl is not None
    monkeypatch.setattr(runtime, "_cpu_compiler_missing", lambda: "no C++ compiler found")
    with caplog.at_level(logging.WARNING, logger="nas"):
        job = TrainJob(_train_cfg(tmp_path / "b", "runtime.compile=true"))
    assert job.model._compiled_call_impl is None
    assert "runtime.compile: no C++ compiler found; running eagerly" in caplog.messages


def test_channels_last_default_is_cpu_retraining_only(tmp_path):
    """runtime.channels_last unset: on for retraining on CPU (measured faster there), off
    for searches and on CUDA; an explicit value wins. Network and batches follow it."""
    from nas.config import RuntimeConfig
    from nas.run import RunDir
    from nas.search.config import SearchConfig
    from nas.search.darts import SearchJob

    assert RuntimeConfig().use_channels_last("cpu", cpu_default=True) is True
    assert RuntimeConfig().use_channels_last("cpu") is False
    assert RuntimeConfig().use_channels_last("cuda:0", cpu_default=True) is False
    assert RuntimeConfig(channels_last=False).use_channels_last("cpu", True) is False
    assert RuntimeConfig(channels_last=True).use_channels_last("cuda") is True

    def layout(job, x):
        weight = job.model.stem[0].weight
        cl = weight.is_contiguous(memory_format=torch.channels_last)
        assert (x.is_contiguous(memory_format=torch.channels_last)
                and not x.is_contiguous()) is cl
        return cl

    for extra, expected in (((), True), (("runtime.channels_last=false",), False)):
        job = TrainJob(_train_cfg(tmp_path / str(expected), *extra))
        assert layout(job, next(iter(job.batches()))[0]) is expected
    for extra, expected in (((), False), (("runtime.channels_last=true",), True)):
        cfg = load_config(SearchConfig, None, [*DATA, "model.layers=3",
                                               "model.init_channels=4", *extra])
        job = SearchJob(cfg, RunDir(tmp_path / f"s{expected}"))
        assert layout(job, next(iter(job.batches()))[0]) is expected
