"""Training-step benchmark: our retraining loop against a plain reference loop.

It times DARTS_V2 evaluation-network training steps (by default the paper's 36 initial
channels, 20 cells, batch 96 on CUDA) for two loops built in the same run, on the same
device, from the same initial weights:

- ``ours``: the real :meth:`nas.evaluate.train.TrainJob.step` (cross-entropy + 0.4 x auxiliary head,
  drop path, SGD, gradient clipping) fed by :class:`nas.data.BatchLoader` (uint8 dataset on
  the device, batched crop+flip+cutout there), bf16 autocast on CUDA (fp32 on CPU: the
  runtime's autocast is CUDA-only), optionally ``torch.compile`` and channels_last;
- ``reference``: a minimal training loop written out below (:func:`reference_step`) over
  :func:`_pil_loader.torchvision_loader` (DataLoader workers, PIL crop+flip, ``ToTensor``,
  ``Normalize``, cutout), batches copied to the device in the loop, fp32.

It reports ms/step, images/s, peak memory and the ratios ours/reference.

Usage::

    python benchmarks/train.py [--device auto|cpu|cuda] [--batch 96] [--channels 36]
        [--layers 20] [--steps N] [--warmup N] [--image-size 32] [--threads N] [--compile]
        [--channels-last] [--workers N] [--out DIR] [--quick]

Results: ``benchmarks/results/train.json`` and ``train.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    Cycler,
    LoopLabels,
    MemoryResult,
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
from torch import nn

from nas.config import DataConfig, RuntimeConfig
from nas.cost import count_params
from nas.evaluate.train import ModelConfig, TrainConfig, TrainJob, build_model
from nas.runtime import load_splits

GENOTYPE = "DARTS_V2"
NUM_CLASSES = 10
IMAGE_CHANNELS = 3
CUTOUT = 16
MAX_BATCHES = 64  # longer runs cycle through the synthetic set again

# Defaults by device: the paper's network and batch on CUDA; on CPU a smaller network so the
# two loops finish in about a minute (one 36-channel, 20-cell step at batch 96 takes ~30 s
# on one CPU core). The exact settings are the first note above the table.
DEFAULTS = {
    "cuda": {"batch": 96, "channels": 36, "layers": 20, "image_size": 32, "steps": 50,
             "warmup": 10},
    "cpu": {"batch": 32, "channels": 16, "layers": 8, "image_size": 32, "steps": 5,
            "warmup": 1},
}
QUICK = {"batch": 4, "channels": 4, "layers": 3, "image_size": 8, "steps": 1, "warmup": 0}

COLUMNS = (
    "loop",
    "batch",
    "device",
    "dtype",
    "loader",
    "channels_last",
    "compile",
    "steps",
    "ms_per_step",
    "images_per_s",
    "speedup_vs_ref",
    "peak_mem_MB",
    "mem_ratio_vs_ref",
    "status",
)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Loop(LoopLabels):
    """One side of the comparison."""

    name: str
    loader: str  # "batchloader" | "torchvision"
    amp: bool
    channels_last: bool
    compile: bool


#: ``--variants`` names: (channels_last, compile) of each variant of our loop
VARIANTS = {
    "plain": (False, False),
    "channels_last": (True, False),
    "compile": (False, True),
    "channels_last+compile": (True, True),
}


def loops_from(args: argparse.Namespace) -> list[Loop]:
    """Reference first (as in ops.py and search.py), then ours: one loop, or one per
    ``--variants`` name, measured one after another in the same run."""
    reference = Loop("reference", "torchvision", False, False, False)
    if not args.variants:
        return [reference, Loop("ours", "batchloader", True, args.channels_last, args.compile)]
    return [reference] + [
        Loop(f"ours[{name}]", "batchloader", True, *VARIANTS[name]) for name in args.variants
    ]


def train_config(args: argparse.Namespace, device: torch.device, loop: Loop) -> TrainConfig:
    """The retraining config both loops share (ours runs it; the reference reads its recipe)."""
    batches = min(args.warmup + args.steps + 2, MAX_BATCHES)
    data = DataConfig(
        name="synthetic",
        download=False,
        batch_size=args.batch,
        eval_batch_size=args.batch,
        augment=True,
        cutout=CUTOUT,
        test_limit=args.batch,  # TrainJob builds a test loader too; keep it small
        options={
            "num_samples": args.batch * batches,  # whole batches only: no odd-sized last one
            "image_size": args.image_size,
            "channels": IMAGE_CHANNELS,
            "num_classes": NUM_CLASSES,
        },
    )
    return TrainConfig(
        name=f"bench-train-{loop.name}",
        data=data,
        model=ModelConfig(genotype=GENOTYPE, init_channels=args.channels, layers=args.layers),
        runtime=RuntimeConfig(
            device=str(device),
            amp=loop.amp,
            channels_last=loop.channels_last,
            compile=loop.compile,
            progress=False,
        ),
    )


class OursLoop:
    """The project's loop: ``TrainJob.step`` over its device-resident ``BatchLoader``."""

    def __init__(self, cfg: TrainConfig, init_state: dict[str, torch.Tensor]) -> None:
        self.job = TrainJob(cfg)
        self.job.model.load_state_dict(init_state)  # the reference's initial weights
        self.job.start_epoch(0)
        # start_epoch ramps drop path from 0; use the recipe's value so the op really runs.
        self.job.model.drop_path_prob = cfg.model.drop_path
        self.model = self.job.model
        self._batches = Cycler(self.job.batches)

    def next_batch(self) -> Batch:
        return self._batches()

    def step(self, batch: Batch) -> torch.Tensor:
        return self.job.step(batch)[0]


def reference_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    aux_weight: float,
    grad_clip: float,
) -> torch.Tensor:
    """One plain fp32 training step, as a conventional DARTS training script writes it."""
    non_blocking = device.type == "cuda"  # the DataLoader pins its batches on CUDA
    x = x.to(device, non_blocking=non_blocking)
    y = y.to(device, non_blocking=non_blocking)
    optimizer.zero_grad(set_to_none=True)
    logits, logits_aux = model(x)
    loss = F.cross_entropy(logits, y) + aux_weight * F.cross_entropy(logits_aux, y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


class ReferenceLoop:
    """A plain loop: torchvision DataLoader (PIL transforms, workers), ``.to(device)`` per
    batch, fp32, SGD with the recipe's hyperparameters, the same network and weights."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        device: torch.device,
        workers: int,
    ) -> None:
        train, _ = load_splits(cfg.data, test=False)
        self.device = device
        self.cfg = cfg
        self.model = model.to(device).train()
        self.model.drop_path_prob = cfg.model.drop_path
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        self.loader = torchvision_loader(
            train,
            cfg.data.batch_size,
            augment=True,
            cutout=cfg.data.cutout,
            num_workers=workers,
            crop_padding=cfg.data.crop_padding,
            flip=cfg.data.flip,
            seed=cfg.runtime.seed,
            pin_memory=device.type == "cuda",
        )
        self._batches = Cycler(lambda: self.loader)

    def next_batch(self) -> Batch:
        return self._batches()

    def step(self, batch: Batch) -> torch.Tensor:
        x, y = batch
        return reference_step(
            self.model,
            self.optimizer,
            x,
            y,
            self.device,
            self.cfg.model.auxiliary_weight,
            self.cfg.optim.grad_clip,
        )


def initial_state(cfg: TrainConfig, in_channels: int) -> tuple[nn.Module, dict[str, Any]]:
    """The reference network built as ``TrainJob`` builds it (seeded), and a CPU copy of its
    initial weights for ours."""
    torch.manual_seed(cfg.runtime.seed)
    model = build_model(cfg, in_channels, NUM_CLASSES)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model, state


def _run(loop_obj: OursLoop | ReferenceLoop, n: int) -> torch.Tensor | None:
    loss = None
    for _ in range(n):
        loss = loop_obj.step(loop_obj.next_batch())
    return loss


def step_memory(loop_obj: OursLoop | ReferenceLoop, device: torch.device) -> MemoryResult:
    """Peak memory of one whole training step of the loop.

    CUDA: ``max_memory_allocated`` above what was allocated before it (weights, optimizer
    state and an on-device dataset excluded; the batch, activations, gradients, workspaces
    counted). CPU: bytes autograd saves during the step's forward pass, plus the loss
    (parameters and the input batch excluded).
    """
    if device.type == "cuda":
        return peak_memory(lambda: loop_obj.step(loop_obj.next_batch()), lambda _l: None, device)
    batch = loop_obj.next_batch()
    exclude = [*loop_obj.model.parameters(), *loop_obj.model.buffers(), batch[0]]
    return peak_memory(lambda: loop_obj.step(batch), lambda _l: None, device, exclude=exclude)


def _measure(
    loop_obj: OursLoop | ReferenceLoop, args: argparse.Namespace, device: torch.device
) -> tuple[float, float, MemoryResult]:
    """Warm-up steps, the timed block (ms per step), the last loss (one sync, after timing),
    memory."""
    ms, last = time_steps(lambda n: _run(loop_obj, n), args.warmup, args.steps, device)
    loss = float(last.detach()) if last is not None else math.nan
    if not math.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss} after the timed steps")
    return ms, loss, step_memory(loop_obj, device)


def bench_case(
    loop: Loop, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Build the loop, warm up, time ``args.steps`` steps as one block, then measure memory."""
    cfg = train_config(args, device, loop)
    model, state = initial_state(cfg, IMAGE_CHANNELS)
    if loop.name == "reference":
        loop_obj: OursLoop | ReferenceLoop = ReferenceLoop(cfg, model, device, args.workers)
    else:
        del model
        loop_obj = OursLoop(cfg, state)
    ms, loss, mem = _measure(loop_obj, args, device)
    params = count_params(loop_obj.model)
    return {
        **_case_fields(loop, args, device),
        **step_fields(ms, args.batch, mem),
        "_params": params,
        "_loss": round(loss, 4),
    }


def _case_fields(loop: Loop, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "loop": loop.name,
        "batch": args.batch,
        "device": device.type,
        "dtype": loop.dtype(device),
        "loader": loop.loader_label(args.workers),
        "channels_last": loop.channels_last,
        "compile": loop.compile,
        "steps": args.steps,
        "ms_per_step": None,
        "images_per_s": None,
        "speedup_vs_ref": None,
        "peak_mem_MB": None,
        "mem_ratio_vs_ref": None,
    }


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return "out of memory" in str(err).lower()  # e.g. wrapped by torch.compile


def _settings_note(args: argparse.Namespace, device: torch.device) -> str:
    return (
        f"settings: {GENOTYPE} NetworkCIFAR, C={args.channels}, {args.layers} cells, "
        f"auxiliary head, drop path {ModelConfig().drop_path}, synthetic {IMAGE_CHANNELS}x"
        f"{args.image_size}x{args.image_size} images, {NUM_CLASSES} classes, crop (pad 4) + "
        f"flip + cutout {CUTOUT}, batch {args.batch}, {args.warmup} warm-up + {args.steps} "
        f"timed steps per loop, device {device.type}, torch threads {torch.get_num_threads()}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """CLI arguments; unset ones take the device's (or ``--quick``'s) defaults in main."""
    p = base_parser(__doc__)
    p.add_argument("--batch", type=int, help="batch size (CUDA 96, CPU 32)")
    p.add_argument("--channels", type=int, help="initial channels C (CUDA 36, CPU 16)")
    p.add_argument("--layers", type=int, help="cells (CUDA 20, CPU 8; at least 3)")
    p.add_argument("--steps", type=int, help="timed training steps per loop (CUDA 50, CPU 5)")
    p.add_argument("--warmup", type=int, help="untimed steps first (CUDA 10, CPU 1)")
    p.add_argument("--image-size", type=int, help="H=W of the synthetic images (32)")
    add_threads_arg(p)
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the network")
    add_loop_args(p)
    p.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=None,
        help="time several settings of ours in one run (replaces --compile/--channels-last)",
    )
    add_quick_out_args(p)
    return p.parse_args(argv)


def fill_defaults(args: argparse.Namespace, device: torch.device) -> str | None:
    """Fill unset arguments; returns an error message for invalid values."""
    defaults = QUICK if args.quick else DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    apply_defaults(args, defaults)
    problem = size_problem(args, ("batch", "channels", "steps", "image_size"),
                           ("warmup", "workers"))
    if problem:
        return problem
    if args.variants and (args.compile or args.channels_last):
        return "--variants replaces --compile and --channels-last: give one or the other"
    return None


def _train_ratios(rows: list[dict[str, Any]]) -> None:
    add_ratios_vs_ref(rows, "images_per_s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 on bad input, 1 if a loop failed)."""
    args = parse_args(argv)
    device = setup_run(args, fill_defaults)
    if device is None:
        return 2
    load_start = loadavg_1m()
    loops = loops_from(args)
    meta0 = {**describe_env(device), "benchmark": "train", "args": vars(args)}
    writer = ResultsWriter("train", meta0, args.out, COLUMNS,
                           derive=_train_ratios)
    rows = writer.rows
    failures: list[str] = []
    for loop in loops:
        try:
            row = bench_case(loop, args, device)
        except Exception as err:  # keep going: one broken loop must not sink the run
            oom = device.type == "cuda" and _is_oom(err)
            row = {**_case_fields(loop, args, device), "status": "OOM" if oom else "error"}
            if not oom:
                failures.append(f"{loop.name}: {type(err).__name__}: {err}")
            what = "OOM" if oom else "FAILED"
            print(f"{what} {loop.name}: {type(err).__name__}: {str(err).splitlines()[0]}",
                  file=sys.stderr)
        free_device_memory(device)  # DataLoader workers and device memory of the loop
        writer.add(row)
        if row["status"] == "ok":
            print(f"{loop.name}: {row['ms_per_step']:.1f} ms/step, "
                  f"{row['images_per_s']:.1f} images/s, {row['peak_mem_MB']:.1f} MB",
                  file=sys.stderr)
    add_ratios_vs_ref(rows, "images_per_s")
    methods = pop_mem_methods(rows)
    params = {r["loop"]: r.pop("_params") for r in rows if "_params" in r}
    losses = {r["loop"]: r.pop("_loss") for r in rows if "_loss" in r}
    meta = describe_env(device)
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    recipe = train_config(args, device, loops[1])
    meta.update(
        benchmark="train",
        args=vars(args),
        genotype=GENOTYPE,
        loops=[dataclasses.asdict(loop) for loop in loops],
        params=params,
        last_loss=losses,
        cudnn_allow_tf32=tf32,
        loadavg_1m_start=load_start,
        mem_method=mem_method_meta(methods),
        failures=failures,
    )
    ours = loops[1]
    mem_how = (
        "one whole training step, torch.cuda.max_memory_allocated above the state before it "
        "(weights, optimizer state and an on-device dataset excluded)"
        if device.type == "cuda"
        else "bytes autograd saves in one training step's forward + the loss "
        "(activations only; parameters, buffers, input, gradients and workspaces excluded)"
    )
    notes = [
        _settings_note(args, device),
        f"both loops: same network and initial weights, loss = CE + "
        f"{recipe.model.auxiliary_weight} x CE(aux), SGD (lr {recipe.optim.lr}, momentum "
        f"{recipe.optim.momentum}, wd {recipe.optim.weight_decay}), grad clip "
        f"{recipe.optim.grad_clip}",
        f"ours: TrainJob.step + BatchLoader (uint8 data on {device.type}, batched "
        f"crop+flip+cutout), {ours.dtype(device)}"
        + (" (autocast is CUDA-only)" if device.type != "cuda" else "")
        + f", channels_last={'on' if ours.channels_last else 'off'}"
        + f", torch.compile={'on' if ours.compile else 'off'}",
        f"reference: plain loop, torchvision DataLoader ({args.workers} workers, PIL "
        "crop+flip, ToTensor, Normalize, cutout), batches copied to the device in the loop"
        + (" (pinned, non_blocking)" if device.type == "cuda" else "")
        + ", fp32"
        + (f" (cuDNN TF32 convolutions {'on' if tf32 else 'off'}, torch's default)"
           if device.type == "cuda" else ""),
        "timing: warm-up steps, then the timed steps as one block (synchronized before and "
        "after, no syncs inside); ms_per_step = block / steps, data loading included; "
        "images_per_s = batch x 1000 / ms_per_step",
        f"peak_mem_MB method: {', '.join(methods) or '-'}: {mem_how}",
        "speedup_vs_ref = images_per_s / reference images_per_s; mem_ratio_vs_ref = peak / "
        "reference peak; same run",
    ]
    if device.type == "cpu":
        notes.append("on CPU both loops run fp32 on the same network, so memory ratios near "
                     "1 are expected; the CUDA table is the one that shows bf16's effect")
    if len(loops) > 2:
        notes[2] += "; variants: " + ", ".join(
            f"{loop.name} (channels_last {loop.channels_last}, compile {loop.compile})"
            for loop in loops[1:])
    if any(loop.compile for loop in loops) and args.warmup < 1:
        notes.append("torch.compile with no warm-up step: compilation is inside the timed block")
        print(f"warning: {notes[-1]}", file=sys.stderr)
    add_busy_cpu_note(notes, device, meta)
    if failures:
        notes.append(f"FAILED loops: {'; '.join(failures)}")
    writer.finish(meta, notes=notes)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
