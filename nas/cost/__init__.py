"""Model costs: counts (:mod:`.counts`: params, MACs, bytes), the one latency timer
(:mod:`.timing`), the one ONNX export and ONNX Runtime path (:mod:`.onnx`), the per-op cost
lookup of the cost-aware search (:mod:`.lookup`) and the latency-table file format
(:mod:`.table`).

Public API: ``count_params``, ``count_macs``, ``count_bytes``, ``measure_latency`` and
``resolve_device``, loaded on first use, so that ``nas.cost.table`` (which the CLI reads
before torch loads) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["count_params", "count_macs", "count_bytes", "measure_latency", "resolve_device"]

_HOME = {"count_params": "counts", "count_macs": "counts", "count_bytes": "counts",
         "measure_latency": "timing", "resolve_device": "timing"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"nas.cost.{_HOME[name]}"), name)
    raise AttributeError(f"module 'nas.cost' has no attribute {name!r}")
