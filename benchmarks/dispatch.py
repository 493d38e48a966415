"""Dispatch benchmark: how many ATen ops (and host syncs) one whole training step issues.

On a GPU a small-batch search step runs at the speed it launches kernels, so the number of
non-view ATen ops a step dispatches is its cost floor. This script counts them for one whole
step, forward, backward and optimizer, with a ``TorchDispatchMode`` (ops whose schema is a
view, ``func.is_view``, are left out: they launch nothing), and separately the ops that make
the host wait for the device (``.item()``, ``nonzero``, boolean indexing, ...).

Cases (ours; the shipped GPU configs' shapes by default, C=16, 8 cells):

- ``full-k4-edgenorm``: :meth:`nas.search.darts.SearchJob.step` over the 13-op ``full``
  space with partial channels K=4 and edge normalization (the PC-DARTS config);
- ``darts-k1``: the same over the 8-op ``darts`` space, K=1 (the DARTS config);
- ``darts-v2-train``: :meth:`nas.evaluate.train.TrainJob.step` of DARTS_V2 retraining (C=36,
  20 cells, auxiliary head, drop path 0.2);
- with ``--second``: the two search cases in second order too.

Beside them, when the checkouts are given (as ``benchmarks/peers.py`` takes them), the
official steps at the same shapes: PC-DARTS (8 ops, K=4, edge normalization) and DARTS
(first order; second order with ``--second``).

The step counted is the second one (the first builds lazy state: optimizer buffers, cached
plans). Counts do not depend on the batch size or the image size's value beyond the
network's structure, nor on the machine's speed, but they do depend on the device type: a
few CPU-only code paths (``nas/search/supernet/fused_conv.py``) dispatch other ops than CUDA would.

Usage::

    python benchmarks/dispatch.py [--device auto|cpu|cuda] [--cases ...] [--second]
        [--darts-dir PATH/darts] [--pcdarts-dir PATH/PC-DARTS] [--batch B]
        [--image-size S] [--channels C] [--layers L] [--train-channels C]
        [--train-layers L] [--threads N] [--out DIR] [--quick]

Results: ``benchmarks/results/dispatch.json`` (with each row's most frequent ops) and
``dispatch.md``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from _common import (
    add_quick_out_args,
    add_threads_arg,
    apply_defaults,
    base_parser,
    describe_env,
    free_device_memory,
    setup_run,
    size_problem,
    write_results,
)
from fused import Case, build_job
from torch.utils._python_dispatch import TorchDispatchMode

from nas.config import DataConfig, RuntimeConfig
from nas.evaluate.train import ModelConfig, TrainConfig, TrainJob

IMAGE_CHANNELS = 3
NUM_CLASSES = 10

_aten = torch.ops.aten
#: ops that read a value or a data-dependent size back to the host (a sync on CUDA)
SYNC_OPS = frozenset({
    _aten._local_scalar_dense.default,
    _aten.item.default,
    _aten.is_nonzero.default,
    _aten.equal.default,
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten.unique_consecutive.default,
    _aten._unique2.default,
})  # fmt: skip
#: ops that sync only with a boolean (mask) index
_INDEX_OPS = frozenset({
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
})  # fmt: skip


def is_host_sync(func, args: tuple[Any, ...], ignore: set[int] = frozenset()) -> bool:
    """Whether the aten call ``func(*args)`` makes the host wait for the device: one of
    :data:`SYNC_OPS` (unless it reads a tensor whose ``data_ptr`` is in ``ignore``), or an
    index op with a boolean mask. The one definition, also used by ``tests/_sync_counter.py``."""
    if func in SYNC_OPS:
        first = args[0] if args else None
        return not (isinstance(first, torch.Tensor) and first.data_ptr() in ignore)
    if func in _INDEX_OPS:
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)
                   for t in (indices or ()))
    return False


class OpCounter(TorchDispatchMode):
    """Counts the non-view ATen ops dispatched inside it, and the host syncs among them.

    ``ignore``: tensors whose reads are no sync on a GPU either (optimizer ``step``
    counters, which torch keeps on the host).
    """

    def __init__(self, ignore: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.by_op: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self._ignore = {t.data_ptr() for t in ignore}

    @property
    def ops(self) -> int:
        return sum(self.by_op.values())

    @property
    def host_syncs(self) -> int:
        return sum(self.syncs.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        if not func.is_view:
            self.by_op[str(func.overloadpacket).removeprefix("aten.")] += 1
            if self._is_sync(func, args):
                self.syncs[str(func)] += 1
        return func(*args, **(kwargs or {}))

    def _is_sync(self, func, args: tuple[Any, ...]) -> bool:
        return is_host_sync(func, args, self._ignore)


def optimizer_steps(*optimizers: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The host-side ``step`` tensors in the optimizers' state."""
    return [s["step"] for opt in optimizers for s in opt.state.values()
            if isinstance(s.get("step"), torch.Tensor)]


def count_step(step: Callable[[], Any], ignore: Iterable[torch.Tensor] = ()) -> OpCounter:
    """The ops and syncs of one call of ``step``."""
    with OpCounter(ignore) as counter:
        step()
    return counter


@dataclasses.dataclass(frozen=True)
class CountCase:
    """One counted step: ours (a search or retraining job) or an official peer's."""

    name: str
    kind: str  # "search", "train", "peer"
    space: str | None = None
    partial_k: int = 1
    edge_norm: bool = False
    order: str = "first"
    peer_case: str | None = None  # benchmarks/peers.py case name
    target: int | None = None  # the target for this step


CASES = {
    c.name: c
    for c in (
        CountCase("full-k4-edgenorm", "search", "full", 4, True, "first", target=15000),
        CountCase("darts-k1", "search", "darts", 1, False, "first", target=9000),
        CountCase("darts-v2-train", "train", target=3000),
        CountCase("full-k4-edgenorm-second", "search", "full", 4, True, "second"),
        CountCase("darts-k1-second", "search", "darts", 1, False, "second"),
        CountCase("official-pcdarts", "peer", "pc-darts-8", 4, True, "first",
                  peer_case="pcdarts-full13"),
        CountCase("official-darts", "peer", "darts-8", 1, False, "first",
                  peer_case="darts-first"),
        CountCase("official-darts-second", "peer", "darts-8", 1, False, "second",
                  peer_case="darts-second"),
    )
}

DEFAULTS = {"batch": 2, "image_size": 32, "channels": 16, "layers": 8, "train_channels": 36,
            "train_layers": 20}
QUICK = {"batch": 2, "image_size": 8, "channels": 8, "layers": 5, "train_channels": 8,
         "train_layers": 5}

COLUMNS = ("case", "side", "step", "space", "partial_k", "edge_norm", "order", "channels",
           "layers", "image_size", "batch", "device", "aten_ops", "host_syncs", "target",
           "within_target", "status")
TOP_OPS = 25


def _job_args(args: argparse.Namespace) -> argparse.Namespace:
    """What ``fused.build_job`` reads: two steps' worth of batches, NCHW (the CUDA default)."""
    return argparse.Namespace(batch=args.batch, warmup=1, steps=1, image_size=args.image_size,
                              channels=args.channels, layers=args.layers,
                              channels_last=False, threads=args.threads)


def search_job(case: CountCase, args: argparse.Namespace, device: torch.device, run_dir: str):
    """Our real ``SearchJob`` for ``case`` on the fused path, synthetic data."""
    torch.manual_seed(0)
    job_case = Case(case.name, case.space, case.partial_k, case.edge_norm, case.order)
    job = build_job(job_case, "fused", _job_args(args), device, run_dir)
    job.start_epoch(0)
    return job


def train_job(args: argparse.Namespace, device: torch.device, run_dir: str) -> TrainJob:
    """Our real DARTS_V2 ``TrainJob`` (auxiliary head, cutout, drop path at 0.2), NCHW."""
    data = DataConfig(
        name="synthetic", download=False, batch_size=args.batch, eval_batch_size=args.batch,
        augment=True, cutout=16, test_limit=args.batch,
        options={"num_samples": 4 * args.batch, "image_size": args.image_size,
                 "channels": IMAGE_CHANNELS, "num_classes": NUM_CLASSES},
    )
    cfg = TrainConfig(
        name="bench-dispatch-train", run_dir=run_dir, data=data,
        model=ModelConfig(genotype="DARTS_V2", init_channels=args.train_channels,
                          layers=args.train_layers),
        runtime=RuntimeConfig(device=str(device), amp=False, channels_last=False,
                              compile=False, progress=False, threads=args.threads),
    )
    torch.manual_seed(0)
    job = TrainJob(cfg)
    job.start_epoch(0)
    job.model.drop_path_prob = cfg.model.drop_path  # the recipe's value, so drop path runs
    return job


def _ours(case: CountCase, args, device, run_dir: str) -> tuple[Callable[[], Any], list]:
    """One step of our job (batches cycled) and the tensors whose reads are no syncs."""
    if case.kind == "train":
        job = train_job(args, device, run_dir)
        opts = [job.optimizer]
    else:
        job = search_job(case, args, device, run_dir)
        opts = [job.w_optimizer, job.architect.optimizer]
    batches = iter(job.batches())

    def step() -> Any:
        return job.step(next(batches))

    step()  # warm-up: optimizer state, lazy plans
    return step, optimizer_steps(*opts)


def _peer(case: CountCase, peers: dict[str, Any], args, device, run_dir: str):
    """One official step (benchmarks/peers.py's loop) at the same shapes and settings."""
    from peers import CASES as PEER_CASES
    from peers import PeerLoop, make_batches

    pcase = PEER_CASES[case.peer_case]
    ours = search_job(CASES["darts-k1"], args, device, run_dir)  # its cfg: hyper-parameters
    peer_args = argparse.Namespace(channels=args.channels, layers=args.layers,
                                   batch=args.batch, image_size=args.image_size)
    loop = PeerLoop(peers[pcase.peer], pcase, peer_args, ours, device)
    train, val = make_batches(peer_args, device)

    def step() -> Any:
        return loop.step(train, val)

    step()
    return step, []


def count_case(case: CountCase, args, device, peers: dict[str, Any]) -> dict[str, Any]:
    """Build the step, warm it up, count the next one."""
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as run_dir:
        make = _peer if case.kind == "peer" else _ours
        extra = (peers,) if case.kind == "peer" else ()
        step, ignore = make(case, *extra, args, device, run_dir)
        counter = count_step(step, ignore)
    row = _fields(case, args, device)
    row.update(
        aten_ops=counter.ops,
        host_syncs=counter.host_syncs,
        within_target=None if case.target is None else counter.ops <= case.target,
        status="ok",
        top_ops=dict(counter.by_op.most_common(TOP_OPS)),
        sync_ops=dict(counter.syncs),
    )
    return row


def _fields(case: CountCase, args, device) -> dict[str, Any]:
    train = case.kind == "train"
    side = {"search": "ours", "train": "ours"}.get(case.kind) or (
        "official PC-DARTS" if "pcdarts" in (case.peer_case or "") else "official DARTS")
    return {
        "case": case.name,
        "side": side,
        "step": "retrain (DARTS_V2)" if train else "search",
        "space": None if train else case.space,
        "partial_k": None if train else case.partial_k,
        "edge_norm": None if train else case.edge_norm,
        "order": None if train else case.order,
        "channels": args.train_channels if train else args.channels,
        "layers": args.train_layers if train else args.layers,
        "image_size": args.image_size,
        "batch": args.batch,
        "device": device.type,
        "aten_ops": None,
        "host_syncs": None,
        "target": case.target,
        "within_target": None,
        "status": None,
    }


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES),
                   help="default: ours (first order; --second adds second order) and the "
                   "official steps whose checkouts are given")
    p.add_argument("--second", action="store_true", help="also count second-order steps")
    p.add_argument("--darts-dir", help="checkout of github.com/quark0/darts (or its cnn/)")
    p.add_argument("--pcdarts-dir", help="checkout of github.com/yuhuixu1993/PC-DARTS")
    p.add_argument("--batch", type=int, help="batch size (2; counts do not depend on it)")
    p.add_argument("--image-size", type=int, help="H=W of the random images (32)")
    p.add_argument("--channels", type=int, help="search: init channels C (16)")
    p.add_argument("--layers", type=int, help="search: cells (8)")
    p.add_argument("--train-channels", type=int, help="retraining: init channels (36)")
    p.add_argument("--train-layers", type=int, help="retraining: cells (20)")
    add_threads_arg(p)
    add_quick_out_args(p, "tiny settings (C=8, 5 cells, 8x8 images): the smoke test")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace, device: torch.device) -> str | None:
    apply_defaults(args, QUICK if args.quick else DEFAULTS)
    given = {"darts": args.darts_dir, "pcdarts": args.pcdarts_dir}
    if args.cases is None:
        args.cases = ["full-k4-edgenorm", "darts-k1", "darts-v2-train"]
        if args.second:
            args.cases += ["full-k4-edgenorm-second", "darts-k1-second"]
        if given["pcdarts"]:
            args.cases.append("official-pcdarts")
        if given["darts"]:
            args.cases += ["official-darts"] + (["official-darts-second"] if args.second else [])
    for name in args.cases:
        pc = CASES[name].peer_case
        if pc is not None and not given["pcdarts" if "pcdarts" in pc else "darts"]:
            return f"case {name} needs --{'pcdarts' if 'pcdarts' in pc else 'darts'}-dir"
    problem = size_problem(args, ("batch", "image_size", "channels", "train_channels"),
                           non_negative=())
    if problem:
        return problem
    if args.layers < 3 or args.train_layers < 3:
        return "--layers and --train-layers must be >= 3"
    if args.channels % 4:
        return f"--channels must be divisible by 4 (K=4), got {args.channels}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Count every case; 2 on bad input, 1 if a case failed."""
    args = parse_args(argv)
    device = setup_run(args, check_args)
    if device is None:
        return 2
    peers: dict[str, Any] = {}
    if any(CASES[n].kind == "peer" for n in args.cases):
        from peers import load_peer

        try:
            peers = {k: load_peer(d, k) for k, d in
                     (("darts", args.darts_dir), ("pcdarts", args.pcdarts_dir)) if d}
        except (FileNotFoundError, ImportError, SyntaxError) as err:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 2
    meta = describe_env(device)
    meta.update(benchmark="dispatch", args=vars(args),
                peers={k: str(p.root) for k, p in peers.items()}, failures=[])
    notes = [
        "aten_ops: non-view ATen ops (TorchDispatchMode, func.is_view excluded) of one whole "
        "step (forward, backward, optimizer), the second step of the job; host_syncs: "
        "_local_scalar_dense/item/nonzero/masked_select/equal/boolean index among them "
        "(optimizer step counters, host-side on a GPU too, excluded)",
        f"search: C={args.channels}, {args.layers} cells; retraining: C={args.train_channels}, "
        f"{args.train_layers} cells, auxiliary, drop path 0.2; {args.image_size}x"
        f"{args.image_size} images, batch {args.batch} (the counts do not depend on it)",
        f"device {device.type}: CPU-only code paths (fused_conv) make CPU counts differ "
        "somewhat from CUDA's",
    ]
    rows: list[dict[str, Any]] = []
    for name in args.cases:
        case = CASES[name]
        try:
            row = count_case(case, args, device, peers)
            print(f"{name}: {row['aten_ops']} ops, {row['host_syncs']} host syncs",
                  file=sys.stderr)
        except Exception as err:  # one broken case must not sink the run
            row = {**_fields(case, args, device), "status": "error"}
            meta["failures"].append(f"{name}: {type(err).__name__}: {err}")
            print(f"FAILED {name}: {type(err).__name__}: {err}", file=sys.stderr)
        free_device_memory(device)
        rows.append(row)
        last = name == args.cases[-1]
        write_results("dispatch", rows, meta, args.out, COLUMNS, notes=notes, echo=last)
    return 1 if meta["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
