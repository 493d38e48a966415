"""Supernet search-step benchmark: our search loop against a plain reference loop.

For each batch size it times full DARTS search steps over the 13-op ``full`` space, driven
by the real :meth:`nas.search.darts.SearchJob.step` (first-order architecture step on a
validation batch, then the weight step), for two loops built in the same run:

- ``ours``: :class:`nas.data.BatchLoader` (uint8 dataset on the device, batched on-device
  crop+flip), partial channels ``K`` (PC-DARTS) with edge normalization, bf16 autocast on
  CUDA (fp32 on CPU: the runtime's autocast is CUDA-only), channels_last when asked;
- ``reference``: :func:`_pil_loader.torchvision_loader` (DataLoader workers, PIL transforms,
  batches copied to the device in the loop), fp32, every channel through every op
  (``K=1``), no edge normalization.

It reports steps/s, images/s, ms/step, peak memory and the ratios ours/reference.

Usage::

    python benchmarks/search.py [--device auto|cpu|cuda] [--batches 64 256] [--steps N]
        [--warmup N] [--image-size S] [--channels C] [--layers L] [--partial-k K]
        [--channels-last] [--workers N] [--threads N] [--out DIR] [--quick]

Results: ``benchmarks/results/search.json`` and ``search.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    Cycler,
    LoopLabels,
    ResultsWriter,
    add_busy_cpu_note,
    add_loop_args,
    add_quick_out_args,
    add_ratios_vs_ref,
    add_threads_arg,
    apply_defaults,
    base_parser,
    describe_env,
    free_device_memory,
    loadavg_1m,
    mem_method_meta,
    peak_memory,
    pop_mem_methods,
    setup_run,
    size_problem,
    step_fields,
    time_steps,
)
from _pil_loader import torchvision_loader

from nas.config import DataConfig, RuntimeConfig
from nas.run import RunDir
from nas.search.config import ArchConfig, SearchConfig, SpaceConfig, SupernetConfig
from nas.search.darts import SearchJob

SPACE = "full"
NUM_CLASSES = 10
IMAGE_CHANNELS = 3
MAX_BATCHES_PER_EPOCH = 64  # bigger runs cycle through the synthetic set again

# Defaults by device: the full settings on CUDA; on CPU a smaller supernet and input so the
# four cases finish in minutes on two cores (a 13-op step at batch 256, 32x32, 8 cells
# takes minutes there). The exact settings are written above the table.
DEFAULTS = {
    "cuda": {
        "batches": [64, 256],
        "image_size": 32,
        "channels": 16,
        "layers": 8,
        "steps": 30,
        "warmup": 5,
    },
    "cpu": {
        "batches": [64, 256],
        "image_size": 16,
        "channels": 8,
        "layers": 5,
        "steps": 2,
        "warmup": 1,
    },
}
QUICK = {"batches": [4, 8], "image_size": 8, "channels": 4, "layers": 3, "steps": 1, "warmup": 0}

COLUMNS = (
    "loop",
    "batch",
    "device",
    "dtype",
    "loader",
    "partial_k",
    "edge_norm",
    "channels_last",
    "steps",
    "ms_per_step",
    "steps_per_s",
    "images_per_s",
    "speedup_vs_ref",
    "peak_mem_MB",
    "mem_ratio_vs_ref",
    "status",
)


@dataclasses.dataclass(frozen=True)
class Loop(LoopLabels):
    """One side of the comparison."""

    name: str
    loader: str  # "batchloader" | "torchvision"
    partial_k: int
    edge_norm: bool
    amp: bool
    channels_last: bool


def loops_from(args: argparse.Namespace) -> list[Loop]:
    """Reference first (as in ops.py), then ours."""
    return [
        Loop("reference", "torchvision", 1, False, False, False),
        Loop("ours", "batchloader", args.partial_k, True, True, args.channels_last),
    ]


class _HostLoader:
    """A torchvision DataLoader behind SearchJob's loader protocol (``set_epoch``, ``len``,
    ``iter``); batches are copied to the device in the loop, as a plain training loop does."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.non_blocking = device.type == "cuda"

    def set_epoch(self, epoch: int) -> None:  # the DataLoader's sampler draws a new order
        pass

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield (
                x.to(self.device, non_blocking=self.non_blocking),
                y.to(self.device, non_blocking=self.non_blocking),
            )


def _num_samples(batch: int, args: argparse.Namespace) -> int:
    """Both search halves hold enough batches for warm-up, timing and the memory step."""
    per_half = batch * min(args.warmup + args.steps + 2, MAX_BATCHES_PER_EPOCH)
    return 2 * per_half


def build_job(
    loop: Loop, batch: int, args: argparse.Namespace, device: torch.device, run_dir: str
) -> SearchJob:
    """The real SearchJob for ``loop``; the reference gets torchvision loaders swapped in."""
    data = DataConfig(
        name="synthetic",
        download=False,
        batch_size=batch,
        eval_batch_size=batch,
        augment=True,
        options={
            "num_samples": _num_samples(batch, args),
            "image_size": args.image_size,
            "channels": IMAGE_CHANNELS,
            "num_classes": NUM_CLASSES,
        },
    )
    cfg = SearchConfig(
        name=f"bench-{loop.name}-{batch}",
        run_dir=run_dir,
        data=data,
        space=SpaceConfig(name=SPACE),
        model=SupernetConfig(
            init_channels=args.channels,
            layers=args.layers,
            partial_channels=loop.partial_k,
            edge_norm=loop.edge_norm,
        ),
        arch=ArchConfig(warmup_epochs=0),  # every timed step has its α step
        runtime=RuntimeConfig(
            device=str(device), amp=loop.amp, channels_last=loop.channels_last, progress=False,
            threads=args.threads,  # else the job sizes its threads to the free cores
        ),
    )
    cfg.model.validate()
    job = SearchJob(cfg, RunDir(run_dir))
    if loop.loader == "torchvision":
        pin = device.type == "cuda"
        for attr, offset in (("train_loader", 0), ("val_loader", 1)):
            split = getattr(job, attr).data
            dl = torchvision_loader(
                split,
                batch,
                augment=data.augment,
                cutout=data.cutout,
                num_workers=args.workers,
                crop_padding=data.crop_padding,
                flip=data.flip,
                seed=cfg.runtime.seed + offset,
                pin_memory=pin,
            )
            setattr(job, attr, _HostLoader(dl, device))
    return job


class _Stepper:
    """Drives ``job.step`` over its training batches, starting a new pass when one ends."""

    def __init__(self, job: SearchJob) -> None:
        self.job = job
        job.start_epoch(0)
        self._batches = Cycler(job.batches)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batches()

    def step(self) -> Any:
        return self.job.step(self.next_batch())

    def run(self, n: int) -> None:
        for _ in range(n):
            self.step()


def _step_memory(stepper: _Stepper, device: torch.device):
    """CUDA: peak of one whole search step above what was allocated before it. CPU: bytes
    autograd saves in one supernet forward (the weight step's; the arch step saves as much
    for its val batch and frees it first)."""
    if device.type == "cuda":
        return peak_memory(stepper.step, lambda _out: None, device)
    model = stepper.job.model
    x, y = stepper.next_batch()
    weights = model.weight_parameters()

    def forward() -> torch.Tensor:
        return F.cross_entropy(model(x).float(), y)

    def backward(loss: torch.Tensor) -> None:
        loss.backward(inputs=weights)

    mem = peak_memory(forward, backward, device, exclude=[*model.parameters(), x])
    for p in weights:
        p.grad = None
    return mem


def bench_case(
    loop: Loop, batch: int, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Warm up, time ``args.steps`` search steps as one block, then measure memory."""
    with tempfile.TemporaryDirectory(prefix="bench-search-") as run_dir:
        torch.manual_seed(0)
        job = build_job(loop, batch, args, device, run_dir)
        stepper = _Stepper(job)
        ms, _ = time_steps(stepper.run, args.warmup, args.steps, device)
        mem = _step_memory(stepper, device)
    return {
        **_case_fields(loop, batch, args, device),
        **step_fields(ms, batch, mem),
        "steps_per_s": round(1e3 / ms, 4),
    }


def _case_fields(
    loop: Loop, batch: int, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    return {
        "loop": loop.name,
        "batch": batch,
        "device": device.type,
        "dtype": loop.dtype(device),
        "loader": loop.loader_label(args.workers),
        "partial_k": loop.partial_k,
        "edge_norm": loop.edge_norm,
        "channels_last": loop.channels_last,
        "steps": args.steps,
        "ms_per_step": None,
        "steps_per_s": None,
        "images_per_s": None,
        "speedup_vs_ref": None,
        "peak_mem_MB": None,
        "mem_ratio_vs_ref": None,
    }


def _settings_note(args: argparse.Namespace, device: torch.device) -> str:
    return (
        f"settings: space `{SPACE}` (13 ops), supernet C={args.channels}, "
        f"{args.layers} cells, synthetic {IMAGE_CHANNELS}x{args.image_size}x{args.image_size} "
        f"images, {NUM_CLASSES} classes, batches {' '.join(map(str, args.batches))}, "
        f"{args.warmup} warm-up + {args.steps} timed steps per case, device {device.type}, "
        f"torch threads {torch.get_num_threads()}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """CLI arguments; unset ones take the device's (or ``--quick``'s) defaults in main."""
    p = base_parser(__doc__)
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 64 256)")
    p.add_argument("--steps", type=int, help="timed search steps per case (CUDA 30, CPU 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (CUDA 5, CPU 1)")
    p.add_argument("--image-size", type=int, help="H=W of the synthetic images (CUDA 32, CPU 16)")
    p.add_argument("--channels", type=int, help="supernet init channels C (CUDA 16, CPU 8)")
    p.add_argument("--layers", type=int, help="supernet cells (CUDA 8, CPU 5; at least 3)")
    p.add_argument("--partial-k", type=int, default=4, help="ours: PC-DARTS K (default 4)")
    add_loop_args(p)
    add_threads_arg(p)
    add_quick_out_args(p)
    return p.parse_args(argv)


def fill_defaults(args: argparse.Namespace, device: torch.device) -> str | None:
    """Fill unset arguments; returns an error message for invalid values."""
    defaults = QUICK if args.quick else DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    apply_defaults(args, defaults)
    if min(args.batches) < 1:
        return "must be positive: batches"
    problem = size_problem(args, ("steps", "image_size", "channels", "partial_k"),
                           ("warmup", "workers"))
    if problem:
        return problem
    if args.channels % args.partial_k:
        return f"--channels {args.channels} must be divisible by --partial-k {args.partial_k}"
    return None


def _search_ratios(rows: list[dict[str, Any]]) -> None:
    add_ratios_vs_ref(rows, "steps_per_s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 on bad input, 1 if a case failed)."""
    args = parse_args(argv)
    device = setup_run(args, fill_defaults)
    if device is None:
        return 2
    load_start = loadavg_1m()
    loops = loops_from(args)
    meta0 = {**describe_env(device), "benchmark": "search", "args": vars(args)}
    writer = ResultsWriter("search", meta0, args.out, COLUMNS,
                           derive=_search_ratios)
    rows = writer.rows
    failures: list[str] = []
    for batch in args.batches:
        for loop in loops:
            tag = f"{loop.name} batch={batch}"
            try:
                row = bench_case(loop, batch, args, device)
            except torch.cuda.OutOfMemoryError as err:
                row = {**_case_fields(loop, batch, args, device), "status": "OOM"}
                print(f"OOM {tag}: {str(err).splitlines()[0]}", file=sys.stderr)
            except Exception as err:  # keep going: one broken case must not sink the run
                row = {**_case_fields(loop, batch, args, device), "status": "error"}
                failures.append(f"{tag}: {type(err).__name__}: {err}")
                print(f"FAILED {tag}: {type(err).__name__}: {err}", file=sys.stderr)
            free_device_memory(device)  # DataLoader workers and device memory of the case
            writer.add(row)
            if row["status"] == "ok":
                print(
                    f"{tag}: {row['ms_per_step']:.1f} ms/step, {row['peak_mem_MB']:.1f} MB",
                    file=sys.stderr,
                )
    add_ratios_vs_ref(rows, "steps_per_s")
    methods = pop_mem_methods(rows)
    meta = describe_env(device)
    meta.update(
        benchmark="search",
        args=vars(args),
        space=SPACE,
        loops=[dataclasses.asdict(loop) for loop in loops],
        loadavg_1m_start=load_start,
        mem_method=mem_method_meta(methods),
        failures=failures,
    )
    ours = loops[1]
    mem_how = (
        "whole search step, torch.cuda.max_memory_allocated above the state before it "
        "(weights, optimizer state and an on-device dataset excluded)"
        if device.type == "cuda"
        else "bytes autograd saves in one supernet forward + output "
        "(activations only; parameters, input, gradients and workspaces excluded)"
    )
    notes = [
        _settings_note(args, device),
        "step: SearchJob.step = first-order arch step (Adam on alphas/betas, one val batch) "
        "+ weight step (SGD, grad clip), SSL penalty in both loops",
        f"ours: BatchLoader (uint8 data on {device.type}, batched crop+flip), "
        f"partial_k={ours.partial_k} + edge norm, {ours.dtype(device)}"
        + (" (autocast is CUDA-only)" if device.type != "cuda" else "")
        + f", channels_last={'on' if ours.channels_last else 'off'}",
        f"reference: torchvision DataLoader ({args.workers} workers, PIL crop+flip, ToTensor, "
        "Normalize), batches copied to the device in the loop, fp32, partial_k=1, no edge norm",
        "timing: warm-up steps, then the timed steps as one block (synchronized before and "
        "after, no syncs inside); ms_per_step = block / steps; images_per_s = steps_per_s x "
        "batch (training images; each step also reads a val batch of the same size)",
        f"peak_mem_MB method: {', '.join(methods) or '-'}: {mem_how}",
        "speedup_vs_ref = steps_per_s / reference steps_per_s; mem_ratio_vs_ref = peak / "
        "reference peak; same batch, same run",
    ]
    add_busy_cpu_note(notes, device, meta)
    if failures:
        notes.append(f"FAILED cases: {'; '.join(failures)}")
    writer.finish(meta, notes=notes)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
