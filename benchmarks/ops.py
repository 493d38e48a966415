"""Operator benchmark: every registry op against a plain 3x3 conv block and ``sep_conv_3x3``.

For each op and setting (C, H, stride) it measures forward+backward time (train form,
train mode), eval-mode forward time of the train form and of the deploy form
(:func:`nas.deploy.to_deploy`), peak memory of forward+backward, params, MACs and stored
bytes, and reports ratios to the two references measured in the same run at the same
setting.

Usage::

    python benchmarks/ops.py [--device cpu|cuda|auto] [--channels 16 36] [--sizes 32 16]
        [--batch 32] [--ops PATTERN ...] [--repeats N] [--warmup N] [--budget S] [--threads N]
        [--amp] [--quick] [--out DIR]

Results: ``benchmarks/results/ops.json`` and ``ops.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from _common import (
    ResultsWriter,
    add_busy_cpu_note,
    add_quick_out_args,
    add_threads_arg,
    apply_defaults,
    apply_runtime,
    base_parser,
    describe_env,
    markdown_table,
    mem_method_meta,
    peak_memory,
    pop_mem_methods,
    ratio,
    resolve_device,
    time_ms,
)
from torch import nn

from nas.cost import count_bytes, count_macs, count_params
from nas.deploy import to_deploy
from nas.ops import OPS, list_ops

REF_CONV = "conv3x3"
REF_SEP = "sep_conv_3x3"
SKIPPED_OPS = frozenset({"none"})

COLUMNS = (
    "op",
    "C",
    "H",
    "stride",
    "batch",
    "device",
    "dtype",
    "fwd_bwd_ms",
    "ratio_vs_conv3x3",
    "ratio_vs_sep3x3",
    "eval_ms_train_form",
    "eval_ms_deploy",
    "peak_mem_MB",
    "mem_ratio_vs_conv3x3",
    "params",
    "macs",
    "bytes_train",
    "bytes_deploy",
)

# Defaults: modest, so the full CPU run finishes in a few minutes on two cores.
DEFAULTS = {"channels": [16, 36], "sizes": [32, 16], "batch": 32, "repeats": 5, "warmup": 2}
QUICK = {"channels": [8], "sizes": [8], "batch": 4, "repeats": 2, "warmup": 1}
BUDGET_S = 1.5  # default seconds per measurement; at least 3 timed calls regardless


def conv3x3_block(C: int, stride: int, affine: bool = True) -> nn.Module:
    """Reference block ReLU -> Conv2d 3x3 (no bias) -> BN, the conv the paper ops replace."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )


@dataclass(frozen=True)
class Setting:
    """One benchmark shape: ``batch x C x H x H`` input, op stride."""

    C: int
    H: int
    stride: int
    batch: int


def _builder(name: str) -> Callable[[int, int, bool], nn.Module]:
    return conv3x3_block if name == REF_CONV else OPS[name]


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _eval_ms(
    module: nn.Module, x: torch.Tensor, device: torch.device, amp: bool, args: argparse.Namespace
) -> float:
    """Median eval-mode forward time (inference mode, no autograd)."""

    def fwd() -> None:
        with torch.inference_mode(), _autocast(device, amp):
            module(x)

    with _eval_mode(module):
        return time_ms(fwd, device, args.warmup, args.repeats, args.budget)


def bench_op(
    name: str, s: Setting, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Measure one op at one setting; ratios are filled in later by :func:`add_ratios`."""
    torch.manual_seed(0)
    op = _builder(name)(s.C, s.stride, True).to(device).train()
    x = torch.randn(s.batch, s.C, s.H, s.H, device=device, requires_grad=True)
    params = [p for p in op.parameters() if p.requires_grad]

    def forward() -> torch.Tensor:
        with _autocast(device, args.amp):
            return op(x)

    grad_out = torch.ones_like(forward().detach())

    def backward(out: torch.Tensor) -> None:
        out.backward(grad_out)

    def step() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        backward(forward())

    fwd_bwd = time_ms(step, device, args.warmup, args.repeats, args.budget)
    x.grad = None
    for p in params:
        p.grad = None
    mem = peak_memory(forward, backward, device, exclude=list(op.parameters()) + [x])
    x_eval = x.detach()
    eval_train = _eval_ms(op, x_eval, device, args.amp, args)
    deployed = to_deploy(op)
    eval_deploy = _eval_ms(deployed, x_eval, device, args.amp, args)
    return {
        "op": name,
        "C": s.C,
        "H": s.H,
        "stride": s.stride,
        "batch": s.batch,
        "device": device.type,
        "dtype": "bf16-autocast" if args.amp else "fp32",
        "fwd_bwd_ms": round(fwd_bwd, 4),
        "ratio_vs_conv3x3": None,
        "ratio_vs_sep3x3": None,
        "eval_ms_train_form": round(eval_train, 4),
        "eval_ms_deploy": round(eval_deploy, 4),
        "peak_mem_MB": round(mem.mb, 4),
        "mem_ratio_vs_conv3x3": None,
        "params": count_params(op),
        "macs": count_macs(op, (1, s.C, s.H, s.H), device=device),
        "bytes_train": count_bytes(op),
        "bytes_deploy": count_bytes(deployed),
        "_mem_method": mem.method,
        "_peak_bytes": mem.bytes,
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Fill the ``ratio_*`` columns from the reference rows of the same setting."""
    refs = {r["op"]: r for r in rows if r["op"] in (REF_CONV, REF_SEP)}
    conv, sep = refs.get(REF_CONV), refs.get(REF_SEP)
    for r in rows:
        r["ratio_vs_conv3x3"] = ratio(r["fwd_bwd_ms"], conv and conv["fwd_bwd_ms"])
        r["ratio_vs_sep3x3"] = ratio(r["fwd_bwd_ms"], sep and sep["fwd_bwd_ms"])
        r["mem_ratio_vs_conv3x3"] = ratio(r["_peak_bytes"], conv and conv["_peak_bytes"])


def add_ratios_by_setting(rows: list[dict[str, Any]]) -> None:
    """:func:`add_ratios` for each (C, H, stride) setting of ``rows``."""
    for key in dict.fromkeys((r["C"], r["H"], r["stride"]) for r in rows):
        add_ratios([r for r in rows if (r["C"], r["H"], r["stride"]) == key])


def _geomean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return round(math.exp(sum(math.log(v) for v in vals) / len(vals)), 3)


def summary_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-op geometric means over all settings, slowest (vs conv3x3) first."""
    ops = sorted({r["op"] for r in rows})
    out = []
    for name in ops:
        mine = [r for r in rows if r["op"] == name]
        deploy_speedup = [ratio(r["eval_ms_train_form"], r["eval_ms_deploy"]) for r in mine]
        out.append(
            {
                "op": name,
                "settings": len(mine),
                "gmean_ratio_vs_conv3x3": _geomean([r["ratio_vs_conv3x3"] for r in mine]),
                "gmean_ratio_vs_sep3x3": _geomean([r["ratio_vs_sep3x3"] for r in mine]),
                "gmean_mem_ratio_vs_conv3x3": _geomean([r["mem_ratio_vs_conv3x3"] for r in mine]),
                "gmean_eval_train_over_deploy": _geomean(deploy_speedup),
            }
        )
    out.sort(key=lambda r: -(r["gmean_ratio_vs_conv3x3"] or 0.0))
    return out


def settings_from(args: argparse.Namespace) -> list[Setting]:
    """Stride 1 at every (C, H); stride 2 at the first (C, H) only."""
    grid = [Setting(C, H, 1, args.batch) for C in args.channels for H in args.sizes]
    grid.append(Setting(args.channels[0], args.sizes[0], 2, args.batch))
    return grid


def select_ops(patterns: Sequence[str]) -> list[str]:
    """Registry ops matching any fnmatch pattern (``none`` excluded), references first.

    Raises:
        ValueError: A pattern matches no registry op.
    """
    chosen: set[str] = set()
    for pattern in patterns:
        names = list_ops(pattern)
        if not names and pattern != REF_CONV:
            raise ValueError(f"--ops {pattern!r} matches no op; known: {', '.join(list_ops())}")
        chosen.update(names)
    rest = sorted(chosen - SKIPPED_OPS - {REF_SEP})
    return [REF_CONV, REF_SEP, *rest]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """CLI arguments; ``--quick`` changes the defaults of the ones not given."""
    p = base_parser(__doc__)
    p.add_argument("--channels", type=int, nargs="+", help="C values (default 16 36)")
    p.add_argument("--sizes", type=int, nargs="+", help="H=W values (default 32 16)")
    p.add_argument("--batch", type=int, help="batch size (default 32)")
    p.add_argument("--ops", nargs="+", default=["*"], help="fnmatch patterns (default all)")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default 5)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 2)")
    p.add_argument(
        "--budget", type=float, default=BUDGET_S, help="seconds per measurement (default 1.5)"
    )
    add_threads_arg(p)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    add_quick_out_args(p, "one small setting, few repeats")
    args = p.parse_args(argv)
    apply_defaults(args, QUICK if args.quick else DEFAULTS)
    bad = [k for k in ("batch", "repeats") if getattr(args, k) < 1]
    bad += [k for k in ("channels", "sizes") if min(getattr(args, k)) < 1]
    bad += ["threads"] if args.threads is not None and args.threads < 1 else []
    bad += ["budget"] if args.budget <= 0 else []
    if bad or args.warmup < 0:
        p.error(f"must be positive: {', '.join(bad) or 'warmup'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 on bad input)."""
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        names = select_ops(args.ops)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    apply_runtime(args.threads, device)
    settings = settings_from(args)
    writer = ResultsWriter("ops", {**describe_env(device), "benchmark": "ops", "args": vars(args)},
                           args.out, COLUMNS, derive=add_ratios_by_setting)
    failures: list[str] = []
    for s in settings:
        for name in names:
            tag = f"{name} C={s.C} H={s.H} stride={s.stride}"
            try:
                writer.add(bench_op(name, s, device, args))
            except Exception as err:  # keep going: one broken op must not sink the run
                if device.type == "cuda" and isinstance(err, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                failures.append(f"{tag}: {type(err).__name__}: {err}")
                print(f"FAILED {tag}: {err}", file=sys.stderr)
                continue
            print(f"{tag}: {writer.rows[-1]['fwd_bwd_ms']:.2f} ms", file=sys.stderr)
    rows = writer.rows
    add_ratios_by_setting(rows)
    methods = pop_mem_methods(rows)
    meta = describe_env(device)
    meta.update(
        benchmark="ops",
        args=vars(args),
        mem_method=mem_method_meta(methods),
        references={REF_CONV: "ReLU -> Conv2d 3x3 (no bias) -> BN", REF_SEP: "registry op"},
        failures=failures,
        summary=summary_rows(rows),
    )
    notes = [
        f"peak_mem_MB method: {', '.join(methods)} (see benchmarks/README.md)",
        "ratios: fwd_bwd_ms / reference fwd_bwd_ms at the same (C, H, stride), same run",
        f"dtype: {'bf16 autocast' if args.amp else 'fp32'}; median of up to "
        f"{args.repeats} timed calls after up to {args.warmup} warm-up calls "
        f"({args.budget:g} s budget per measurement, at least 3 calls)",
    ]
    add_busy_cpu_note(
        notes,
        device,
        meta,
        included="this run included",
        advice="multi-threaded timings of small ops can be inflated many-fold; "
        "compare within a run, or rerun with --threads 1 on a quiet machine",
    )
    if failures:
        notes.append(f"FAILED cases: {'; '.join(failures)}")
    summary = meta["summary"]
    extra = "## Summary (geometric means over settings)\n\n" + markdown_table(summary)
    writer.finish(meta, rows, notes=notes, extra_md=extra)
    return 1 if failures and not rows else 0


if __name__ == "__main__":
    sys.exit(main())
