"""Shared pieces of the data-parallel tests: tiny configs, ghost BatchNorm, launching ranks.

The equality tests compare a 2-process gloo step on a global batch of B images (each rank
B/2) with one process stepping on the same B images. Without synchronised BatchNorm (torch's
SyncBatchNorm refuses CPU tensors) each rank normalises its half with the half's own
statistics, so the single-process reference must do the same: :func:`ghost_batch_norm`
makes every training-mode ``F.batch_norm`` normalise each contiguous half of its batch on
its own, which is exactly "two micro-batches of B/2, losses averaged".
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from nas.config import build
from nas.evaluate.train import TrainConfig
from nas.search.config import SearchConfig

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_ddp_worker.py"
REPO = HERE.parents[1]

OPS = ["none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "ssl_conv"]
DATA = {
    "name": "synthetic",
    "batch_size": 8,  # global: 2 ranks x 4
    "eval_batch_size": 16,
    "crop_padding": 2,
    "cutout": 4,
    "options": {"num_samples": 32, "image_size": 8, "channels": 3, "num_classes": 3},
}
RUNTIME = {"device": "cpu", "amp": False, "progress": False, "deterministic": True,
           "threads": 1, "dist_timeout": 60.0}


def search_cfg(order: str) -> SearchConfig:
    """PC-DARTS (K=2, edge normalisation) with the params cost term, first or second order."""
    return build(SearchConfig, {
        "name": f"step-{order}",
        "data": DATA,
        "space": {"ops": OPS, "steps": 2, "multiplier": 2},
        "model": {"init_channels": 4, "layers": 3, "partial_channels": 2, "edge_norm": True},
        "optim": {"epochs": 2, "lr": 0.1},
        "arch": {"order": order, "lr": 3e-3},
        "cost": {"metric": "params", "weight": 0.1},
        "runtime": RUNTIME,
    })


def train_cfg() -> TrainConfig:
    return build(TrainConfig, {
        "name": "step-train",
        "data": DATA,
        "model": {"genotype": "DARTS_V2", "init_channels": 4, "layers": 3, "auxiliary": False},
        "optim": {"epochs": 2, "lr": 0.1},
        "runtime": RUNTIME,
    })


CASES = ("first", "second", "train")
STEPS = 2  # the second step's unrolled weights use the momentum buffers of the first


def make_job(case: str, run_dir: Path):
    """The job of ``case``; its run folder is a read-only view (no files)."""
    from nas.evaluate.train import TrainJob
    from nas.run import RunDir
    from nas.search.darts import SearchJob

    if case == "train":
        return TrainJob(train_cfg())
    return SearchJob(search_cfg(case), RunDir(run_dir, read_only=True))


def take_steps(job) -> dict[str, torch.Tensor]:
    """:data:`STEPS` steps of epoch 0; the parameters and their last gradients."""
    job.start_epoch(0)
    batches = iter(job.batches())
    for _ in range(STEPS):
        job.step(next(batches))
    out = {}
    for name, p in job.model.named_parameters():
        out[name] = p.detach().clone()
        if p.grad is not None:
            out[f"grad:{name}"] = p.grad.detach().clone()
    return out


@contextlib.contextmanager
def ghost_batch_norm(groups: int = 2) -> Iterator[None]:
    """Training-mode batch norm over each of ``groups`` contiguous slices of the batch on
    its own; running statistics become the mean of the slices' updates (as the ranks'
    statistics are averaged at an epoch's end)."""
    original = F.batch_norm

    def ghost(input, running_mean, running_var, weight=None, bias=None, training=False,
              momentum=0.1, eps=1e-5):
        if not training or input.shape[0] % groups:
            return original(input, running_mean, running_var, weight, bias, training,
                            momentum, eps)
        outs, means, variances = [], [], []
        for part in input.chunk(groups):
            rm = None if running_mean is None else running_mean.clone()
            rv = None if running_var is None else running_var.clone()
            outs.append(original(part, rm, rv, weight, bias, True, momentum, eps))
            means.append(rm)
            variances.append(rv)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.copy_(torch.stack(means).mean(0))
            if running_var is not None:
                running_var.copy_(torch.stack(variances).mean(0))
        return torch.cat(outs)

    F.batch_norm = ghost
    try:
        yield
    finally:
        F.batch_norm = original


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, **extra: str) -> dict[str, str]:
    """What torchrun would set for ``rank``, for launching ranks without its agent."""
    return {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def torchrun(*args: str) -> list[str]:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (standalone: a free port itself)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", *args]


def popen(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so a test can kill its whole tree), output to ``log``."""
    with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
