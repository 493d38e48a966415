"""Per-op cost lookup tables for cost-aware and multi-objective search.

A table maps ``(op, C, stride, H, W)`` to a cost: parameters (analytic, in millions) or
latency (measured on a device, in ms, cached per device in a JSON file so a second search
on the same machine does not time the ops again).
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

from nas.cost import count_params, measure_latency, resolve_device
from nas.errors import ConfigError
from nas.ops import OPS
from nas.run import atomic_write_text

__all__ = ["CostTable", "CostMetric", "device_key", "default_cache_dir"]

log = logging.getLogger("nas")

CostMetric = Literal["params", "latency"]
Shape = tuple[int, int, int, int]  # (C, stride, H, W)


def default_cache_dir() -> Path:
    return Path(os.environ.get("NAS_CACHE", Path.home() / ".cache" / "nas")) / "costs"


def device_key(device: torch.device) -> str:
    """A file-name-safe description of the timing device (model, not index)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or "unknown"
        name = f"cpu-{platform.machine()}-{cpu}-t{torch.get_num_threads()}"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return f"{safe}-torch{torch.__version__.split('+')[0]}"


class CostTable:
    """Lazily filled op -> cost table; latency entries persist in ``cache_dir``."""

    def __init__(
        self,
        metric: CostMetric = "params",
        device: str | torch.device = "cpu",
        batch_size: int = 1,
        cache_dir: str | Path | None = None,
        repeats: int = 10,
    ) -> None:
        if metric not in ("params", "latency"):
            raise ConfigError(f"cost.metric: got {metric!r}, expected 'params' or 'latency'")
        self.metric = metric
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.repeats = repeats
        self._path: Path | None = None
        self._entries: dict[str, float] = {}
        if metric == "latency":
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            self._path = folder / f"latency-{device_key(self.device)}-b{batch_size}.json"
            if self._path.exists():
                try:
                    self._entries = json.loads(self._path.read_text())
                except json.JSONDecodeError:
                    log.warning("ignoring unreadable latency cache %s", self._path)

    @property
    def unit(self) -> str:
        return "M params" if self.metric == "params" else "ms"

    def _key(self, op: str, shape: Shape) -> str:
        return f"{op}|" + "|".join(str(v) for v in shape)

    def _measure(self, op: str, shape: Shape) -> float:
        C, stride, H, W = shape
        module = OPS[op](C, stride, True)
        if self.metric == "params":
            return count_params(module) / 1e6
        module = module.to(self.device)
        return measure_latency(
            module, (self.batch_size, C, H, W), self.device, warmup=3, repeats=self.repeats
        )

    def cost(self, op: str, shape: Shape) -> float:
        key = self._key(op, shape)
        if key not in self._entries:
            self._entries[key] = self._measure(op, shape)
        return self._entries[key]

    def fill(self, ops: Iterable[str], shapes: Iterable[Shape]) -> None:
        """Measure every missing (op, shape) pair, then persist the latency cache once."""
        missing = [
            (op, s) for s in set(shapes) for op in ops if self._key(op, s) not in self._entries
        ]
        if missing and self.metric == "latency":
            log.info("timing %d op/shape pairs on %s", len(missing), self.device)
        for op, shape in missing:
            self.cost(op, shape)
        if missing and self._path is not None:
            atomic_write_text(self._path, json.dumps(self._entries, indent=1, sort_keys=True))

    def tensor(self, ops: tuple[str, ...], shapes: list[list[Shape]]) -> torch.Tensor:
        """(cells, edges, ops) tensor for ``Supernet.expected_cost``."""
        self.fill(ops, (s for row in shapes for s in row))
        return torch.tensor(
            [[[self.cost(op, s) for op in ops] for s in row] for row in shapes],
            dtype=torch.float32,
        )
