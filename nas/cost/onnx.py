"""The one ONNX path: export a module to ONNX bytes, run them in an ONNX Runtime CPU
session, time them. ``nas export`` ships what :func:`onnx_bytes` writes, and the
``onnxruntime`` latency table times exactly that: the same exporters and the same export
form (:func:`nas.deploy.export_form`).

Exporters (see :mod:`nas.evaluate.export` for how they were chosen): the TorchScript-based
``torch.onnx.export(dynamo=False)`` with a dynamic batch axis, falling back to the dynamo
exporter where it fails; ``exporter="dynamo"`` picks dynamo first.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from nas.cost.timing import median_ms
from nas.deploy import export_form
from nas.errors import ConfigError
from nas.run import error_summary

__all__ = [
    "DEFAULT_OPSET", "ONNX_EXPORTERS", "INSTALL_HINT", "require_onnxruntime", "check_opset",
    "quiet", "batch_dim", "onnx_bytes", "ort_runner", "ort_latency_ms",
]

log = logging.getLogger("nas")

#: ONNX opset: both exporters write it natively (it is the dynamo exporter's own translation
#: library's), and every ONNX Runtime since 1.14 runs it. ``--opset`` overrides it.
DEFAULT_OPSET = 18
#: ``auto``: the TorchScript-based ONNX exporter, dynamo where it fails
ONNX_EXPORTERS = ("auto", "torchscript", "dynamo")
INSTALL_HINT = 'pip install "nas-effconv[export]"'
MIN_OPSET, MAX_OPSET = 13, 23
MAX_TORCHSCRIPT_OPSET = 20


def require_onnxruntime(purpose: str = "ONNX export") -> Any:
    """``onnxruntime`` (and the ONNX exporter's dependencies, onnx and onnxscript), or a
    one-line ConfigError naming what is missing and the install command."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"{purpose} needs {' and '.join(missing)} (not installed); run: {INSTALL_HINT}"
        )
    import onnxruntime

    return onnxruntime


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ConfigError(f"--opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    return int(opset)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Exporters print progress lines and deprecation warnings; the report is the output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def batch_dim() -> Any:
    # min=1: batch 1 is the common deployment case; example inputs have >= 2 rows so that
    # torch.export does not specialize the dimension to the example's size.
    return torch.export.Dim("batch", min=1, max=1 << 16)


def _onnx_dynamo(model: nn.Module, x: torch.Tensor, opset: int) -> Any:
    program = torch.onnx.export(
        model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
        output_names=["output"], dynamic_shapes=({0: batch_dim()},), external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    for node in proto.graph.node:  # source paths and stack traces of every node: bytes only
        del node.metadata_props[:]
    return proto


def _onnx_legacy(model: nn.Module, x: torch.Tensor, opset: int) -> Any:
    import onnx

    buf = io.BytesIO()
    torch.onnx.export(
        model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
        output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    return onnx.load_from_string(buf.getvalue())


def onnx_bytes(
    model: nn.Module, x: torch.Tensor, opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None, exporter: str = "auto",
) -> tuple[bytes, str]:
    """``model`` (already in :func:`~nas.deploy.export_form`, eval mode) as checked ONNX
    bytes, and the exporter that made them: the first of the order that works (a fallback
    is logged). ``metadata`` becomes the model's properties."""
    require_onnxruntime()
    import onnx

    if exporter not in ONNX_EXPORTERS:
        raise ConfigError(
            f"unknown ONNX exporter {exporter!r}; choose from {', '.join(ONNX_EXPORTERS)}"
        )
    opset = check_opset(opset)
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    if opset > MAX_TORCHSCRIPT_OPSET:  # the TorchScript-based exporter stops at 20
        if exporter == "torchscript":
            raise ConfigError(f"the TorchScript-based ONNX exporter writes opsets up to "
                              f"{MAX_TORCHSCRIPT_OPSET}, got --opset {opset}")
        order = ["dynamo"]
    build = {"torchscript": _onnx_legacy, "dynamo": _onnx_dynamo}
    errors: list[str] = []
    for name in order:
        try:
            with quiet(), torch.no_grad():
                proto = build[name](model, x, opset)
        except Exception as exc:
            errors.append(f"{name}: {error_summary(exc, 160)}")
            if name == order[-1]:
                raise RuntimeError("; ".join(errors)) from exc
            continue
        if errors:
            log.warning("ONNX exporter failed (%s); used %s", "; ".join(errors), name)
        onnx.helper.set_model_props(proto, metadata or {})
        onnx.checker.check_model(proto)
        return proto.SerializeToString(), name
    raise AssertionError("unreachable")  # pragma: no cover


def ort_runner(data: bytes, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> output`` through an ONNX Runtime CPU session over ``data``, ``threads``
    intra-op threads (default: as many as torch uses, so the two latencies compare)."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]  # none if the graph folded to a constant

    def run(x: torch.Tensor) -> torch.Tensor:
        feed = {name: x.detach().cpu().contiguous().numpy() for name in inputs}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


def ort_latency_ms(
    module: nn.Module, shape: Sequence[int], warmup: int = 5, repeats: int = 20,
    what: str = "module",
) -> float:
    """Median ms of ``module`` as ``nas export`` ships it (export form, ONNX) in an ONNX
    Runtime CPU session, on a random input of ``shape``; ``what`` names it in errors."""
    x = torch.randn(*shape)
    example = x if x.shape[0] >= 2 else x.expand(2, *x.shape[1:]).contiguous()
    try:
        data, _ = onnx_bytes(export_form(module), example)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{what}: ONNX export failed ({error_summary(exc, 160)}); time it "
                          "with --device cpu instead") from None
    run = ort_runner(data)
    return median_ms(lambda: run(x), warmup, repeats)
