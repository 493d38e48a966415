"""Fused supernet benchmark: the fused forward against the reference MixedOp path.

Times whole DARTS search steps (:meth:`nas.search.darts.SearchJob.step`: architecture step on
a validation batch, then the weight step) with ``model.fused`` on and off, same job, same
weights, same batches, for three cases by default:

- ``darts`` space (8 ops), K=1, first order;
- ``darts`` space, K=1, second order (unrolled weights via ``functional_call``);
- ``full`` space (13 ops), partial channels K=4 + edge normalization, first order.

Both paths compute the same function (``tests/search/test_fused.py``); only the execution
differs. ``--compile`` adds a third row per case: the fused supernet under ``torch.compile``
(compilation happens in the warm-up step and takes minutes for a full supernet on CPU);
``--cuda-graphs`` a fourth, compiled with ``mode="reduce-overhead"`` (``runtime.compile_mode``):
each compiled graph replayed as a CUDA graph. ``--compile-backend aot_eager`` compiles in
seconds without a C++ compiler (what the CPU smoke of ``gpu_check.sh`` uses).

Usage::

    python benchmarks/fused.py [--device auto|cpu|cuda] [--cases darts-k1-first ...]
        [--batch B] [--steps N] [--warmup N] [--image-size S] [--channels C] [--layers L]
        [--channels-last] [--compile] [--cuda-graphs] [--compile-backend B] [--threads N]
        [--out DIR] [--quick]

Results: ``benchmarks/results/fused.json`` and ``fused.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    Cycler,
    ResultsWriter,
    add_busy_cpu_note,
    add_quick_out_args,
    add_threads_arg,
    apply_defaults,
    base_parser,
    describe_env,
    free_device_memory,
    loadavg_1m,
    mem_method_meta,
    peak_memory,
    pop_mem_methods,
    ratio,
    setup_run,
    size_problem,
    step_fields,
    time_steps,
)

from nas.config import DataConfig, RuntimeConfig
from nas.run import RunDir
from nas.search.config import ArchConfig, SearchConfig, SpaceConfig, SupernetConfig
from nas.search.darts import SearchJob

NUM_CLASSES = 10
IMAGE_CHANNELS = 3


@dataclasses.dataclass(frozen=True)
class Case:
    """One search setting, run on every path."""

    name: str
    space: str
    partial_k: int
    edge_norm: bool
    order: str


CASES = {
    c.name: c
    for c in (
        Case("darts-k1-first", "darts", 1, False, "first"),
        Case("darts-k1-second", "darts", 1, False, "second"),
        Case("full-k4-edgenorm-first", "full", 4, True, "first"),
    )
}

# path name -> (model.fused, runtime.compile, runtime.compile_mode)
PATHS = {
    "reference": (False, False, None),
    "fused": (True, False, None),
    "fused+compile": (True, True, None),
    # CUDA graphs: each compiled graph replayed as one launch (inductor ignores it on CPU)
    "fused+cudagraphs": (True, True, "reduce-overhead"),
}

DEFAULTS = {
    "cuda": {"batch": 64, "image_size": 32, "channels": 16, "layers": 8, "steps": 20, "warmup": 3},
    "cpu": {"batch": 64, "image_size": 16, "channels": 8, "layers": 5, "steps": 3, "warmup": 1},
}
QUICK = {"batch": 4, "image_size": 8, "channels": 4, "layers": 3, "steps": 1, "warmup": 0}

COLUMNS = (
    "case",
    "path",
    "space",
    "partial_k",
    "edge_norm",
    "order",
    "batch",
    "device",
    "channels_last",
    "threads",
    "steps",
    "ms_per_step",
    "images_per_s",
    "speedup_vs_ref",
    "peak_mem_MB",
    "mem_ratio_vs_ref",
    "status",
)


def build_job(case: Case, path: str, args: argparse.Namespace, device, run_dir: str) -> SearchJob:
    """The real SearchJob for ``case`` on ``path``, synthetic data in a BatchLoader."""
    fused, compiled, mode = PATHS[path]
    per_half = args.batch * (args.warmup + args.steps + 2)
    data = DataConfig(
        name="synthetic",
        download=False,
        batch_size=args.batch,
        eval_batch_size=args.batch,
        augment=True,
        options={
            "num_samples": 2 * per_half,
            "image_size": args.image_size,
            "channels": IMAGE_CHANNELS,
            "num_classes": NUM_CLASSES,
        },
    )
    cfg = SearchConfig(
        name=f"bench-fused-{case.name}-{path}",
        run_dir=run_dir,
        data=data,
        space=SpaceConfig(name=case.space),
        model=SupernetConfig(
            init_channels=args.channels,
            layers=args.layers,
            partial_channels=case.partial_k,
            edge_norm=case.edge_norm,
            fused=fused,
        ),
        arch=ArchConfig(order=case.order, warmup_epochs=0),  # every step has its α step
        runtime=RuntimeConfig(
            device=str(device),
            amp=False,
            channels_last=args.channels_last,
            compile=compiled,
            compile_mode=mode,
            compile_backend=getattr(args, "compile_backend", "inductor"),
            progress=False,
            threads=args.threads,  # None: the job sizes its threads to the free cores
        ),
    )
    cfg.model.validate()
    return SearchJob(cfg, RunDir(run_dir))


def _activation_memory(job: SearchJob, batch, device: torch.device):
    """Peak memory of one supernet forward + backward (method as in benchmarks/search.py)."""
    model, (x, y) = job.model, batch
    weights = model.weight_parameters()
    mem = peak_memory(
        lambda: F.cross_entropy(model(x).float(), y),
        lambda loss: loss.backward(inputs=weights),
        device,
        exclude=[*model.parameters(), x],
    )
    for p in weights:
        p.grad = None
    return mem


def bench_case(case: Case, path: str, args: argparse.Namespace, device) -> dict[str, Any]:
    """Warm up, time ``args.steps`` search steps as one block, then measure memory."""
    with tempfile.TemporaryDirectory(prefix="bench-fused-") as run_dir:
        torch.manual_seed(0)
        job = build_job(case, path, args, device, run_dir)
        job.start_epoch(0)
        batches = Cycler(job.batches)

        def run(n: int) -> None:
            for _ in range(n):
                job.step(batches())

        ms, _ = time_steps(run, args.warmup, args.steps, device)
        mem = _activation_memory(job, batches(), device)
        profile = profile_step(job, batches(), device, args.profile) if args.profile else None
    row = {**_fields(case, path, args, device), **step_fields(ms, args.batch, mem)}
    return {**row, "threads": torch.get_num_threads(), "_profile": profile}


def profile_step(job: SearchJob, batch, device: torch.device, top: int) -> dict[str, Any]:
    """Where one search step's time goes: torch.profiler's operator table, ``top`` rows by
    self time, and how many operator calls the step makes (the dispatch overhead)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        job.step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    on_cuda = device.type == "cuda"

    def self_us(e) -> float:
        return e.self_device_time_total if on_cuda else e.self_cpu_time_total

    total = sum(self_us(e) for e in events) or 1.0
    rows = sorted(events, key=self_us, reverse=True)[:top]
    return {
        "self_time_ms": round(total / 1e3, 2),
        "op_calls": sum(e.count for e in events if e.key.startswith("aten::")),
        "top": [
            {"op": e.key, "calls": e.count, "self_ms": round(self_us(e) / 1e3, 2),
             "share": round(self_us(e) / total, 3)}
            for e in rows
        ],
    }


def _fields(case: Case, path: str, args: argparse.Namespace, device) -> dict[str, Any]:
    return {
        "case": case.name,
        "path": path,
        "space": case.space,
        "partial_k": case.partial_k,
        "edge_norm": case.edge_norm,
        "order": case.order,
        "batch": args.batch,
        "device": device.type,
        "channels_last": args.channels_last,
        "threads": None,
        "steps": args.steps,
        "ms_per_step": None,
        "images_per_s": None,
        "speedup_vs_ref": None,
        "peak_mem_MB": None,
        "mem_ratio_vs_ref": None,
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Per case: images/s and peak memory of each path over the reference's."""
    for name in {r["case"] for r in rows}:
        block = [r for r in rows if r["case"] == name]
        ref = next((r for r in block if r["path"] == "reference" and r["status"] == "ok"), None)
        for r in block:
            if ref is not None and r["status"] == "ok":
                r["speedup_vs_ref"] = ratio(r["images_per_s"], ref["images_per_s"])
                r["mem_ratio_vs_ref"] = ratio(r["_peak_bytes"], ref["_peak_bytes"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), help="default: all three")
    p.add_argument("--batch", type=int, help="batch size (CUDA 64, CPU 64)")
    p.add_argument("--steps", type=int, help="timed search steps per row (CUDA 20, CPU 3)")
    p.add_argument("--warmup", type=int, help="untimed steps first (CUDA 3, CPU 1)")
    p.add_argument("--image-size", type=int, help="H=W of the synthetic images (CUDA 32, CPU 16)")
    p.add_argument("--channels", type=int, help="supernet init channels C (CUDA 16, CPU 8)")
    p.add_argument("--layers", type=int, help="supernet cells (CUDA 8, CPU 5; at least 3)")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and data")
    p.add_argument("--compile", action="store_true", help="also time the fused path compiled")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time it compiled with mode=reduce-overhead (CUDA graphs)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (aot_eager: no C++ compiler, fast to compile)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile one step per row: the top N operators (metadata.profile)")
    add_threads_arg(p)
    add_quick_out_args(p)
    return p.parse_args(argv)


def fill_defaults(args: argparse.Namespace, device: torch.device) -> str | None:
    defaults = QUICK if args.quick else DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    apply_defaults(args, defaults)
    if args.cases is None:
        args.cases = list(CASES)
    problem = size_problem(args, ("batch", "steps", "image_size", "channels"))
    if problem:
        return problem
    uneven = [c for c in args.cases if args.channels % CASES[c].partial_k]
    if uneven:
        return f"--channels {args.channels} is not divisible by the K of {uneven[0]}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 on bad input, 1 if a row failed)."""
    args = parse_args(argv)
    device = setup_run(args, fill_defaults)
    if device is None:
        return 2
    load_start = loadavg_1m()
    paths = ["reference", "fused"] + (["fused+compile"] if args.compile else [])
    paths += ["fused+cudagraphs"] if args.cuda_graphs else []
    meta0 = {**describe_env(device), "benchmark": "fused", "args": vars(args)}
    writer = ResultsWriter("fused", meta0, args.out, COLUMNS, derive=add_ratios)
    rows = writer.rows
    failures: list[str] = []
    for name in args.cases:
        for path in paths:
            case, tag = CASES[name], f"{name} {path}"
            try:
                row = bench_case(case, path, args, device)
            except Exception as err:  # keep going: one broken row must not sink the run
                row = {**_fields(case, path, args, device), "status": "error"}
                failures.append(f"{tag}: {type(err).__name__}: {err}")
                print(f"FAILED {tag}: {type(err).__name__}: {err}", file=sys.stderr)
            free_device_memory(device)
            writer.add(row)
            if row["status"] == "ok":
                print(f"{tag}: {row['ms_per_step']:.1f} ms/step", file=sys.stderr)
    add_ratios(rows)
    profiles = {f"{r['case']} {r['path']}": r.pop("_profile", None) for r in rows}
    methods = pop_mem_methods(rows)
    meta = describe_env(device)
    meta.update(
        benchmark="fused",
        args=vars(args),
        loadavg_1m_start=load_start,
        mem_method=mem_method_meta(methods),
        failures=failures,
        profile={k: v for k, v in profiles.items() if v},
    )
    notes = [
        f"settings: supernet C={args.channels}, {args.layers} cells, synthetic "
        f"{IMAGE_CHANNELS}x{args.image_size}x{args.image_size} images, {NUM_CLASSES} classes, "
        f"batch {args.batch}, {args.warmup} warm-up + {args.steps} timed steps per row, "
        f"device {device.type}, fp32, torch threads "
        f"{args.threads or 'sized by the job to the free cores (see the threads column)'}, "
        f"channels_last={'on' if args.channels_last else 'off'}",
        "step: SearchJob.step = architecture step (Adam on alphas/betas; first order: one val "
        "batch; second order: unrolled weights + finite-difference Hessian) + weight step "
        "(SGD, grad clip); same job settings, loader and seeds on every path",
        "paths: reference = per-edge MixedOp (model.fused=false); "
        "fused = nas.search.supernet.fused "
        "(model.fused=true); fused+compile = fused under torch.compile (runtime.compile=true)",
        "images_per_s = training images per second (each step also reads a val batch); "
        "speedup_vs_ref = images_per_s / reference images_per_s, same case",
        f"peak_mem_MB method: {', '.join(methods) or '-'} (one supernet forward + backward)",
    ]
    add_busy_cpu_note(notes, device, meta, included="this run included")
    if failures:
        notes.append(f"FAILED rows: {'; '.join(failures)}")
    writer.finish(meta, notes=notes)
    for tag, prof in meta["profile"].items():
        print(f"\nprofile {tag}: {prof['self_time_ms']} ms self time, {prof['op_calls']} aten "
              "calls per step")
        for e in prof["top"]:
            print(f"  {e['share']:6.1%} {e['self_ms']:9.2f} ms {e['calls']:6d}x  {e['op']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
