"""The one epoch loop, shared by the supernet search, retraining and multi-objective trials.

A job supplies what differs (one optimisation step, what happens at an epoch's end, its
state); :func:`fit` supplies the rest: resume from the run folder, progress bar, on-device
metric accumulation (one host sync per log interval), metrics rows, atomic checkpoints
with RNG states.

Under torchrun (:mod:`nas.distributed`) every rank runs :func:`fit`; the epoch's loss,
accuracy and image counts are summed over the ranks, rank 0 alone shows progress and
writes metrics and checkpoints (holding every rank's RNG state), and every rank resumes
from that checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from nas import distributed
from nas.run import CheckpointError, RunDir, error_summary
from nas.tensorboard import TensorBoardLog

__all__ = [
    "Job",
    "fit",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "EPOCH",
    "TRAIN_LOSS",
    "TRAIN_ACC",
    "EPOCH_TIME",
    "IMAGES_PER_S",
    "sgd_param_groups",
    "sgd_cosine",
]

log = logging.getLogger("nas")

EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
EPOCH_TIME = "epoch_time_s"
IMAGES_PER_S = "images_per_s"


class Job(Protocol):
    """What :func:`fit` needs from a search or training job."""

    device: torch.device

    def start_epoch(self, epoch: int) -> None: ...

    def batches(self) -> Iterable[Any]: ...

    def num_batches(self) -> int: ...

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One update; returns (mean loss, number correct, batch size) without host sync."""
        ...

    def end_epoch(self, epoch: int) -> dict[str, Any]: ...

    def should_stop(self) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python and torch; optionally force deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    """Python's, torch's CPU and (where present) every GPU's RNG state, for a checkpoint."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _cpu_bytes(value: Any) -> torch.Tensor:
    """An RNG state as the CPU ByteTensor torch's setters insist on, wherever it was loaded
    (a checkpoint mapped onto a GPU holds GPU tensors: torch.set_rng_state refuses them)."""
    return torch.as_tensor(value).detach().to(device="cpu", dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved; GPU states only where CUDA is present."""
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_cpu_bytes(s) for s in state["cuda"]])


def _rank_rng(ckpt: dict[str, Any]) -> dict[str, Any]:
    """This rank's RNG state: its own when the checkpoint has one per rank of this world
    size, else rank 0's (e.g. a single-process checkpoint resumed under torchrun)."""
    world = distributed.current()
    per_rank = ckpt.get("rng_ranks")
    if world.distributed and isinstance(per_rank, list) and len(per_rank) == world.size:
        return per_rank[world.rank]
    return ckpt["rng"]


def _restore(job: Job, ckpt: dict[str, Any], path: Any) -> int:
    """Load ``ckpt`` into ``job`` and the RNGs; returns its epoch. A checkpoint of another
    network or job (missing keys, wrong shapes, wrong types) is a CheckpointError."""
    try:
        start = ckpt["epoch"]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"epoch {start!r} is not a count")
        job.load_state_dict(ckpt["job"])
        set_rng_state(_rank_rng(ckpt))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"{path}: checkpoint does not match this run ({error_summary(exc)}); "
            "delete it or use another run_dir to start over"
        ) from None
    return start


def fit(
    job: Job,
    run: RunDir,
    epochs: int,
    *,
    log_interval: int = 20,
    progress: bool = True,
    desc: str = "train",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    tensorboard: bool = True,
) -> int:
    """Run ``job`` for ``epochs`` epochs in ``run``, resuming from its checkpoint.

    Returns the number of completed epochs (less than ``epochs`` if the job stopped early).
    ``on_epoch`` sees each epoch's metrics row after its checkpoint is written (e.g. to
    report intermediate results to a Ray Tune scheduler). ``tensorboard``: also write each
    row (and what the job adds, e.g. a search's α) as TensorBoard events into the run folder.
    """
    done = _fit(job, run, epochs, log_interval, progress and distributed.current().is_main,
                desc, on_epoch, tensorboard)
    # ranks leave together: rank 0's last checkpoint and metrics exist when any returns
    distributed.barrier("the end of training")
    return done


def _fit(
    job: Job,
    run: RunDir,
    epochs: int,
    log_interval: int,
    progress: bool,
    desc: str,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    tensorboard: bool,
) -> int:
    start = 0
    # On the CPU, never job.device: the RNG states must stay CPU ByteTensors, and
    # load_state_dict copies the rest where it belongs (module tensors into the device
    # parameters; optimizer state cast to each parameter's device, while Adam/SGD's `step`
    # counters stay CPU tensors as in a fresh optimizer, so a step never syncs on them).
    ckpt = run.load_checkpoint(map_location="cpu")
    if ckpt is not None:
        start = _restore(job, ckpt, run / run.CHECKPOINT)
        if ckpt.get("stopped"):
            log.info("run already stopped early at epoch %d", start)
            return start
        if start < epochs:
            log.info("resuming %s from epoch %d/%d", run.path, start, epochs)
    run.truncate_metrics(start)
    # steps are 1-based epochs; a resumed run drops the events written after its checkpoint
    tb = TensorBoardLog(run.path, enabled=tensorboard and run.writes, purge_step=start + 1)
    try:
        return _epochs(job, run, start, epochs, log_interval, progress, desc, on_epoch, tb)
    finally:
        tb.close()


def _epochs(job, run, start, epochs, log_interval, progress, desc, on_epoch, tb) -> int:
    for epoch in range(start, epochs):
        job.start_epoch(epoch)
        sums = torch.zeros(2, device=job.device, dtype=torch.float64)
        count = 0
        tic = time.perf_counter()
        bar = tqdm(
            job.batches(),
            total=job.num_batches(),
            desc=f"{desc} {epoch + 1}/{epochs}",
            disable=not progress or os.environ.get("TQDM_DISABLE") == "1",  # nas -q
            leave=False,
            dynamic_ncols=True,
        )
        for i, batch in enumerate(bar):
            # a new step for CUDA-graph trees (runtime.compile_mode=reduce-overhead): the
            # last step's graph outputs may be overwritten; free when nothing is captured
            torch.compiler.cudagraph_mark_step_begin()
            loss, correct, n = job.step(batch)
            sums += torch.stack([loss.detach().double() * n, correct.detach().double()])
            count += n
            if progress and (i + 1) % log_interval == 0:
                total_loss, total_correct = sums.tolist()
                loss_s, acc_s = f"{total_loss / count:.3f}", f"{total_correct / count:.3f}"
                bar.set_postfix(loss=loss_s, acc=acc_s)
        bar.close()
        if distributed.current().distributed:  # the whole global batch, not this shard
            totals = torch.cat([sums, sums.new_tensor([count])])
            sums, count = totals[:2], int(distributed.all_reduce_sum_(totals)[2].item())
        total_loss, total_correct = sums.tolist()
        elapsed = time.perf_counter() - tic
        row: dict[str, Any] = {
            EPOCH: epoch,
            TRAIN_LOSS: total_loss / max(count, 1),
            TRAIN_ACC: total_correct / max(count, 1),
            EPOCH_TIME: elapsed,
            IMAGES_PER_S: count / max(elapsed, 1e-9),
        }
        row.update(job.end_epoch(epoch))
        run.log_metrics(row)
        tb.scalars(row, epoch + 1)
        if hasattr(job, "log_tensorboard"):
            job.log_tensorboard(tb, epoch + 1)
        stopped = job.should_stop()
        ckpt = {"epoch": epoch + 1, "rng": rng_state(), "stopped": stopped}
        per_rank = distributed.gather_object(ckpt["rng"])  # None in a single process
        if per_rank is not None:
            ckpt["rng_ranks"] = per_rank
        if run.writes:
            run.save_checkpoint({**ckpt, "job": job.state_dict()})
        shown = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items()
            if k != EPOCH and not isinstance(v, (dict, list))
        )
        log.info("%s epoch %d/%d: %s", desc, epoch + 1, epochs, shown)
        if on_epoch is not None:
            on_epoch(row)
        if stopped:
            log.info("stopping early after epoch %d", epoch + 1)
            return epoch + 1
    return max(start, epochs)


def sgd_param_groups(model: torch.nn.Module, params, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with SSL displacements exempt from weight decay (OPERATORS.md)."""
    from nas.ops import displacement_parameters

    exempt = {id(p) for p in displacement_parameters(model)}
    params = list(params)
    decayed = [p for p in params if id(p) not in exempt]
    free = [p for p in params if id(p) in exempt]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if free:
        groups.append({"params": free, "weight_decay": 0.0})
    return groups


def sgd_cosine(model: torch.nn.Module, params, optim) -> tuple[torch.optim.SGD, Any]:
    """The DARTS weight optimizer: SGD with momentum, cosine-annealed to ``optim.lr_min``.

    ``optim`` is an :class:`nas.config.OptimConfig`; SSL displacements get no weight decay.
    """
    # foreach: a handful of multi-tensor kernels per step instead of ~4 per weight tensor
    # (torch picks it on CUDA anyway; explicit, the CPU runs the same code path)
    optimizer = torch.optim.SGD(
        sgd_param_groups(model, params, optim.weight_decay), lr=optim.lr, momentum=optim.momentum,
        foreach=True,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, max(optim.epochs, 1), eta_min=optim.lr_min
    )
    return optimizer, scheduler
