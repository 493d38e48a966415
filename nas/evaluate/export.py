"""Deployment export: the deploy form as ONNX, TorchScript or a ``torch.export`` program.

Every artifact is serialized in memory, loaded back as a user would (ONNX Runtime,
``torch.jit.load``, ``torch.export.load``) and run on held-out images at two batch sizes (the
batch axis is dynamic). Its outputs must match the PyTorch deploy form within
``atol + rtol·|reference|``, else :class:`ExportError` and nothing is written; files are
written atomically (temp file beside the target, then rename).

Exporters, chosen after exporting every registry op (both strides) and a network of all
five paper operators with each (torch 2.14, onnx 1.23, onnxscript 0.7, onnxruntime 1.32):

- ONNX: the TorchScript-based ``torch.onnx.export(dynamo=False)`` with a dynamic batch axis,
  falling back to the dynamo exporter (``torch.export`` graph + ONNX Script) where it fails;
  ``onnx_exporter="dynamo"`` (``--onnx-exporter``) picks dynamo first. Both reproduce every
  op, but on a 3-cell network of all paper ops dynamo took 30x longer (about 160 s against
  5 s, half of it in the ONNX Script rewriter; 2-core CPU) and wrote a file twice the size
  (it folds each SSL layer's gather index into a C×H×W int64 constant, where the other keeps
  the C integer shifts: 16x the bytes for ``ssl_conv`` at C=36, 32×32). The TorchScript-based
  exporter is deprecated in torch, hence the fallback. Opset :data:`DEFAULT_OPSET`.
- TorchScript: ``torch.jit.trace``. Deploy forms have no data-dependent control flow; the
  branches on the spatial size (``FactorizedReduce`` on odd maps, C2sp's group placement)
  depend on the fixed image size only, and the traced graph reads the batch size from the
  input, so it stays dynamic (checked at two batch sizes like every format).
- ``exported``: ``torch.export.export(strict=False)`` with a dynamic batch ``Dim``, saved as a
  ``.pt2`` archive.

One rewrite happens on the way (:func:`export_form`): C2sp's shift padding, which writes four
channel groups into a zero buffer by slice assignment, becomes four pads and one concat. The
tensor is the same; the exporters turn slice assignment into a dozen ScatterND nodes, which
ran 2-4x slower in ONNX Runtime than pad+concat (C2sp/C4sp, C=36, 32x32, batch 1 and 32).
The check compares the artifact with the unrewritten deploy form.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.cost import onnx
from nas.cost.timing import measure_latency, median_ms
from nas.data import BatchLoader
from nas.deploy import export_form, to_deploy
from nas.errors import ConfigError, NasError
from nas.evaluate.deploy_report import evaluation_split, load_trained
from nas.run import (
    atomic_write_bytes,
    atomic_write_text,
    error_summary,
    remove_stale_temp_files,
)
from nas.spaces.baselines import resolve_genotype

__all__ = [
    "DEFAULT_OPSET", "FORMATS", "ONNX_EXPORTERS", "ExportError", "parse_formats",
    "serialize", "load_artifact", "compare_outputs",
    "median_latency_ms", "export_verified", "export_run", "format_export_table",
]

log = logging.getLogger("nas")

#: format -> default file name in the output folder
FORMATS: dict[str, str] = {
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "exported": "model.pt2",
}
#: ``nas export --opset`` default and the exporters ``--onnx-exporter`` picks from
DEFAULT_OPSET = onnx.DEFAULT_OPSET
ONNX_EXPORTERS = onnx.ONNX_EXPORTERS


class ExportError(NasError, RuntimeError):
    """An export failed or does not reproduce the deploy form: ``nas export`` exits 1 (the
    input was fine; bad input exits 2)."""


def parse_formats(spec: str | Iterable[str]) -> list[str]:
    """``"onnx,torchscript"`` or ``["onnx"]`` or ``"all"`` -> known format names, in order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        expanded = list(FORMATS) if name == "all" else [name]
        for fmt in expanded:
            if fmt not in FORMATS:
                raise ConfigError(
                    f"unknown export format {item.strip()!r}; choose from "
                    f"{', '.join(FORMATS)} or all (comma-separated for several)"
                )
            if fmt not in names:
                names.append(fmt)
    if not names:
        raise ConfigError(f"no export format given; choose from {', '.join(FORMATS)} or all")
    return names


def _example(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[0] >= 2 else x.expand(2, *x.shape[1:]).contiguous()


def serialize(
    model: nn.Module,
    example: torch.Tensor,
    fmt: str,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, Any] | None = None,
    onnx_exporter: str = "auto",
) -> bytes:
    """The artifact of ``model`` (eval mode, CPU) in format ``fmt``, batch axis dynamic.

    ``model`` goes through :func:`export_form` first. ``metadata`` (e.g. the input
    normalisation) travels inside the artifact: ONNX model properties, or
    ``nas_export.json`` among the extra files of a TorchScript / ``.pt2`` archive.

    Raises:
        ExportError: the exporter failed (the message names the first line of its error).
    """
    return _serialize(model, example, fmt, opset, metadata, onnx_exporter)[0]


def _serialize(
    model: nn.Module,
    example: torch.Tensor,
    fmt: str,
    opset: int,
    metadata: dict[str, Any] | None,
    onnx_exporter: str,
) -> tuple[bytes, str]:
    """:func:`serialize`, plus the name of the exporter that made the artifact."""
    fmt = parse_formats([fmt])[0]
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ConfigError(
            f"unknown ONNX exporter {onnx_exporter!r}; choose from {', '.join(ONNX_EXPORTERS)}"
        )
    if fmt == "onnx":
        onnx.check_opset(opset)
    model = export_form(model)
    x = _example(example.detach().cpu())
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    buf = io.BytesIO()
    try:
        with onnx.quiet(), torch.no_grad():
            if fmt == "onnx":
                return onnx.onnx_bytes(model, x, opset, meta, onnx_exporter)
            extra = {"nas_export.json": json.dumps(meta)}
            if fmt == "torchscript":
                traced = torch.jit.trace(model, (x,), check_trace=False)
                torch.jit.save(traced, buf, _extra_files=extra)
                exporter = "torch.jit.trace"
            else:
                program = torch.export.export(
                    model, (x,), dynamic_shapes=({0: onnx.batch_dim()},), strict=False
                )
                torch.export.save(program, buf, extra_files=extra)
                exporter = "torch.export"
    except NasError:
        raise
    except Exception as exc:  # exporters raise anything from RuntimeError to AssertionError
        raise ExportError(
            f"{fmt} export of {type(model).__name__} failed: {error_summary(exc, 400)}"
        ) from exc
    return buf.getvalue(), exporter


Runner = Callable[[torch.Tensor], torch.Tensor]


def load_artifact(data: bytes, fmt: str, threads: int | None = None) -> Runner:
    """Load serialized ``data`` as a user would and return ``x -> output`` (CPU tensors).

    ONNX runs in an ONNX Runtime CPU session with ``threads`` intra-op threads (default: as
    many as torch uses, so ORT and PyTorch latencies are comparable).
    """
    fmt = parse_formats([fmt])[0]
    threads = threads or torch.get_num_threads()
    if fmt == "onnx":
        return onnx.ort_runner(data, threads)
    with onnx.quiet():
        if fmt == "torchscript":
            module: Callable[[torch.Tensor], torch.Tensor] = torch.jit.load(
                io.BytesIO(data), map_location="cpu"
            )
        else:  # torch.export.load unpickles: only ever called on bytes this process wrote
            module = torch.export.load(io.BytesIO(data)).module()

    def run_torch(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run_torch


def compare_outputs(
    run: Runner,
    reference: nn.Module,
    batches: Sequence[torch.Tensor],
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    """Max abs/rel error of ``run`` against ``reference`` over ``batches``; ``matches`` when
    ``|out − ref| ≤ atol + rtol·|ref|`` everywhere. ``max_rel_err`` is the max abs error over
    the largest reference magnitude (elementwise ratios blow up at near-zero outputs)."""
    max_abs, scale, ok, problem = 0.0, 0.0, True, None
    for x in batches:
        with torch.no_grad():
            ref = reference(x).float()
        try:
            out = run(x).float()
        except Exception as exc:  # e.g. a batch size baked into the graph
            return {"max_abs_err": math.inf, "max_rel_err": math.inf, "matches": False,
                    "problem": f"fails at batch {x.shape[0]}: {error_summary(exc)}"}
        if out.shape != ref.shape:
            return {"max_abs_err": math.inf, "max_rel_err": math.inf, "matches": False,
                    "problem": f"output {tuple(out.shape)} at batch {x.shape[0]}, "
                               f"expected {tuple(ref.shape)}"}
        diff = (out - ref).abs()
        finite = bool(torch.isfinite(diff).all())
        max_abs = max(max_abs, diff.max().item() if finite else math.inf)
        scale = max(scale, ref.abs().max().item())
        if not finite or not bool((diff <= atol + rtol * ref.abs()).all()):
            ok = False
            problem = problem or f"differs at batch {x.shape[0]}"
    rel = max_abs / scale if scale > 0 else max_abs
    return {"max_abs_err": max_abs, "max_rel_err": rel, "matches": ok, "problem": problem}


def median_latency_ms(run: Runner, x: torch.Tensor, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of ``run(x)`` in milliseconds after ``warmup`` untimed calls."""
    return median_ms(lambda: run(x), warmup, repeats)


def export_verified(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    fmt: str,
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    latency_batches: Sequence[int] = (),
    repeats: int = 10,
    metadata: dict[str, Any] | None = None,
    onnx_exporter: str = "auto",
) -> tuple[bytes, dict[str, Any]]:
    """Serialize ``model`` (its deploy form, eval mode), reload it, check it on ``batches``.

    Args:
        model: the module to export, already in its deploy form (``nas.deploy.to_deploy``).
        batches: held-out inputs; use at least two batch sizes to check the dynamic batch.
        fmt: ``onnx``, ``torchscript`` or ``exported``.
        latency_batches: batch sizes to time the reloaded artifact at (random inputs).
        onnx_exporter: ``auto`` (TorchScript-based, dynamo as fallback), ``torchscript``
            or ``dynamo``.

    Returns:
        The artifact's bytes and its report row (``format``, ``bytes``, ``max_abs_err``,
        ``max_rel_err``, ``matches``, ``check_batches``, ``latency_b<N>_ms`` ...).

    Raises:
        ExportError: the export failed or the artifact does not match within tolerance.
    """
    if not batches:
        raise ConfigError("export_verified needs at least one input batch")
    model = model.eval()
    data, exporter = _serialize(model, batches[0], fmt, opset, metadata, onnx_exporter)
    try:
        run = load_artifact(data, fmt)
    except NasError:
        raise
    except Exception as exc:
        raise ExportError(f"{fmt} artifact does not load: {error_summary(exc, 200)}") from exc
    check = compare_outputs(run, model, batches, atol, rtol)
    problem = check.pop("problem")
    if not check["matches"]:
        raise ExportError(
            f"{fmt} export does not match the PyTorch deploy form ({problem}; max |diff| "
            f"{check['max_abs_err']:.3g}, tolerance atol={atol:g} rtol={rtol:g}); nothing written"
        )
    row: dict[str, Any] = {
        "format": fmt,
        "exporter": exporter,
        "bytes": len(data),
        **check,
        "check_batches": [int(x.shape[0]) for x in batches],
    }
    if fmt == "onnx":
        row["opset"] = opset
    shape = tuple(batches[0].shape[1:])
    for b in latency_batches:
        x = torch.randn(int(b), *shape)
        row[f"latency_b{int(b)}_ms"] = median_latency_ms(run, x, repeats=repeats)
    return data, row


def _held_out_batches(images: torch.Tensor) -> list[torch.Tensor]:
    """The held-out batch and a batch of one image (two sizes: the batch axis is dynamic)."""
    if images.shape[0] >= 2:
        return [images, images[:1]]
    return [images, images.expand(3, *images.shape[1:]).contiguous()]


def _check_writable(folder: Path) -> None:
    """Fail before the (slow) export when the output folder cannot be created or written."""
    import os

    probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {folder} is not writable; choose another with --out")


def export_run(
    run_dir: str | Path,
    formats: str | Iterable[str] = ("onnx",),
    out: str | Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    check_batch: int = 64,
    latency_batches: Sequence[int] = (1, 32),
    repeats: int = 20,
    onnx_exporter: str = "auto",
) -> dict[str, Any]:
    """Export a finished ``nas train`` run's deploy form; verify; write files + ``export.json``.

    All requested formats are exported and checked first; only if every one matches are the
    files written (``out``, default ``RUN/export/``), so a failure leaves no file behind.
    ``export.json`` keeps the rows of formats exported earlier and not redone now.

    Raises:
        ConfigError: not a finished run, bad options, ONNX packages missing (exit 2).
        ExportError: an export failed or does not match (exit 1).
    """
    fmts = parse_formats(formats)
    if "onnx" in fmts:
        onnx.require_onnxruntime()
        onnx.check_opset(opset)
        if onnx_exporter not in ONNX_EXPORTERS:
            raise ConfigError(f"unknown ONNX exporter {onnx_exporter!r}; choose from "
                              f"{', '.join(ONNX_EXPORTERS)}")
    if check_batch < 1 or any(int(b) < 1 for b in latency_batches):
        raise ConfigError("check and latency batch sizes must be >= 1")
    if not (atol >= 0 and rtol >= 0):
        raise ConfigError(f"tolerances must be >= 0, got atol={atol}, rtol={rtol}")
    run_dir = Path(run_dir)
    model, cfg = load_trained(run_dir)
    folder = Path(out) if out is not None else run_dir / "export"
    _check_writable(folder)
    split = evaluation_split(cfg)
    images, _ = next(iter(BatchLoader(split, min(check_batch, len(split)), shuffle=False)))
    batches = _held_out_batches(images)
    deployed = to_deploy(model)
    if getattr(deployed, "auxiliary_head", None) is not None:
        deployed.auxiliary_head = None  # training-only; never runs in eval mode
    shape = tuple(images.shape[1:])
    metadata = {
        "input_shape": list(shape), "mean": list(split.mean), "std": list(split.std),
        "num_classes": split.num_classes,
        "genotype": str(resolve_genotype(cfg.model.genotype, cfg.model.transplant)),
        "note": "input: (uint8 image / 255 - mean) / std, NCHW float32; output: logits",
    }
    artifacts = []
    for fmt in fmts:
        log.info("exporting %s ...", fmt)
        data, row = export_verified(
            deployed, batches, fmt, opset=opset, atol=atol, rtol=rtol,
            latency_batches=latency_batches, repeats=repeats, metadata=metadata,
            onnx_exporter=onnx_exporter,
        )
        artifacts.append((folder / FORMATS[fmt], data, row))
    reference = {"format": "pytorch", "file": None, "bytes": None}
    for b in latency_batches:
        reference[f"latency_b{int(b)}_ms"] = measure_latency(
            deployed, (int(b), *shape), "cpu", warmup=3, repeats=repeats
        )
    if folder.is_dir():
        remove_stale_temp_files(folder)
    report_path = folder / "export.json"
    previous = _previous_rows(report_path)
    try:
        for path, data, row in artifacts:
            atomic_write_bytes(path, data)
            row["file"] = str(path)
        rows = [r for r in previous if r.get("format") not in fmts] + [r for *_, r in artifacts]
        report = {
            "run": str(run_dir), **metadata,
            "threads": torch.get_num_threads(), "tolerance": {"atol": atol, "rtol": rtol},
            "reference": reference, "exports": rows,
        }
        atomic_write_text(report_path, json.dumps(report, indent=1))
    except OSError as exc:
        raise ConfigError(f"output folder {folder}: cannot write ({exc.strerror or exc})") from None
    return report


def _previous_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an earlier ``export.json`` whose files still exist; none if unreadable."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("exports", [])
        return [r for r in rows if isinstance(r, dict) and r.get("file")
                and Path(r["file"]).is_file()]
    except (OSError, ValueError, AttributeError):
        return []


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2e}" if value < 0.01 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_export_table(report: dict[str, Any]) -> str:
    """One row per artifact (plus the PyTorch deploy form as the latency reference)."""
    lat = [k for k in report["reference"] if k.startswith("latency_")]
    cols = ["format", "file", "bytes", "max_abs_err", "max_rel_err", "matches", *lat]
    rows = [[_cell(Path(r["file"]).name if k == "file" and r.get("file") else r.get(k))
             for k in cols] for r in (*report["exports"], report["reference"])]
    head = [c.replace("latency_", "").replace("_ms", " ms") for c in cols]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w) in
                       enumerate(zip(head, widths)))]
    for r in rows:
        lines.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))))
    return "\n".join(lines)
