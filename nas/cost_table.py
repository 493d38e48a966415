"""Per-op cost lookup tables for cost-aware and multi-objective search.

A table maps ``(op, C, stride, H, W)`` to a cost: parameters (analytic, in millions, of the
training form) or latency (ms of an eval-mode forward of the op's deploy form, since
latency describes inference). Latency is either measured here, on first use, and cached
per device in a JSON file so a second search on the same machine does not time the ops
again, or read from a table measured on another machine (``nas latency-table``, see
:mod:`nas.latency_table`), in which case nothing is timed here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from nas import cost as _cost
from nas.cost import count_params, resolve_device
from nas.deploy import to_deploy
from nas.errors import ConfigError
from nas.ops import OPS
from nas.ops.darts import FactorizedReduce, ReLUConvBN
from nas.run import atomic_write_text

if TYPE_CHECKING:
    from nas.latency_table import LatencyTable

__all__ = [
    "CostTable", "CostMetric", "Shape", "device_key", "default_cache_dir", "op_module",
    "op_latency", "part_module", "module_timer", "timing_device", "require_onnxruntime",
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
    return _cost.measure_latency(
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


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module; a one-line ConfigError saying what to install if the
    ONNX stack (onnxruntime, onnx, onnxscript for ``torch.onnx.export``) is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--device onnxruntime needs onnxruntime, onnx and onnxscript "
            f'({exc.name or "one of them"} is missing): pip install "nas-effconv[export]"'
        ) from None
    return onnxruntime


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _export_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> None:
    """``torch.onnx.export`` with the TorchScript exporter (a few ms per op; the default
    dynamo exporter takes seconds), the dynamo exporter where that one fails or is gone.
    A named output keeps an identity op's graph valid (its output is its input)."""
    names = {"input_names": ["x"], "output_names": ["y"]}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=False, **names)
        except Exception:
            torch.onnx.export(module, (x,), str(path), external_data=False, **names)


def _ort_ms(ort: Any, module: nn.Module, shape: tuple[int, ...], warmup: int, repeats: int,
            what: str) -> float:
    """Median ms of an ONNX Runtime CPU session running ``module`` exported to ONNX."""
    x = torch.randn(*shape)
    with tempfile.TemporaryDirectory(prefix="nas-lut-") as tmp:
        path = Path(tmp) / "op.onnx"
        try:
            _export_onnx(module, x, path)
        except Exception as exc:
            raise ConfigError(f"{what}: ONNX export failed ({_first_line(exc)}); time it "
                              "with --device cpu instead") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i in session.get_inputs()}  # none if folded to a constant
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def module_timer(
    device: str, warmup: int = 5, repeats: int = 20
) -> Callable[[nn.Module, tuple[int, ...], str], float]:
    """``timer(module, input_shape, what) -> ms``: the median of eval-mode forwards with
    PyTorch on ``cpu``/``cuda``, or of an ONNX Runtime CPU session (``onnxruntime``: the
    module exported with ``torch.onnx.export`` to a temporary file). ``what`` names the
    module in errors."""
    if device == "onnxruntime":
        ort = require_onnxruntime()
        return lambda module, shape, what: _ort_ms(ort, module, shape, warmup, repeats, what)
    dev = resolve_device(device)
    return lambda module, shape, what: _cost.measure_latency(
        module.to(dev), shape, dev, warmup=warmup, repeats=repeats
    )


def timing_device(device: str) -> dict[str, Any]:
    """``device_key`` (file-name-safe, as the local cache names it) and a readable name of
    what ``module_timer(device)`` times on."""
    if device == "onnxruntime":
        ort = require_onnxruntime()
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
            from nas.latency_table import load_table  # late: it imports this module

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
