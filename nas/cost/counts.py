"""Cheap model costs: parameters, multiply-adds and storage bytes.

Training-based evaluation lives elsewhere; everything here runs in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs", "count_bytes"]

_AUX_PREFIX = "auxiliary"


def count_params(model: nn.Module, include_auxiliary: bool = False) -> int:
    """Trainable parameters, auxiliary head excluded (DARTS's convention)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if include_auxiliary or not name.startswith(_AUX_PREFIX)
    )


def _module_bytes(module: nn.Module, prefix: str) -> int:
    if prefix.startswith(_AUX_PREFIX):
        return 0
    if hasattr(module, "model_bytes"):
        return int(module.model_bytes())
    own = sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return own + sum(
        _module_bytes(child, f"{prefix}.{name}" if prefix else name)
        for name, child in module.named_children()
    )


def count_bytes(model: nn.Module) -> int:
    """Storage of the weights in bytes (auxiliary head excluded).

    Modules that store sub-byte data (BDSC's one-bit masks in deploy form) report their
    own size through ``model_bytes()``; everything else counts its parameters.
    """
    return _module_bytes(model, "")


def _eval_forward(model: nn.Module, x: torch.Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)


def count_macs(
    model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu"
) -> int:
    """Multiply-accumulates of one eval-mode forward, from ``torch.utils.flop_counter``.

    ``input_shape`` includes the batch dimension, e.g. ``(1, 3, 32, 32)``. The counter
    reports FLOPs = 2 x MACs for convolutions and matmuls; pooling and BN are not counted
    (the DARTS convention).
    """
    x = torch.zeros(*input_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        _eval_forward(model, x)
    return counter.get_total_flops() // 2
