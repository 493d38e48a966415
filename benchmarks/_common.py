"""Shared helpers for the benchmark scripts: environment, timing, peak memory, result files.

Every script in ``benchmarks/`` times with :func:`time_ms` (warm-up, device-synchronized,
median), measures memory with :func:`peak_memory`, and writes its rows with
:func:`write_results` (after every row, through :class:`ResultsWriter`) to
``benchmarks/results/<name>.json`` and ``<name>.md``. The pieces
the scripts share besides (command-line arguments, run setup, ratios, the busy-CPU caveat,
and for the loop comparisons ``search.py`` and ``train.py`` the timed block of steps and
the reference ratios) are here too.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RESULTS_DIR",
    "MEM_METHOD_CUDA",
    "MEM_METHOD_SAVED",
    "MemoryResult",
    "git_sha",
    "resolve_device",
    "synchronize",
    "describe_env",
    "time_ms",
    "peak_memory",
    "markdown_table",
    "write_results",
    "ResultsWriter",
    "loadavg_1m",
    "base_parser",
    "add_threads_arg",
    "add_loop_args",
    "add_quick_out_args",
    "apply_defaults",
    "apply_runtime",
    "setup_run",
    "free_device_memory",
    "LoopLabels",
    "Cycler",
    "time_steps",
    "step_fields",
    "ratio",
    "add_ratios_vs_ref",
    "pop_mem_methods",
    "mem_method_meta",
    "add_busy_cpu_note",
]

#: Default output folder (git-ignored).
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_MB = 2**20


def loadavg_1m() -> float | None:
    """The 1-minute load average, rounded; None where the OS has none."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def git_sha(short: bool = True) -> str:
    """Commit of the working tree (``-dirty`` if changed); ``unknown`` outside git."""
    repo = Path(__file__).resolve().parent.parent
    cmd = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
    try:
        sha = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.strip() + ("-dirty" if dirty.strip() else "")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available; use cpu or auto")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_env(device: torch.device) -> dict[str, Any]:
    """Machine, library and device description stored with every result file."""
    env: dict[str, Any] = {
        "git_sha": git_sha(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m": loadavg_1m(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            device_memory_GB=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        env["device_name"] = env["cpu"]
    return env


def time_ms(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 3,
    repeats: int = 10,
    budget_s: float | None = None,
    min_repeats: int = 3,
) -> float:
    """Median wall time of ``fn()`` in milliseconds.

    Args:
        fn: The work to time; called ``warmup`` times untimed first.
        device: Synchronized before starting and after each call, so GPU work is counted.
        warmup: Untimed calls (cuDNN autotuning, allocator warm-up, lazy init); with
            ``budget_s``, warm-up also ends once the budget is spent (at least one call).
        repeats: Timed calls at most.
        budget_s: Optional time budget; timing stops once it is spent and at least
            ``min_repeats`` calls were timed (keeps slow cases from dominating a run).
        min_repeats: Lower bound on timed calls when ``budget_s`` cuts the run short.

    Returns:
        The median of the timed calls, in milliseconds.
    """
    started = time.perf_counter()
    for _ in range(warmup):
        fn()
        synchronize(device)
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break  # one slow call already warmed up whatever needed it
    synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    for i in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        spent = time.perf_counter() - started
        if budget_s is not None and i + 1 >= min_repeats and spent > budget_s:
            break
    return statistics.median(times) * 1e3


@dataclass(frozen=True)
class MemoryResult:
    """Peak memory of one forward+backward and how it was measured."""

    bytes: int
    method: str

    @property
    def mb(self) -> float:
        """Peak in MiB."""
        return self.bytes / _MB


#: ``method`` strings written into results (and explained in benchmarks/README.md).
MEM_METHOD_CUDA = "cuda_max_memory_allocated"
MEM_METHOD_SAVED = "saved_tensors_hooks"


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    return storage.data_ptr(), storage.nbytes()


class _SavedTensorCounter:
    """Sums the bytes of distinct storages autograd saves for backward (excluded ones aside)."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.seen: set[int] = set()
        for t in exclude:
            key = _storage_key(t)
            if key is not None:
                self.seen.add(key[0])
        self.bytes = 0

    def add(self, t: torch.Tensor) -> None:
        key = _storage_key(t)
        if key is None:
            self.bytes += t.numel() * t.element_size()
        elif key[0] not in self.seen:
            self.seen.add(key[0])
            self.bytes += key[1]

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.add(t)
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def peak_memory(
    forward: Callable[[], torch.Tensor],
    backward: Callable[[torch.Tensor], None],
    device: torch.device,
    exclude: Iterable[torch.Tensor] = (),
) -> MemoryResult:
    """Peak memory of ``backward(forward())``.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus what was allocated
    before the call (so weights and the input are not counted; activations, gradients,
    workspaces and temporaries are).

    CPU: the RSS delta of a process is unreliable (allocator caching, other threads), so
    the activation peak is counted instead: the bytes of the distinct storages autograd
    saves for backward during ``forward`` (via ``torch.autograd.graph.saved_tensors_hooks``),
    plus the output. Tensors in ``exclude`` (pass the parameters) are not counted.
    This is the memory that stays alive from the end of the forward pass into backward;
    transient workspaces and gradients are not included.

    Returns:
        The peak in bytes and the method used (``MemoryResult.method``).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = forward()
        backward(out)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return MemoryResult(max(int(peak), 0), MEM_METHOD_CUDA)
    counter = _SavedTensorCounter(exclude)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        out = forward()
        counter.add(out)
        backward(out)
    return MemoryResult(counter.bytes, MEM_METHOD_SAVED)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0 or abs(value) < 0.1:
            return f"{value:.3g}"
        if abs(value) < 10:
            return f"{value:.2f}"
        if abs(value) < 1000:
            return f"{value:.1f}"
        return f"{value:.0f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """GitHub markdown table of ``rows``; columns default to the keys of the first row."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns) if columns is not None else list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    rows: Sequence[dict[str, Any]],
    metadata: dict[str, Any],
    out_dir: str | Path | None = None,
    columns: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    extra_md: str = "",
    echo: bool = True,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (metadata + rows) and ``<name>.md``; print the table.

    Args:
        name: Base file name, e.g. ``"ops"``.
        rows: One dict per measured case.
        metadata: Environment and arguments (see :func:`describe_env`).
        out_dir: Output folder; ``benchmarks/results`` by default.
        columns: Table columns (all keys of the first row by default).
        notes: Lines printed under the table title (methods, caveats).
        extra_md: Markdown appended after the table (e.g. a summary table).
        echo: Print the markdown to stdout.

    Returns:
        The JSON and markdown paths.
    """
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    payload = _json_safe({"name": name, "metadata": metadata, "rows": list(rows)})
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str, allow_nan=False) + "\n")
    tmp.replace(json_path)
    keys = ("device", "device_name", "torch", "torch_threads", "loadavg_1m", "git_sha", "timestamp")
    header = ", ".join(f"{k}={metadata[k]}" for k in keys if k in metadata)
    text = f"# {name}\n\n{header}\n\n"
    text += "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "")
    text += markdown_table(rows, columns)
    if extra_md:
        text += "\n" + extra_md
    md_path.write_text(text)
    if echo:
        print(text, end="")
        print(f"wrote {json_path} and {md_path}")
    return json_path, md_path


class ResultsWriter:
    """Writes a benchmark's files after every row, so a run killed by a time limit (the
    steps of ``gpu_check.sh``) still leaves the figures it had measured.

    :meth:`add` rewrites ``<name>.json`` and ``<name>.md`` atomically with the rows so far
    (``"complete": false`` in the metadata; keys starting with ``_`` left out; ``derive``,
    if given, fills derived columns such as ratios on copies of the rows first);
    :meth:`finish` writes the final files through :func:`write_results`.
    """

    def __init__(
        self,
        name: str,
        metadata: dict[str, Any],
        out_dir: str | Path | None = None,
        columns: Sequence[str] | None = None,
        derive: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.name, self.metadata, self.out_dir = name, metadata, out_dir
        self.columns, self.derive = columns, derive
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        """Keep ``row`` and rewrite the partial files."""
        self.rows.append(row)
        self.write_partial()

    def write_partial(self) -> tuple[Path, Path]:
        """The files with the rows so far, marked incomplete."""
        rows = copy.deepcopy(self.rows)
        if self.derive is not None:
            try:
                self.derive(rows)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                pass  # a derived column needs rows not measured yet
        rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        meta = {**self.metadata, "complete": False, "rows_done": len(rows)}
        note = f"partial: {len(rows)} row(s) so far (the run has not finished)"
        return write_results(self.name, rows, meta, self.out_dir, self.columns,
                             notes=[note], echo=False)

    def finish(
        self,
        metadata: dict[str, Any],
        rows: Sequence[dict[str, Any]] | None = None,
        notes: Sequence[str] = (),
        extra_md: str = "",
    ) -> tuple[Path, Path]:
        """The final files (``"complete": true``), printed; ``rows`` default to those added."""
        rows = self.rows if rows is None else rows
        return write_results(self.name, rows, {**metadata, "complete": True}, self.out_dir,
                             self.columns, notes=notes, extra_md=extra_md)


# --- command line and run setup ------------------------------------------------------------


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--device`` first."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads``: torch CPU threads."""
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def add_loop_args(p: argparse.ArgumentParser) -> None:
    """``--channels-last`` (ours) and ``--workers`` (reference) of the loop comparisons."""
    p.add_argument("--channels-last", action="store_true", help="ours: channels_last memory")
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (2)")


def add_quick_out_args(
    p: argparse.ArgumentParser, quick_help: str = "tiny settings: the smoke test"
) -> None:
    """``--quick`` and ``--out``, the last two arguments of every script."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results)")


def apply_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Set the arguments still ``None`` from ``defaults``."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def size_problem(
    args: argparse.Namespace, positive: Sequence[str], non_negative: Sequence[str] = ("warmup",)
) -> str | None:
    """The shared argument check: ``positive`` at least 1, ``non_negative`` at least 0,
    ``--threads`` (when given) at least 1, ``--layers`` (when present) at least 3."""
    bad = [k for k in positive if getattr(args, k) < 1]
    bad += [k for k in non_negative if getattr(args, k) < 0]
    bad += ["threads"] if getattr(args, "threads", None) is not None and args.threads < 1 else []
    if bad:
        return f"must be positive: {', '.join(bad)}"
    if getattr(args, "layers", None) is not None and args.layers < 3:
        return f"--layers must be >= 3, got {args.layers}"
    return None


def apply_runtime(threads: int | None, device: torch.device) -> None:
    """``--threads`` for torch, and cuDNN autotuning on CUDA."""
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def setup_run(
    args: argparse.Namespace,
    fill_defaults: Callable[[argparse.Namespace, torch.device], str | None],
) -> torch.device | None:
    """Resolve ``--device``, fill and check the arguments (``fill_defaults`` returns an error
    message or None), then :func:`apply_runtime`. None after printing ``error: ...``."""
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    problem = fill_defaults(args, device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    apply_runtime(args.threads, device)
    return device


def free_device_memory(device: torch.device) -> None:
    """Collect garbage (DataLoader workers, device tensors of a finished case) and hand
    cached CUDA memory back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- loop comparisons (search.py, train.py) -------------------------------------------------


class LoopLabels:
    """Table labels for one side of a loop comparison; the dataclass using it has the fields
    ``loader`` (``"batchloader"`` or ``"torchvision"``) and ``amp``."""

    loader: str  # annotations only: not fields of the dataclass
    amp: bool

    def dtype(self, device: torch.device) -> str:
        return "bf16-autocast" if self.amp and device.type == "cuda" else "fp32"

    def loader_label(self, workers: int) -> str:
        if self.loader == "batchloader":
            return "BatchLoader"
        return f"torchvision DataLoader ({workers} workers)"


class Cycler:
    """Endless batches: calling it gives the next one of ``make_iter()``, starting a new
    pass when one ends. The first pass starts at construction (DataLoader workers too)."""

    def __init__(self, make_iter: Callable[[], Iterable[Any]]) -> None:
        self._make = make_iter
        self._it: Iterator[Any] = iter(make_iter())

    def __call__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self._make())
            return next(self._it)


def time_steps(
    run: Callable[[int], Any], warmup: int, steps: int, device: torch.device
) -> tuple[float, Any]:
    """``run(warmup)`` untimed, then ``run(steps)`` timed as one block (synchronized before
    and after, no syncs inside). Returns ms per step and what the timed ``run`` returned."""
    run(warmup)
    last: list[Any] = [None]

    def block() -> None:
        last[0] = run(steps)

    block_ms = time_ms(block, device, warmup=0, repeats=1)
    return block_ms / steps, last[0]


def step_fields(ms: float, batch: int, mem: MemoryResult) -> dict[str, Any]:
    """The measured fields of an ``ok`` row (``_`` keys are popped before writing)."""
    return {
        "ms_per_step": round(ms, 3),
        "images_per_s": round(batch * 1e3 / ms, 2),
        "peak_mem_MB": round(mem.mb, 3),
        "status": "ok",
        "_mem_method": mem.method,
        "_peak_bytes": mem.bytes,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded to 3 decimals; None when either is missing or ``b <= 0``."""
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)


def add_ratios_vs_ref(rows: list[dict[str, Any]], rate_key: str) -> None:
    """``speedup_vs_ref`` = ``rate_key`` over the reference's, ``mem_ratio_vs_ref`` = peak
    memory over the reference's, per batch size, for the ``ok`` rows."""
    for batch in sorted({r["batch"] for r in rows}):
        block = [r for r in rows if r["batch"] == batch]
        ref = next((r for r in block if r["loop"] == "reference" and r["status"] == "ok"), None)
        for r in block:
            if ref is None or r["status"] != "ok":
                continue
            r["speedup_vs_ref"] = ratio(r[rate_key], ref[rate_key])
            r["mem_ratio_vs_ref"] = ratio(r["_peak_bytes"], ref["_peak_bytes"])


# --- results ----------------------------------------------------------------------------------


def pop_mem_methods(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Remove ``_mem_method`` and ``_peak_bytes`` from the rows; the methods, sorted."""
    methods = sorted({r.pop("_mem_method") for r in rows if "_mem_method" in r})
    for r in rows:
        r.pop("_peak_bytes", None)
    return methods


def mem_method_meta(methods: Sequence[str]) -> str | Sequence[str]:
    """The ``mem_method`` metadata value: the method when there is one, else the list."""
    return methods[0] if len(methods) == 1 else methods


def add_busy_cpu_note(
    notes: list[str],
    device: torch.device,
    meta: dict[str, Any],
    included: str = "this run and its DataLoader workers included",
    advice: str = "timings are inflated; compare within this file only",
) -> None:
    """Append (and print as a warning) a caveat when other processes competed for the cores
    of a CPU run: a 1-minute load of at least 3/4 of the cores plus one."""
    load, cores = meta.get("loadavg_1m"), meta.get("cpu_count")
    if device.type != "cpu" or load is None or not cores or load < cores * 0.75 + 1:
        return
    note = f"CPU busy during the run (1-min load {load} on {cores} cores, {included}): {advice}"
    notes.append(note)
    print(f"warning: {note}", file=sys.stderr)
