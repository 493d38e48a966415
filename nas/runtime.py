"""Glue shared by every job: device, autocast, run folder, datasets and loaders from config."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from nas import distributed
from nas.config import DataConfig, RuntimeConfig
from nas.cost.timing import resolve_device
from nas.data import BatchLoader, ImageTensors, load_dataset
from nas.errors import ConfigError
from nas.run import SHARED_COMMANDS, RunDir, check_owner, claim_owner, default_run_dir
from nas.threads import ThreadPlan, configure_threads

__all__ = [
    "autocast", "open_run", "load_splits", "make_loader",
    "setup_threads", "reset_peak_memory", "peak_memory_mb", "compile_module",
]

log = logging.getLogger("nas")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU stays fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def open_run(name: str, run_dir: str | None, command: str, *,
             exclusive: bool | None = None) -> RunDir:
    """The run folder of ``nas <command>`` for config ``name`` (resumed if it exists).

    Default ``runs/<command>/<name>``; a folder claimed by another command or config is
    refused with a one-line error instead of being overwritten, and so is one that another
    process is writing (its lock, :meth:`RunDir.lock`, held until the ``with`` block ends:
    two concurrent runs would log every epoch twice). ``exclusive``: lock (default: unless
    ``command`` is one of :data:`nas.run.SHARED_COMMANDS`). The lock is re-entrant within a
    process, and a parent holding its folder still opens its children's (seeds, compare
    entries, trials). Under torchrun only rank 0 creates, locks and writes it; the other
    ranks wait for it, then get a read-only view (they read its checkpoint to resume).
    """
    if exclusive is None:
        exclusive = command not in SHARED_COMMANDS
    path = Path(run_dir) if run_dir else default_run_dir(command, name)
    world = distributed.current()
    if not world.is_main:
        distributed.barrier("rank 0 to open the run folder")
        return RunDir(path, read_only=True)
    if path.is_dir():
        check_owner(path, command, name)  # before the lock: a refusal touches nothing
    run = RunDir(path)
    try:
        if exclusive:
            run.lock(f"nas {command} {name}")
        check_owner(path, command, name)  # another command may have claimed it meanwhile
        claim_owner(path, command, name)
    except BaseException as exc:  # unlock; a folder this call created goes again
        run.__exit__(type(exc), exc, exc.__traceback__)
        raise
    run.attach_log()
    distributed.barrier("rank 0 to open the run folder")
    return run


def _limit(data: ImageTensors, limit: int | None) -> ImageTensors:
    if limit is None or limit >= len(data):
        return data
    generator = torch.Generator().manual_seed(0)
    return data.subset(torch.randperm(len(data), generator=generator)[:limit])


def load_splits(cfg: DataConfig, test: bool = True) -> tuple[ImageTensors, ImageTensors | None]:
    """Train (and test) splits, each capped by ``limit``/``test_limit`` (seeded subset)."""
    kw = dict(cfg.options)
    train = load_dataset(cfg.name, "train", root=cfg.root, download=cfg.download, **kw)
    train = _limit(train, cfg.limit)
    log.info(
        "data %s: %d train images %s, %d classes",
        train.name, len(train), "x".join(map(str, train.shape)), train.num_classes,
    )
    if not test:
        return train, None
    test_set = load_dataset(cfg.name, "test", root=cfg.root, download=cfg.download, **kw)
    return train, _limit(test_set, cfg.test_limit)


def make_loader(
    data: ImageTensors,
    cfg: DataConfig,
    runtime: RuntimeConfig,
    device: torch.device,
    *,
    train: bool,
    cutout: int | None = None,
    seed_offset: int = 0,
    channels_last: bool = False,
) -> BatchLoader:
    """A device-resident loader: augmented when ``train``, plain and ordered otherwise.

    Training loaders drop the partial last batch, so every step has one shape (a compiled
    model compiles once, not again for the odd batch); a split smaller than one batch keeps
    its one batch, so an epoch still has a step. Evaluation loaders keep every image.

    Under torchrun the batch sizes are global and each rank loads its shard of every batch
    (:class:`BatchLoader`); the training batch must split evenly over the ranks.
    """
    world = distributed.current()
    if train and world.distributed:
        distributed.check_batch_size(cfg.batch_size)
    drop_last = train and len(data) >= cfg.batch_size
    return BatchLoader(
        data,
        cfg.batch_size if train else cfg.eval_batch_size,
        shuffle=train,
        augment=train and cfg.augment,
        crop_padding=cfg.crop_padding,
        flip=cfg.flip,
        cutout=(cfg.cutout if cutout is None else cutout) if train else 0,
        drop_last=drop_last,
        device=device,
        seed=runtime.seed + seed_offset,
        channels_last=channels_last,
        rank=world.rank,
        world_size=world.size,
    )


def check_device(name: str) -> torch.device:
    """The configured device; under torchrun a bare ``cuda`` is this rank's GPU."""
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} requested but CUDA is not available")
    return distributed.rank_device(device)


def setup_threads(runtime: RuntimeConfig, workers: int = 1) -> ThreadPlan:
    """Size torch's CPU threads for a job (see :mod:`nas.threads`); the ranks torchrun
    starts on this machine share its cores."""
    workers *= distributed.current().local_size
    return configure_threads(runtime.threads, workers, runtime.deterministic)


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window for this job; False where the OS cannot (then the
    CPU peak is the process lifetime's, which earlier jobs in the process inflate)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # Linux >= 4.0: "5" resets the peak RSS (VmHWM) to the current RSS
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's peak RSS, since the last reset (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _cpu_compiler_missing() -> str | None:
    """Why inductor cannot build CPU kernels here, or None when a C++ compiler exists."""
    try:
        from torch._inductor import config as inductor_config
    except Exception as err:  # a torch build without inductor
        return f"inductor unavailable ({type(err).__name__}: {err})"
    candidates = inductor_config.cpp.cxx
    names = candidates if isinstance(candidates, (tuple, list)) else (candidates,)
    if any(name and shutil.which(name) for name in names):
        return None
    return f"no C++ compiler found (tried {', '.join(str(n) for n in names if n)})"


def compile_module(
    module: nn.Module,
    device: torch.device,
    enabled: bool = True,
    *,
    mode: str | None = None,
    backend: str = "inductor",
) -> nn.Module:
    """``module.compile(mode=..., backend=...)`` in place when ``enabled`` and the backend
    can run here.

    Compiling in place means every call of ``module`` (the architect's, the weight step's,
    ``functional_call``'s and evaluation's) runs compiled code. On CPU inductor needs a C++
    compiler; without one this logs a single line and leaves the module eager.
    ``mode="reduce-overhead"`` captures the compiled graphs as CUDA graphs on CUDA (one
    launch per graph replay instead of one per kernel); on CPU inductor ignores it.
    """
    if not enabled:
        return module
    if device.type == "cpu" and backend == "inductor":
        missing = _cpu_compiler_missing()
        if missing is not None:
            log.warning("runtime.compile: %s; running eagerly", missing)
            return module
    options = {} if mode in (None, "default") else {"mode": mode}
    module.compile(backend=backend, **options)
    return module

