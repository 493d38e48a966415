"""Data-parallel runs launched by torchrun: process group, rank-0 rules, gradient averaging.

``torchrun --nproc-per-node N -m nas search CONFIG`` starts N copies of the command, each
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment. :func:`session` turns those into a process group
(NCCL on CUDA, one GPU per local rank; gloo on CPU). Without them, or with
``WORLD_SIZE=1``, nothing is initialised and every helper here returns at once: a
single-process run pays nothing.

Why gradients are averaged by hand instead of by ``DistributedDataParallel``: the
supernet has two parameter sets stepped by two optimizers, and the second-order
architecture step takes its gradients with ``torch.autograd.grad`` at unrolled weights
through ``functional_call``. DDP's reducer only sees ``.backward()`` into ``.grad`` of the
wrapped module's parameters, so it would miss every gradient of the unrolled step. One
flattened all-reduce per gradient set (:func:`average_`) covers all of them with one
mechanism; the networks searched and retrained here are a few MB of gradients, so losing
DDP's overlap of communication with the backward pass costs little.

Every average is weighted by the images each rank saw, so uneven shards (the last batch
of an epoch) still give the gradient of the mean loss over the whole global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from nas.errors import ConfigError, NasError

__all__ = [
    "World",
    "DistributedError",
    "SINGLE",
    "current",
    "launched",
    "is_main_process",
    "session",
    "rank_device",
    "check_batch_size",
    "barrier",
    "main_first",
    "all_reduce_sum_",
    "average_",
    "average_grads_",
    "average_buffers_",
    "broadcast_",
    "broadcast_module_",
    "gather_object",
    "seed_rank",
    "convert_sync_batchnorm",
]

log = logging.getLogger("nas")

#: elements per flattened all-reduce (64 MiB of float32): bounds the extra memory
_BUCKET = 1 << 24


class DistributedError(NasError, RuntimeError):
    """A collective failed: another rank died, stalled past the timeout, or never joined."""


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job; ``size == 1`` outside torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes the run folder, logs and checkpoints."""
        return self.rank == 0


SINGLE = World()
_timeout_s: float = 0.0  # the session's collective timeout, for error messages


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigError(f"{name} is not set: launch distributed runs with torchrun")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"environment variable {name}={value} must be >= 0")
    return value


def launched() -> bool:
    """True when a launcher (torchrun) asked for more than one process."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_main_process() -> bool:
    """False only in a rank other than 0 that torchrun started (reads ``RANK``, so it holds
    before the process group exists and after it is gone): for output such as the CLI's
    result lines, which one rank should print."""
    return _env_int("RANK", 0) == 0 if launched() else True


def _env_world() -> World:
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    if rank >= size or local_rank >= local_size:
        raise ConfigError(
            f"RANK={rank}/LOCAL_RANK={local_rank} out of range for WORLD_SIZE={size}/"
            f"LOCAL_WORLD_SIZE={local_size}"
        )
    return World(rank, size, local_rank, local_size)


def current() -> World:
    """The world of the initialised process group, or :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    size = dist.get_world_size()
    rank = dist.get_rank()
    return World(
        rank,
        size,
        _env_int("LOCAL_RANK", rank),
        _env_int("LOCAL_WORLD_SIZE", size),
    )


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process)."""
    if device.type != "cuda":
        return device
    world = current()
    if not world.distributed and launched():  # before the group exists (session's setup)
        world = _env_world()
    if not world.distributed:
        return device
    if device.index is not None and device.index != world.local_rank:
        raise ConfigError(
            f"runtime.device: {device} under torchrun; use 'cuda' or 'auto' (each rank takes "
            f"cuda:LOCAL_RANK)"
        )
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {world.local_rank} but only {count} CUDA device(s) visible: use "
            f"--nproc-per-node <= {count}"
        )
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def session(device: torch.device, timeout_s: float = 1800.0) -> Iterator[World]:
    """The process group for one job, set up from torchrun's environment and torn down
    after; a no-op outside torchrun or when a group already exists (its owner keeps it).

    Ranks other than 0 log errors only. ``timeout_s`` bounds every collective, so a peer
    that stalls surfaces as a :class:`DistributedError` instead of a hang (a peer that
    dies closes its sockets and is noticed at once on gloo; torchrun also stops the job).
    """
    global _timeout_s
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    world = _env_world()
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"WORLD_SIZE={world.size} but {name} is not set: launch with "
                              "torchrun (or set MASTER_ADDR and MASTER_PORT)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(rank_device(device))
    _timeout_s = float(timeout_s)
    try:
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s),
            rank=world.rank, world_size=world.size,
        )
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"rank {world.rank}: cannot join the {world.size}-process job at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({_summary(exc)})"
        ) from None
    logger = logging.getLogger("nas")
    previous = logger.level
    if not world.is_main:
        logger.setLevel(logging.ERROR)
    log.info("distributed: %d processes (%s), %d on this node; global batches split over "
             "the ranks", world.size, backend, world.local_size)
    ok = False
    try:
        yield world
        ok = True
    finally:
        logger.setLevel(previous)
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - tearing down after a failure
            if ok:
                raise


def _summary(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turn a failed collective into one clear line naming this rank."""
    try:
        yield
    except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
        if isinstance(exc, DistributedError):
            raise
        rank = dist.get_rank() if dist.is_initialized() else "?"
        timeout = f" within {_timeout_s:g} s (runtime.dist_timeout)" if _timeout_s else ""
        raise DistributedError(
            f"rank {rank}: {what} failed: another rank died or did not answer{timeout} "
            f"({_summary(exc)}); see the first failing rank's error, then re-run the same "
            "command to resume from the last checkpoint"
        ) from None


def check_batch_size(batch_size: int, key: str = "data.batch_size") -> int:
    """The per-rank batch: the global ``batch_size`` split evenly over the ranks."""
    world = current()
    if batch_size % world.size:
        raise ConfigError(
            f"{key} ({batch_size}) must be divisible by the number of processes "
            f"({world.size}): it is the global batch, split evenly over the ranks"
        )
    return batch_size // world.size


def barrier(what: str = "barrier") -> None:
    if current().distributed:
        with _collective(what):
            dist.barrier()


@contextlib.contextmanager
def main_first(what: str = "rank 0's setup") -> Iterator[None]:
    """Rank 0 runs the body first (e.g. downloads a dataset), the others after it."""
    world = current()
    if world.distributed and not world.is_main:
        barrier(f"waiting for {what}")
    yield
    if world.distributed and world.is_main:
        barrier(f"waiting for {what}")


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it."""
    if current().distributed:
        with _collective("all-reduce"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _buckets(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive runs of one dtype and device, each at most :data:`_BUCKET` elements."""
    out: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        last = out[-1] if out else None
        if (last is None or last[0].dtype != t.dtype or last[0].device != t.device
                or size + t.numel() > _BUCKET):
            out.append([t])
            size = t.numel()
        else:
            last.append(t)
            size += t.numel()
    return out


@torch.no_grad()
def average_(tensors: Sequence[torch.Tensor | None], count: int | float) -> None:
    """In place, ``Σ_r n_r·t_r / Σ_r n_r`` over the ranks, ``n_r`` = ``count`` on rank r.

    ``count`` is how many images this rank's ``tensors`` (gradients of a mean loss) came
    from; the total rides along in the same all-reduce (one collective per bucket). With
    equal shards this is the plain mean; ``None`` entries are skipped (same on all ranks).
    """
    if not current().distributed:
        return
    present = [t for t in tensors if t is not None]
    for bucket in _buckets(present):
        dtype = torch.promote_types(bucket[0].dtype, torch.float32)
        one = torch.ones(1, dtype=dtype, device=bucket[0].device)
        flat = torch.cat([t.reshape(-1).to(dtype) for t in bucket] + [one])
        flat.mul_(float(count))
        with _collective("gradient all-reduce"):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        values = flat[:-1].div_(flat[-1])
        offset = 0
        for t in bucket:
            n = t.numel()
            t.copy_(values[offset : offset + n].view_as(t))
            offset += n


def average_grads_(params: Iterable[torch.Tensor], count: int | float) -> None:
    """:func:`average_` on the ``.grad`` of ``params`` (those without one are skipped)."""
    if current().distributed:
        average_([p.grad for p in params], count)


@torch.no_grad()
def average_buffers_(module: nn.Module) -> None:
    """Mean of every floating-point buffer (BN running statistics) over the ranks.

    Each rank's BN statistics follow its own shard; the running averages are linear in
    the batch statistics, so averaging them once (before evaluating and checkpointing)
    equals averaging them after every step, and every rank then holds the same model.
    """
    if not current().distributed:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    average_(buffers, 1)


@torch.no_grad()
def broadcast_(tensors: Sequence[torch.Tensor]) -> None:
    """Rank 0's values of ``tensors`` on every rank, in place."""
    if not current().distributed:
        return
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        with _collective("broadcast from rank 0"):
            dist.broadcast(flat, src=0)
        offset = 0
        for t in bucket:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n


def broadcast_module_(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (as DDP does when it wraps)."""
    broadcast_([*module.parameters(), *module.buffers()])


def gather_object(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order; ``None`` when not distributed."""
    world = current()
    if not world.distributed:
        return None
    out: list[Any] = [None] * world.size
    with _collective("gathering per-rank state"):
        dist.all_gather_object(out, obj)
    return out


def seed_rank(seed: int) -> None:
    """A distinct, reproducible torch/Python RNG stream per rank (drop-path masks), after
    the identical model initialisation; nothing happens in a single process."""
    world = current()
    if not world.distributed:
        return
    derived = int(np.random.SeedSequence([seed, world.rank]).generate_state(1)[0])
    torch.manual_seed(derived)
    random.seed(derived)


def convert_sync_batchnorm(model: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """``runtime.sync_bn``: BatchNorm statistics over the global batch (CUDA/NCCL only).

    torch's ``SyncBatchNorm`` refuses CPU tensors, so on CPU this is a one-line error. In
    a single process there is nothing to synchronise and the model is left as it is.
    """
    if not enabled or not current().distributed:
        return model
    if device.type != "cuda":
        raise ConfigError(
            "runtime.sync_bn needs CUDA: torch's SyncBatchNorm does not run on CPU (gloo); "
            "set runtime.sync_bn=false"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
