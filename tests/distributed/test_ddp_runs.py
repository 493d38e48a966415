"""Whole distributed searches: `torchrun -m nas`, kill and resume, a failing rank.

Each launch is two CPU processes with gloo on a tiny synthetic search (PC-DARTS K=2,
first order, params cost term, 2 epochs of 4 steps; second order is checked step by step
in test_ddp_step.py); most of a launch is starting Python and importing torch three times
(torchrun's agent and two ranks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _ddp_helpers import REPO, WORKER, free_port, popen, rank_env, torchrun

from nas.genotype import load_genotype

TINY = [
    "data.name=synthetic",
    "data.options={num_samples: 64, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8",  # global: 4 per rank; 32 training images -> 4 steps an epoch
    "data.eval_batch_size=16",
    "space.ops=[none, skip_connect, max_pool_3x3, sep_conv_3x3, ssl_conv]",
    "space.steps=2",
    "space.multiplier=2",
    "model.init_channels=4",
    "model.layers=3",
    "model.partial_channels=2",
    "arch.order=first",
    "cost.weight=0.1",
    "optim.epochs=2",
    "runtime.device=cpu",
    "runtime.progress=false",
    "runtime.deterministic=true",
    "runtime.dist_timeout=60",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMING = {"epoch_time_s", "images_per_s"}


def _search_args(run: Path) -> list[str]:
    return ["search", "quick", f"run_dir={run}", *TINY]


def _rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def _finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, log.read_text()


@pytest.mark.slow
def test_killed_distributed_search_resumes_to_the_same_genotype(tmp_path: Path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    command = torchrun(str(WORKER), "cli")  # `nas` with a fault hook, the same command twice
    # The uninterrupted run (python -m nas under torchrun) and the run that a SIGKILLed rank
    # ends go side by side (deterministic mode: timing cannot change results).
    ref = popen(torchrun("-m", "nas", *_search_args(reference)), ENV, tmp_path / "ref.log")
    tic = time.monotonic()
    died = popen([*command, *_search_args(killed)], {**ENV, "NAS_TEST_FAULT": "1:6:kill"},
                 tmp_path / "killed.log")
    code, text = _finish(died, tmp_path / "killed.log")
    assert code != 0, "the job survived a SIGKILLed rank"  # torchrun stops the other rank
    assert time.monotonic() - tic < 120, text[-2000:]
    code, text = _finish(ref, tmp_path / "ref.log")
    assert code == 0, text[-3000:]
    assert len(_rows(reference)) == 2
    assert len(_rows(killed)) == 1  # killed at the 2nd of epoch 2's 4 steps
    assert not (killed / "genotype.yaml").exists()

    resumed = subprocess.run([*command, *_search_args(killed)], env=ENV, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert load_genotype(killed / "genotype.yaml") == load_genotype(reference / "genotype.yaml")
    assert _rows(killed) == _rows(reference)  # same losses, accuracies, α-derived genotypes
    # rank 0 alone wrote the folder: one log line per epoch, no leftovers of rank 1
    log = (killed / "log.txt").read_text()
    assert log.count("search epoch 2/2") == 1
    assert not list(killed.glob(".*.tmp"))


def test_a_failing_rank_ends_the_job_with_a_clear_error(tmp_path: Path):
    """Without torchrun's agent: rank 1 raises at its 2nd step; rank 0, waiting for it in a
    collective, exits with a one-line error naming itself instead of hanging."""
    port = free_port()
    cmd = [sys.executable, str(WORKER), "cli", "search", "quick", f"run_dir={tmp_path / 'r'}",
           *TINY, "optim.epochs=1", "runtime.dist_timeout=30"]
    logs = [tmp_path / f"rank{r}.log" for r in (0, 1)]
    env = {"NAS_TEST_FAULT": "1:2:raise"}
    procs = [popen(cmd, rank_env(r, 2, port, **env), logs[r]) for r in (0, 1)]
    tic = time.monotonic()
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    elapsed = time.monotonic() - tic
    text = [path.read_text() for path in logs]
    assert codes[1] == 1 and "injected fault on rank 1 at step 2" in text[1], text[1][-2000:]
    assert codes[0] == 2, text[0][-2000:]
    errors = [line for line in text[0].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 0: "), text[0][-2000:]
    assert "another rank died" in errors[0]
    assert elapsed < 60


TRAIN = [
    "data.name=synthetic",
    "data.options={num_samples: 32, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8",
    "data.eval_batch_size=12",  # 32 test images: the ranks' shards of the last batch differ
    "model.init_channels=4",
    "model.layers=3",
    "model.auxiliary=false",
    "optim.epochs=2",
    "runtime.device=cpu",
    "runtime.progress=false",
    "runtime.deterministic=true",
]


@pytest.mark.slow
def test_distributed_train_writes_one_run_with_the_whole_test_accuracy(tmp_path: Path):
    """`torchrun --no-python nas train`: rank 0 writes the run; the reported accuracy is the
    final model's accuracy on the whole test split, as one process measures it."""
    from nas.cli.configs import resolve_config
    from nas.config import load_config
    from nas.evaluate.train import TrainConfig, TrainJob
    from nas.run import load_weights

    run = tmp_path / "run"
    nas = Path(sys.executable).with_name("nas")
    head = torchrun("--no-python", str(nas)) if nas.exists() else torchrun("-m", "nas")
    done = subprocess.run([*head, "train", "quick", f"run_dir={run}", *TRAIN], env=ENV,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_rows(run)) == 2
    assert (run / "log.txt").read_text().count("train epoch 2/2") == 1
    result = json.loads((run / "result.json").read_text())
    cfg = load_config(TrainConfig, resolve_config("quick", "train"), [f"run_dir={run}", *TRAIN])
    job = TrainJob(cfg)  # one process, the whole test split
    job.model.load_state_dict(load_weights(run / "model.pt"))
    assert job.evaluate() == result["test_acc"]
    assert result["test_acc"] * 32 == round(result["test_acc"] * 32)
