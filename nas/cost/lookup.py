"""Per-op cost lookup tables for cost-aware and multi-objective search.

A table maps ``(op, C, stride, H, W)`` to a cost: parameters (analytic, in millions, of the
training form) or latency (ms of an eval-mode forward of the op's deploy form, since
latency describes inference). Latency is either measured here, on first use, and cached
per device in a JSON file so a second search on the same machine does not time the ops
again, or read from a table measured on another machine (``nas latency-table``, see
:mod:`nas.cost.table`), in which case nothing is timed here.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from nas.cost import onnx, timing
from nas.cost.counts import count_params
from nas.cost.table import DEVICES, LatencyTable, OpKey, PartKey, load_table
from nas.cost.timing import resolve_device
from nas.deploy import to_deploy
from nas.errors import ConfigError
from nas.ops import OPS
from nas.ops.primitives import FactorizedReduce, ReLUConvBN
from nas.run import atomic_write_text

__all__ = [
    "CostTable", "CostMetric", "Shape", "device_key", "default_cache_dir", "op_module",
    "op_latency", "part_module", "module_timer", "timing_device", "build_table",
]

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


def op_module(op: str, C: int, stride: int) -> nn.Module:
    """Op ``op`` as the evaluation network builds it (affine BN), in eval-mode deploy form."""
    return to_deploy(OPS[op](C, stride, True))


def op_latency(
    op: str,
    shape: Shape,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
) -> float:
    """Median ms of one eval-mode forward of ``op``'s deploy form at ``shape`` on ``device``."""
    C, stride, H, W = shape
    device = resolve_device(device)
    module = op_module(op, C, stride).to(device)
    # through the module attribute, so tests can stub the timer out
    return timing.measure_latency(
        module, (batch_size, C, H, W), device, warmup=warmup, repeats=repeats
    )


def part_module(part: str, C_in: int, C_out: int) -> nn.Module:
    """A genotype-independent part of ``NetworkCIFAR``, as it builds it, in eval mode:
    ``stem``, ``relu_conv_bn`` (1x1 preprocessing), ``factorized_reduce`` (preprocessing
    after a reduction) or ``head`` (global pooling + classifier, ``C_out`` classes)."""
    if part == "stem":
        module: nn.Module = nn.Sequential(
            nn.Conv2d(C_in, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out)
        )
    elif part == "relu_conv_bn":
        module = ReLUConvBN(C_in, C_out, 1, 1, 0)
    elif part == "factorized_reduce":
        module = FactorizedReduce(C_in, C_out)
    elif part == "head":
        module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C_in, C_out))
    else:
        raise ConfigError(f"unknown network part {part!r}")
    return module.eval()


def module_timer(
    device: str, warmup: int = 5, repeats: int = 20
) -> Callable[[nn.Module, tuple[int, ...], str], float]:
    """``timer(module, input_shape, what) -> ms``: the median of eval-mode forwards with
    PyTorch on ``cpu``/``cuda``, or of an ONNX Runtime CPU session (``onnxruntime``: the
    module as ``nas export`` ships it: :func:`nas.cost.onnx.ort_latency_ms`). ``what`` names the
    module in errors."""
    if device == "onnxruntime":
        onnx.require_onnxruntime("--device onnxruntime")
        return lambda module, shape, what: onnx.ort_latency_ms(module, shape, warmup, repeats,
                                                               what)
    dev = resolve_device(device)
    return lambda module, shape, what: timing.measure_latency(
        module.to(dev), shape, dev, warmup=warmup, repeats=repeats
    )


def timing_device(device: str) -> dict[str, Any]:
    """``device_key`` (file-name-safe, as the local cache names it) and a readable name of
    what ``module_timer(device)`` times on."""
    if device == "onnxruntime":
        ort = onnx.require_onnxruntime("--device onnxruntime")
        key = f"onnxruntime{ort.__version__}-CPU-{device_key(torch.device('cpu'))}"
        return {"device_key": key, "device_name": platform.processor() or platform.machine(),
                "onnxruntime": ort.__version__}
    dev = resolve_device(device)
    name = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else platform.processor() or platform.machine())
    return {"device_key": device_key(dev), "device_name": name}


class CostTable:
    """Lazily filled op -> cost table; latency entries persist in ``cache_dir``.

    With ``table`` (a file written by ``nas latency-table``), latencies come from that
    file only: nothing is measured, and an (op, shape) it lacks is a one-line ConfigError.
    """

    def __init__(
        self,
        metric: CostMetric = "params",
        device: str | torch.device = "cpu",
        batch_size: int = 1,
        cache_dir: str | Path | None = None,
        repeats: int = 10,
        table: str | Path | None = None,
    ) -> None:
        if metric not in ("params", "latency"):
            raise ConfigError(f"cost.metric: got {metric!r}, expected 'params' or 'latency'")
        if table is not None and metric != "latency":
            raise ConfigError("cost.table holds latencies: set cost.metric=latency to use it")
        self.metric = metric
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.repeats = repeats
        self._path: Path | None = None
        self._entries: dict[str, float] = {}
        self._table: LatencyTable | None = None
        if table is not None:
            self._table = load_table(table)
            self._table.check_batch(batch_size, "cost.batch_size")
        elif metric == "latency":
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            # "-deploy": entries time the deploy form (older caches timed the training form)
            name = f"latency-{device_key(self.device)}-b{batch_size}-deploy.json"
            self._path = folder / name
            if self._path.exists():
                try:
                    self._entries = json.loads(self._path.read_text())
                except json.JSONDecodeError:
                    log.warning("ignoring unreadable latency cache %s", self._path)

    @property
    def unit(self) -> str:
        return "M params" if self.metric == "params" else "ms"

    @property
    def source(self) -> str:
        """Where the costs come from, for logs."""
        if self.metric == "params":
            return "analytic"
        if self._table is not None:
            return f"table {self._table.describe()}"
        return f"measured on {self.device}, batch {self.batch_size}"

    def _key(self, op: str, shape: Shape) -> str:
        return f"{op}|" + "|".join(str(v) for v in shape)

    def _measure(self, op: str, shape: Shape) -> float:
        if self._table is not None:
            return self._table.op_ms(op, shape)  # never measured: ConfigError if missing
        C, stride, H, W = shape
        if self.metric == "params":
            return count_params(OPS[op](C, stride, True)) / 1e6
        return op_latency(op, shape, self.device, self.batch_size, 3, self.repeats)

    def cost(self, op: str, shape: Shape) -> float:
        key = self._key(op, shape)
        if key not in self._entries:
            self._entries[key] = self._measure(op, shape)
        return self._entries[key]

    def fill(self, ops: Iterable[str], shapes: Iterable[Shape]) -> None:
        """Measure every missing (op, shape) pair, then persist the latency cache once."""
        missing = [
            (op, s) for s in sorted(set(shapes)) for op in ops
            if self._key(op, s) not in self._entries
        ]
        if self._table is not None:  # check every pair first: one error for the first gap
            for op, shape in missing:
                self._table.op_ms(op, shape)
        elif missing and self.metric == "latency":
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


def build_table(
    ops: Iterable[OpKey],
    parts: Iterable[PartKey] = (),
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    timer: Callable[[nn.Module, tuple[int, ...], str], float] | None = None,
) -> LatencyTable:
    """Time every op and part (deploy form, eval mode, ``batch_size``) on ``device``:
    ``cpu``/``cuda`` run PyTorch, ``onnxruntime`` an ONNX Runtime CPU session.
    ``timer(module, input_shape, what) -> ms`` replaces the device's timer (benchmarks)."""
    if device not in DEVICES:
        raise ConfigError(f"--device: got {device!r}, expected one of {', '.join(DEVICES)}")
    timer = timer or module_timer(device, warmup, repeats)
    meta = {
        "device": device,
        **timing_device(device),
        "torch": torch.__version__,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "repeats": repeats,
        "form": "deploy, eval mode",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **(metadata or {}),
    }
    todo: list[OpKey | PartKey] = [*sorted(set(ops)), *sorted(set(parts))]
    op_ms: dict[OpKey, float] = {}
    part_ms: dict[PartKey, float] = {}
    torch.manual_seed(0)
    with torch.no_grad():
        quiet = not progress or os.environ.get("TQDM_DISABLE") == "1"  # nas -q
        for key in tqdm(todo, desc=f"latency table ({device})", unit="op",
                        disable=True if quiet else None, leave=False):
            if isinstance(key, OpKey):
                module, C_in = op_module(key.op, key.C, key.stride), key.C
            else:
                module, C_in = part_module(key.part, key.C_in, key.C_out), key.C_in
            ms = timer(module, (batch_size, C_in, key.H, key.W), key.describe())
            if isinstance(key, OpKey):
                op_ms[key] = ms
            else:
                part_ms[key] = ms
    return LatencyTable(meta, op_ms, part_ms)
