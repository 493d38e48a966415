"""The one latency timer: median wall time of repeated calls, synchronized on CUDA.

Every latency the project reports goes through :func:`median_ms`: PyTorch forwards
(:func:`measure_latency`), ONNX Runtime sessions (:mod:`nas.cost.onnx`) and exported
artifacts (``nas export``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["resolve_device", "median_ms", "measure_latency"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def median_ms(
    call: Callable[[], Any], warmup: int = 3, repeats: int = 10,
    sync: Callable[[], None] = lambda: None,
) -> float:
    """Median milliseconds of ``call()`` over ``repeats`` timed calls after ``warmup``
    untimed ones; ``sync`` (e.g. ``torch.cuda.synchronize``) ends each timed call."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    warmup: int = 5,
    repeats: int = 20,
) -> float:
    """Median wall time of an eval-mode forward in milliseconds (warm-up, synchronized)."""
    device = resolve_device(device)
    x = torch.randn(*input_shape, device=device)
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        with torch.inference_mode():
            return median_ms(lambda: model(x), warmup, repeats, sync)
    finally:
        model.train(was_training)
