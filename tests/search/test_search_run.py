"""End-to-end search runs: tiny synthetic search, kill-and-resume, bad configs."""

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
from nas.genotype import load_genotype
from nas.network import NetworkCIFAR

TINY = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8",
    "data.eval_batch_size=24",
    "space.ops=[none, skip_connect, max_pool_3x3, sep_conv_3x3, c2sp_conv_2x2, ssl_conv, "
    "bdsc_conv_3x3, do_conv_3x3, osep_conv_3x3]",
    "space.steps=2",
    "space.multiplier=2",
    "model.init_channels=4",
    "model.layers=3",
    "runtime.progress=false",
    "runtime.deterministic=true",
]


def test_tiny_search_end_to_end(tmp_path: Path):
    run = tmp_path / "run"
    code = main(
        ["search", "quick", f"run_dir={run}", "optim.epochs=2", "cost.weight=0.1", *TINY]
    )
    assert code == 0
    for name in ("genotype.yaml", "genotype.txt", "genotype_normal.png", "genotype_reduce.png",
                 "alphas.png", "alphas.json", "metrics.csv", "config.yaml", "checkpoint.pt"):
        assert (run / name).stat().st_size > 0, name
    # TensorBoard: every epoch's metrics and the α entropy/heatmap, next to metrics.csv
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    assert [e.step for e in events.Scalars("alpha_entropy/normal")] == [1, 2]
    assert len(events.Images("alphas")) == 2
    genotype = load_genotype(run / "genotype.yaml").validate(steps=2)
    net = NetworkCIFAR(4, 3, 3, True, genotype)
    assert net.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    # Re-running a finished search resumes at the end: same genotype, no new epochs.
    assert main(["search", "quick", f"run_dir={run}", "optim.epochs=2", "cost.weight=0.1",
                 *TINY]) == 0
    assert load_genotype(run / "genotype.yaml") == genotype


def _search_cmd(run: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "nas.cli.main", "search", "quick", f"run_dir={run}",
            f"optim.epochs={epochs}", "arch.order=second", *TINY]


@pytest.mark.slow
def test_killed_search_resumes_to_same_genotype(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    epochs = 4
    reference = tmp_path / "reference"
    subprocess.run(_search_cmd(reference, epochs), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_search_cmd(killed, epochs), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, "search ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_at_kill = (killed / "metrics.jsonl").read_text().count("\n")
    assert rows_at_kill < epochs, "the run finished before it was killed"

    result = subprocess.run(_search_cmd(killed, epochs), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert load_genotype(killed / "genotype.yaml") == load_genotype(reference / "genotype.yaml")
    timing = {"epoch_time_s", "images_per_s"}

    def rows(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in lines]

    assert len(rows(killed)) == epochs
    assert rows(killed) == rows(reference)  # same losses, accuracies and genotypes per epoch


@pytest.mark.parametrize(
    "override, needle",
    [
        (["space.ops=[none, sep_conv_3x3, warp_conv_9x9]"], "warp_conv_9x9"),
        (["optim.epochs=-1"], "optim.epochs"),
        (["data.name=npz:/nonexistent/data.npz", "data.options={}"], "data.npz"),
        (["optim.lrr=0.1"], "optim.lrr"),
        (["model.partial_channels=3"], "partial_channels"),
        (["runtime.sync_bn=true"], "runtime.sync_bn is for retraining"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, capsys, override, needle):
    code = main(["search", "quick", f"run_dir={tmp_path / 'r'}", *TINY, *override])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err, err


def test_run_search_refuses_sync_bn_before_any_work(tmp_path: Path):
    """A config made without build() (dataclasses.replace, as MO trials do) is refused by
    run_search itself, before the run folder exists."""
    import dataclasses

    from nas.errors import ConfigError
    from nas.search.config import SearchConfig
    from nas.search.darts import run_search

    cfg = SearchConfig(run_dir=str(tmp_path / "r"))
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, sync_bn=True))
    with pytest.raises(ConfigError, match="runtime.sync_bn is for retraining") as err:
        run_search(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()


def test_unknown_config_name_exits_2(capsys):
    assert main(["search", "no_such_config"]) == 2
    assert "no_such_config" in capsys.readouterr().err
