"""Glue shared by every job: device, autocast, run folder, datasets and loaders from config."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from nas.config import DataConfig, RuntimeConfig
from nas.cost import resolve_device
from nas.data import BatchLoader, ImageTensors, load_dataset
from nas.errors import ConfigError
from nas.run import RunDir

__all__ = ["autocast", "open_run", "load_splits", "make_loader", "resolve_device"]

log = logging.getLogger("nas")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU stays fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def open_run(name: str, run_dir: str | None, default_root: str = "runs") -> RunDir:
    run = RunDir(Path(run_dir) if run_dir else Path(default_root) / name)
    run.attach_log()
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
) -> BatchLoader:
    """A device-resident loader: augmented when ``train``, plain and ordered otherwise."""
    return BatchLoader(
        data,
        cfg.batch_size if train else cfg.eval_batch_size,
        shuffle=train,
        augment=train and cfg.augment,
        crop_padding=cfg.crop_padding,
        flip=cfg.flip,
        cutout=(cfg.cutout if cutout is None else cutout) if train else 0,
        drop_last=False,
        device=device,
        seed=runtime.seed + seed_offset,
        channels_last=runtime.channels_last,
    )


def check_device(name: str) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} requested but CUDA is not available")
    return device
