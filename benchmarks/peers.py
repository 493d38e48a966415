"""Peers benchmark: our search steps against the official DARTS and PC-DARTS code, side by side.

Imports the official search code from checkouts the user supplies (never copied into this
repository): DARTS (github.com/quark0/darts, its ``cnn/`` folder) and PC-DARTS
(github.com/yuhuixu1993/PC-DARTS). Each case builds the official ``Network`` + ``Architect``
and our real :class:`nas.search.darts.SearchJob` at identical shapes and hyper-parameters and
times their steps interleaved: every round times a block of steps of one side, then of the
other (the order alternating between rounds), so load that drifts during the run hits both.

Cases (each needs the checkout it names):

- ``darts-weight``: the weight step alone (forward, loss, backward, grad clip, SGD);
- ``darts-first`` / ``darts-second``: a whole search step, first / second order (DARTS's
  ``architect.step`` with ``unrolled=False/True``, then the weight step);
- ``pcdarts-first``: official PC-DARTS (8 ops, K=4, edge normalization) against ours in the
  same 8-op ``darts`` space with K=4 + edge normalization;
- ``pcdarts-full13``: the same official PC-DARTS step against ours over the 13-op ``full``
  space with K=4 + edge normalization (the issue's target pair).

Both sides get the same pre-made batches (a train batch and a val batch on the device), so
data loading is outside the comparison. The official code calls ``.cuda()`` and old tensor
overloads (``sub(alpha, other)``); on CPU the harness redirects ``.cuda()`` to the CPU while
the official code runs (a monkeypatch that is undone after each call) and nothing else.

Usage::

    python benchmarks/peers.py --darts-dir PATH/darts --pcdarts-dir PATH/PC-DARTS
        [--device auto|cpu|cuda] [--cases ...] [--batch B] [--channels C] [--layers L]
        [--image-size S] [--rounds R] [--steps N] [--warmup N] [--threads N] [--amp]
        [--compile] [--out DIR] [--quick]

Results: ``benchmarks/results/peers.json`` and ``peers.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    ResultsWriter,
    add_busy_cpu_note,
    add_quick_out_args,
    add_threads_arg,
    apply_defaults,
    base_parser,
    describe_env,
    free_device_memory,
    loadavg_1m,
    peak_memory,
    setup_run,
    size_problem,
    synchronize,
)
from fused import Case, build_job
from torch import nn

NUM_CLASSES = 10
IMAGE_CHANNELS = 3  # the official Network's stem takes 3 channels
PEER_MODULES = ("operations", "genotypes", "model_search", "architect", "utils")


@dataclasses.dataclass(frozen=True)
class PeerCase:
    """One side-by-side pair: an official step and ours at the same shapes."""

    name: str
    peer: str  # "darts" or "pcdarts"
    space: str  # ours
    partial_k: int  # ours (the official PC-DARTS fixes K=4)
    edge_norm: bool  # ours
    order: str  # "weight", "first" or "second"


CASES = {
    c.name: c
    for c in (
        PeerCase("darts-weight", "darts", "darts", 1, False, "weight"),
        PeerCase("darts-first", "darts", "darts", 1, False, "first"),
        PeerCase("darts-second", "darts", "darts", 1, False, "second"),
        PeerCase("pcdarts-first", "pcdarts", "darts", 4, True, "first"),
        PeerCase("pcdarts-full13", "pcdarts", "full", 4, True, "first"),
    )
}

DEFAULTS = {
    # CUDA: the GPU target (batch 64, C=16, 8 cells, 32x32 as in the search recipe).
    "cuda": {"batch": 64, "image_size": 32, "channels": 16, "layers": 8, "rounds": 5,
             "steps": 10, "warmup": 3},
    # CPU: the shapes of the first measurement (batch 16, C=16, 8 cells, 32x32).
    "cpu": {"batch": 16, "image_size": 32, "channels": 16, "layers": 8, "rounds": 5,
            "steps": 2, "warmup": 1},
}
QUICK = {"batch": 4, "image_size": 8, "channels": 4, "layers": 3, "rounds": 2, "steps": 1,
         "warmup": 0}

COLUMNS = (
    "case",
    "peer",
    "ours_space",
    "ours_k",
    "order",
    "batch",
    "device",
    "ours_dtype",
    "peer_threads",
    "ours_threads",
    "rounds",
    "peer_ms",
    "ours_ms",
    "peer_images_per_s",
    "ours_images_per_s",
    "speedup",
    "speedup_min",
    "speedup_max",
    "peer_mem_MB",
    "ours_mem_MB",
    "mem_ratio",
    "status",
)
MEASURED = COLUMNS[COLUMNS.index("peer_ms") : COLUMNS.index("status")]


# --- the official code ------------------------------------------------------------------------


def peer_root(path: str | Path, kind: str) -> Path:
    """The folder holding the official search code (DARTS keeps it in ``cnn/``)."""
    root = Path(path).expanduser()
    if kind == "darts" and (root / "cnn" / "model_search.py").is_file():
        root = root / "cnn"
    missing = [f for f in ("model_search.py", "architect.py", "operations.py", "genotypes.py")
               if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--{kind}-dir {path}: no {missing[0]} (expected the official "
                                f"{'quark0/darts' if kind == 'darts' else 'PC-DARTS'} checkout)")
    return root


def load_peer(path: str | Path, kind: str) -> SimpleNamespace:
    """Import ``model_search`` and ``architect`` from a checkout.

    Both official repositories use the same module names, so each import runs with its own
    folder first on ``sys.path`` and its modules are removed from ``sys.modules`` afterwards.
    """
    root = peer_root(path, kind)
    saved = {n: sys.modules.pop(n) for n in PEER_MODULES if n in sys.modules}
    sys.path.insert(0, str(root))
    try:
        with on_device(torch.device("cpu")):
            model_search = importlib.import_module("model_search")
            architect = importlib.import_module("architect")
    finally:
        sys.path.remove(str(root))
        for n in PEER_MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
    return SimpleNamespace(
        kind=kind,
        root=root,
        Network=model_search.Network,
        Architect=architect.Architect,
        primitives=list(model_search.PRIMITIVES),
    )


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Run the official code's ``.cuda()`` calls on ``device`` (a no-op patch on CUDA)."""
    if device.type == "cuda":
        yield
        return
    tensor_cuda, module_cuda = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self.to(device)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = tensor_cuda, module_cuda  # type: ignore[method-assign]


class PeerLoop:
    """The official ``train_search.py`` loop body: architect step, then the weight step."""

    def __init__(self, peer: SimpleNamespace, case: PeerCase, args, job, device) -> None:
        cfg = job.cfg
        self.device = device
        self.order = case.order
        self.criterion = nn.CrossEntropyLoss()
        torch.manual_seed(0)
        with on_device(device):
            self.model = peer.Network(args.channels, NUM_CLASSES, args.layers,
                                      self.criterion).to(device)
            hparams = SimpleNamespace(
                momentum=cfg.optim.momentum,
                weight_decay=cfg.optim.weight_decay,
                arch_learning_rate=cfg.arch.lr,
                arch_weight_decay=cfg.arch.weight_decay,
            )
            self.architect = peer.Architect(self.model, hparams)
        self.lr = cfg.optim.lr
        self.grad_clip = cfg.optim.grad_clip
        self.optimizer = torch.optim.SGD(self.model.parameters(), self.lr,
                                         momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)
        self.model.train()

    def step(self, train, val) -> torch.Tensor:
        x, y = train
        with on_device(self.device):
            if self.order != "weight":
                self.architect.step(x, y, val[0], val[1], self.lr, self.optimizer,
                                    unrolled=self.order == "second")
        self.optimizer.zero_grad()
        loss = self.criterion(self.model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def activation_memory(self, x, y):
        return peak_memory(lambda: self.criterion(self.model(x), y),
                           lambda loss: loss.backward(), self.device,
                           exclude=[*self.model.parameters(), x])


class OurLoop:
    """Our real ``SearchJob.step`` on the same batches (its val loader bypassed)."""

    def __init__(self, case: PeerCase, args, device, run_dir: str) -> None:
        order = "first" if case.order == "weight" else case.order
        job_case = Case(case.name, case.space, case.partial_k, case.edge_norm, order)
        job_args = argparse.Namespace(**{**vars(args), "channels_last": args.channels_last})
        torch.manual_seed(0)
        self.job = build_job(job_case, "fused+compile" if args.compile else "fused",
                             job_args, device, run_dir)
        if args.amp and device.type == "cuda":
            rt = dataclasses.replace(self.job.cfg.runtime, amp=True)
            self.job.cfg = dataclasses.replace(self.job.cfg, runtime=rt)
        if case.order == "weight":  # epoch 0 < warmup_epochs: SearchJob skips the arch step
            arch = dataclasses.replace(self.job.cfg.arch, warmup_epochs=1)
            self.job.cfg = dataclasses.replace(self.job.cfg, arch=arch)
        self.job.start_epoch(0)
        self.device = device
        self._val = None
        self.job._next_val = lambda: self._val  # the same val batch the official step gets

    def step(self, train, val) -> torch.Tensor:
        self._val = val
        return self.job.step(train)[0].detach()

    def activation_memory(self, x, y):
        model = self.job.model
        weights = model.weight_parameters()

        def backward(loss):
            loss.backward(inputs=weights)

        return peak_memory(lambda: F.cross_entropy(model(x).float(), y), backward,
                           self.device, exclude=[*model.parameters(), x])


# --- timing -------------------------------------------------------------------------------------


def make_batches(args, device) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """A train and a val batch, normalized-image-like, on the device."""
    g = torch.Generator().manual_seed(1)
    shape = (args.batch, IMAGE_CHANNELS, args.image_size, args.image_size)
    out = []
    for _ in range(2):
        x = torch.randn(shape, generator=g).to(device)
        y = torch.randint(0, NUM_CLASSES, (args.batch,), generator=g).to(device)
        out.append((x, y))
    return tuple(out)


def time_block(step: Callable[[], torch.Tensor], n: int, device) -> tuple[float, int]:
    """ms per step of ``n`` steps run as one block, synchronized before and after, and the
    torch threads the block ran on (read inside it, after the steps)."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        last = step()
    threads = torch.get_num_threads()
    synchronize(device)
    ms = (time.perf_counter() - t0) * 1e3 / n
    if not torch.isfinite(last).item():
        raise FloatingPointError("loss is not finite")
    return ms, threads


def interleaved(
    sides: dict[str, Callable[[], torch.Tensor]], args, device
) -> tuple[dict[str, list[float]], dict[str, set[int]]]:
    """Warm both sides up, then ``args.rounds`` rounds of one block per side, the order
    alternating between rounds. Before every block torch is set to ``args.threads`` (the
    count both sides are held at: one side's code must not leave the other on its own
    choice). Returns the ms per step of every round and the threads seen, per side."""
    names = list(sides)
    for name in names:
        for _ in range(args.warmup):
            sides[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    threads: dict[str, set[int]] = {n: set() for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            ms, used = time_block(sides[name], args.steps, device)
            times[name].append(ms)
            threads[name].add(used)
    return times, threads


def _threads_label(seen: set[int]) -> int | str:
    """One count, or ``min-max`` when a side ran on several (it should not)."""
    return next(iter(seen)) if len(seen) == 1 else f"{min(seen)}-{max(seen)}"


def whole_step_memory(step: Callable[[], torch.Tensor], device):
    """CUDA: peak allocated during one whole step above what was allocated before it."""
    return peak_memory(lambda: step(), lambda _: None, device)


def bench_case(case: PeerCase, peer: SimpleNamespace, args, device) -> dict[str, Any]:
    train, val = make_batches(args, device)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as run_dir:
        ours = OurLoop(case, args, device, run_dir)
        theirs = PeerLoop(peer, case, args, ours.job, device)
        sides = {"peer": lambda: theirs.step(train, val), "ours": lambda: ours.step(train, val)}
        times, threads = interleaved(sides, args, device)
        if device.type == "cuda":
            mems = {n: whole_step_memory(fn, device) for n, fn in sides.items()}
        else:
            mems = {"peer": theirs.activation_memory(*train),
                    "ours": ours.activation_memory(*train)}
    ratios = [p / o for p, o in zip(times["peer"], times["ours"])]
    peer_ms, ours_ms = statistics.median(times["peer"]), statistics.median(times["ours"])
    return {
        **_fields(case, args, device),
        "peer_threads": _threads_label(threads["peer"]),
        "ours_threads": _threads_label(threads["ours"]),
        "peer_ms": round(peer_ms, 2),
        "ours_ms": round(ours_ms, 2),
        "peer_images_per_s": round(args.batch * 1e3 / peer_ms, 2),
        "ours_images_per_s": round(args.batch * 1e3 / ours_ms, 2),
        "speedup": round(statistics.median(ratios), 3),
        "speedup_min": round(min(ratios), 3),
        "speedup_max": round(max(ratios), 3),
        "peer_mem_MB": round(mems["peer"].mb, 3),
        "ours_mem_MB": round(mems["ours"].mb, 3),
        "mem_ratio": round(mems["ours"].bytes / mems["peer"].bytes, 3)
        if mems["peer"].bytes else None,
        "status": "ok",
        "_mem_method": mems["ours"].method,
        "_rounds_ms": times,
    }


def _fields(case: PeerCase, args, device) -> dict[str, Any]:
    amp = args.amp and device.type == "cuda"
    return {
        "case": case.name,
        "peer": "DARTS" if case.peer == "darts" else "PC-DARTS",
        "ours_space": case.space,
        "ours_k": case.partial_k,
        "order": case.order,
        "batch": args.batch,
        "device": device.type,
        "ours_dtype": ("bf16-autocast" if amp else "fp32") + ("+compile" if args.compile else "")
        + ("+channels_last" if args.channels_last else ""),
        "peer_threads": None,
        "ours_threads": None,
        "rounds": args.rounds,
        **{k: None for k in MEASURED},
    }


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.add_argument("--darts-dir", help="checkout of github.com/quark0/darts (or its cnn/)")
    p.add_argument("--pcdarts-dir", help="checkout of github.com/yuhuixu1993/PC-DARTS")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES),
                   help="default: every case whose checkout is given")
    p.add_argument("--batch", type=int, help="batch size (CUDA 64, CPU 16)")
    p.add_argument("--image-size", type=int, help="H=W of the random images (32)")
    p.add_argument("--channels", type=int, help="init channels C (16; divisible by 4)")
    p.add_argument("--layers", type=int, help="cells (8; at least 3)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per case (5)")
    p.add_argument("--steps", type=int, help="steps per side per round (CUDA 10, CPU 2)")
    p.add_argument("--warmup", type=int, help="untimed steps per side first (CUDA 3, CPU 1)")
    p.add_argument("--amp", action="store_true", help="ours: bf16 autocast (CUDA only)")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the supernet")
    p.add_argument("--channels-last", action="store_true",
                   help="ours: channels_last supernet (runtime.channels_last); the batches "
                   "both sides get stay NCHW-contiguous")
    add_threads_arg(p)
    add_quick_out_args(p)
    return p.parse_args(argv)


def check_args(args: argparse.Namespace, device: torch.device) -> str | None:
    apply_defaults(args, QUICK if args.quick else DEFAULTS[device.type])
    given = {"darts": args.darts_dir, "pcdarts": args.pcdarts_dir}
    if not any(given.values()):
        return "give --darts-dir and/or --pcdarts-dir (checkouts of the official code)"
    if args.cases is None:
        args.cases = [n for n, c in CASES.items() if given[c.peer]]
    lacking = [n for n in args.cases if not given[CASES[n].peer]]
    if lacking:
        return f"case {lacking[0]} needs --{CASES[lacking[0]].peer}-dir"
    problem = size_problem(args, ("batch", "image_size", "channels", "rounds", "steps"))
    if problem:
        return problem
    if args.channels % 4:
        return f"--channels must be divisible by 4 (PC-DARTS K=4), got {args.channels}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 2 on bad input, 1 if a case failed."""
    args = parse_args(argv)
    device = setup_run(args, check_args)  # device, arguments, threads, cuDNN autotuning
    if device is None:
        return 2
    if args.threads is None:  # hold both sides at torch's count, not each at its own choice
        args.threads = torch.get_num_threads()
    try:
        peers = {k: load_peer(d, k) for k, d in
                 (("darts", args.darts_dir), ("pcdarts", args.pcdarts_dir)) if d}
    except (FileNotFoundError, ImportError, SyntaxError) as err:
        problem = f"{type(err).__name__}: {err}" if isinstance(err, ImportError) else str(err)
        print(f"error: {problem}", file=sys.stderr)
        return 2
    load_start = loadavg_1m()
    meta0 = {**describe_env(device), "benchmark": "peers", "args": vars(args)}
    writer = ResultsWriter("peers", meta0, args.out, COLUMNS)
    rows, failures = writer.rows, []
    for name in args.cases:
        case = CASES[name]
        try:
            row = bench_case(case, peers[case.peer], args, device)
            print(f"{name}: peer {row['peer_ms']:.1f} ms, ours {row['ours_ms']:.1f} ms, "
                  f"speedup {row['speedup']:.2f}x", file=sys.stderr)
        except Exception as err:  # one broken case must not sink the run
            row = {**_fields(case, args, device), "status": "error"}
            failures.append(f"{name}: {type(err).__name__}: {err}")
            print(f"FAILED {name}: {type(err).__name__}: {err}", file=sys.stderr)
        free_device_memory(device)
        writer.add(row)
    methods = sorted({r.pop("_mem_method") for r in rows if "_mem_method" in r})
    rounds = {r["case"]: r.pop("_rounds_ms") for r in rows if "_rounds_ms" in r}
    meta = describe_env(device)
    meta.update(
        benchmark="peers",
        args=vars(args),
        peers={k: str(p.root) for k, p in peers.items()},
        loadavg_1m_start=load_start,
        mem_method=methods[0] if len(methods) == 1 else methods,
        rounds_ms=rounds,
        failures=failures,
    )
    mem_what = ("one whole step (arch + weight), cuda_max_memory_allocated above the weights"
                if device.type == "cuda" else
                "saved_tensors_hooks: activations one supernet forward keeps for backward")
    notes = [
        f"settings: C={args.channels}, {args.layers} cells, {IMAGE_CHANNELS}x{args.image_size}"
        f"x{args.image_size} random images, {NUM_CLASSES} classes, batch {args.batch} (train) "
        f"+ {args.batch} (val), same batches on both sides; {args.rounds} interleaved rounds of "
        f"{args.steps} steps per side after {args.warmup} warm-up steps; torch threads held at "
        f"{args.threads} on both sides (ours via runtime.threads, reset before every timed "
        "block; peer_threads/ours_threads: torch.get_num_threads() inside the blocks)",
        "hyper-parameters (both sides): SGD lr 0.025, momentum 0.9, wd 3e-4, grad clip 5; "
        "Adam on alphas lr 3e-4, betas (0.5, 0.999), wd 1e-3",
        "peer = official code (DARTS cnn/ or PC-DARTS); ours = SearchJob.step, fused "
        "supernet; speedup = peer ms / ours ms per round, median (min, max over rounds)",
        f"memory: {mem_what}",
    ]
    add_busy_cpu_note(notes, device, meta, included="this run included")
    if failures:
        notes.append(f"FAILED cases: {'; '.join(failures)}")
    writer.finish(meta, notes=notes)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
