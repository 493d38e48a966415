"""What every loader shares: argument checks, array conversion, the container build."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nas.data.tensors import ImageTensors
from nas.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_kwargs(loader: str, kw: dict[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(kw) - set(allowed))
    if extra:
        ok = ", ".join(allowed) if allowed else "none"
        raise ConfigError(f"dataset {loader} does not take {', '.join(extra)} (options: {ok})")


def stats_override(kw: dict[str, Any], channels: int) -> tuple[tuple[float, ...] | None,
                                                                tuple[float, ...] | None]:
    def one(key: str) -> tuple[float, ...] | None:
        v = kw.get(key)
        if v is None:
            return None
        vals = (float(v),) * channels if isinstance(v, (int, float)) else tuple(float(t) for t in v)
        if len(vals) != channels:
            raise ConfigError(f"data.{key} needs {channels} values, got {len(vals)}")
        return vals

    return one("mean"), one("std")


def labels_tensor(y: np.ndarray | Sequence[int] | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.array(y))  # copy: npz/IDX buffers are read-only
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{what}: labels must be a 1-D integer array, got "
                        f"{t.dtype} {tuple(t.shape)}")
    t = t.to(torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"{what}: labels must be >= 0, found {int(t.min())}")
    return t


def arrays_to_images(x: np.ndarray, what: str) -> torch.Tensor:
    """N×H×W or N×H×W×C (or unambiguous N×C×H×W) integer array -> uint8 N×C×H×W."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"{what}: images must be uint8 (0..255), got {x.dtype}; "
                            f"convert with (x * 255).round().astype(np.uint8)")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{what}: integer images must lie in 0..255")
        x = x.astype(np.uint8)
    if x.ndim == 3:
        t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    elif x.ndim == 4 and x.shape[1] in (1, 3, 4):
        logger.info("%s: reading %s as N×C×H×W", what, x.shape)
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise DataError(f"{what}: images must be N×H×W or N×H×W×C with C in 1, 3, 4; "
                        f"got shape {x.shape}")
    return t.contiguous()


def as_size(v: Any, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    try:
        h, w = (int(t) for t in v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an int or (height, width), got {v!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"{what} must be positive, got {v!r}")
    return h, w


def finish(name: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
           train_stats: tuple[tuple[float, ...], tuple[float, ...]],
           classes: Sequence[str] | None, kw: dict[str, Any]) -> ImageTensors:
    """Build the container, applying user mean/std overrides."""
    mean, std = stats_override(kw, images.shape[1])
    if labels.numel() and int(labels.max()) >= num_classes:
        raise DataError(f"{name}: label {int(labels.max())} >= num_classes {num_classes}")
    return ImageTensors(
        images=images.contiguous(),
        labels=labels,
        num_classes=int(num_classes),
        name=name,
        mean=mean or train_stats[0],
        std=std or train_stats[1],
        classes=tuple(str(c) for c in classes) if classes is not None else None,
    )
