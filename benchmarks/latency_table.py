"""Latency-table benchmark: how well a per-op table predicts whole-network latency.

Draws random valid genotypes of a space (:func:`nas.spaces.random_genotype`), builds
each evaluation network (``NetworkCIFAR``, no auxiliary head) in deploy form, and compares
its measured latency (eval-mode forward, batch 1) with the prediction of a latency table
measured in the same run on the same device (:func:`nas.cost.lookup.build_table`, every
op of the space but ``none`` at every edge shape, plus the fixed parts): predicted =
stem + Σ_cells (preprocess0 + preprocess1 + Σ_edges op) + head, what ``nas mo-search``
with ``latency.table=`` reports. The ranking is what a search needs, so the headline
figure is Spearman's rank correlation over the genotypes (ranks with ties averaged,
computed here without scipy); the mean relative error says how far the absolute figure is
off (node sums, concatenations and the Python overhead between modules are not in the
table).

Each network is timed ``--rounds`` times (the order reversed every other round, so drifting
load hits all networks alike) and its fastest round's median kept.

``--clock wall`` (default) times wall time, as ``nas latency-table`` does. On a shared,
oversubscribed CPU the scheduler preempts a network's forward (tens of ms) far more often
than a table entry's (tens of µs), which inflates measured whole-network latency against
the table; ``--clock thread`` (CPU, one thread) times the thread's CPU time instead, for
table and networks alike, which preemption does not inflate.

Usage::

    python benchmarks/latency_table.py [--device cpu|cuda] [--space full] [--steps 4]
        [--genotypes 24] [--channels 16] [--layers 8] [--size 32] [--repeats 20]
        [--warmup 5] [--rounds 2] [--clock wall|thread] [--seed 0] [--threads 1]
        [--quick] [--out DIR]

Results: ``benchmarks/results/latency_table.json`` and ``latency_table.md``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _common import (
    add_busy_cpu_note,
    add_quick_out_args,
    add_threads_arg,
    apply_defaults,
    base_parser,
    describe_env,
    loadavg_1m,
    markdown_table,
    setup_run,
    time_ms,
    write_results,
)

from nas.cost import count_params
from nas.cost.lookup import build_table
from nas.cost.table import OpKey, network_layout
from nas.deploy import to_deploy
from nas.errors import NasError
from nas.network import NetworkCIFAR
from nas.spaces import get_space, random_genotype

COLUMNS = ("genotype", "archid", "params_M", "measured_ms", "predicted_ms", "pred_over_meas",
           "rank_measured", "rank_predicted")

# Defaults: the DARTS search-network scale, about a minute on one CPU thread.
DEFAULTS = {"genotypes": 24, "channels": 16, "layers": 8, "size": 32, "repeats": 20,
            "warmup": 5, "rounds": 2, "threads": 1}
QUICK = {"genotypes": 4, "channels": 4, "layers": 3, "size": 8, "repeats": 2, "warmup": 1,
         "rounds": 1, "threads": 1}


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    v = np.asarray(values, dtype=float)
    r = np.empty(len(v))
    r[np.argsort(v, kind="mergesort")] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's of the (tie-averaged) ranks."""
    return pearson(ranks(a), ranks(b))


def thread_timer(warmup: int, repeats: int) -> Callable[[torch.nn.Module, tuple, str], float]:
    """``timer(module, shape, what) -> ms``: median CPU time of this thread per eval-mode
    forward (one torch thread: every op runs on it)."""

    def timer(module: torch.nn.Module, shape: tuple, what: str = "") -> float:
        x = torch.randn(*shape)
        module.eval()
        times = []
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            for _ in range(repeats):
                start = time.thread_time()
                module(x)
                times.append(time.thread_time() - start)
        return statistics.median(times) * 1e3

    return timer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.set_defaults(device="cpu")
    p.add_argument("--space", default="full", help="named space or YAML file (full)")
    p.add_argument("--steps", type=int, default=4, help="nodes per cell (4)")
    p.add_argument("--genotypes", type=int, help="random genotypes (24)")
    p.add_argument("--channels", type=int, help="init channels C (16)")
    p.add_argument("--layers", type=int, help="cells (8)")
    p.add_argument("--size", type=int, help="image height = width (32)")
    p.add_argument("--in-channels", type=int, default=3, help="image channels (3)")
    p.add_argument("--classes", type=int, default=10, help="classes (10)")
    p.add_argument("--repeats", type=int, help="timed forwards per measurement (20)")
    p.add_argument("--warmup", type=int, help="untimed forwards per measurement (5)")
    p.add_argument("--rounds", type=int, help="timings per network; the fastest kept (2)")
    p.add_argument("--clock", choices=["wall", "thread"], default="wall",
                   help="wall time, or this thread's CPU time (CPU, 1 thread) (wall)")
    p.add_argument("--seed", type=int, default=0, help="genotype sampling seed (0)")
    add_threads_arg(p)
    add_quick_out_args(p)
    return p.parse_args(argv)


def _fill(args: argparse.Namespace, device: torch.device) -> str | None:
    apply_defaults(args, QUICK if args.quick else DEFAULTS)
    for name in ("genotypes", "channels", "layers", "size", "repeats", "rounds", "steps"):
        if getattr(args, name) < (2 if name == "genotypes" else 1):
            return f"--{name} too small: {getattr(args, name)}"
    if args.layers < 3:
        return "--layers must be >= 3"
    if args.clock == "thread" and (device.type != "cpu" or args.threads != 1):
        return "--clock thread needs --device cpu and --threads 1"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 on bad input)."""
    args = parse_args(argv)
    device = setup_run(args, _fill)
    if device is None:
        return 2
    try:
        space = get_space(args.space, None, args.steps, 2, args.steps)
    except NasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = describe_env(device)
    loads = [meta["loadavg_1m"]]
    rng = random.Random(args.seed)
    genotypes = [random_genotype(space, rng) for _ in range(args.genotypes)]
    image = (args.size, args.size)
    layout = network_layout(args.channels, args.layers, args.in_channels, image, args.classes,
                            space.multiplier)
    shapes = {s for row in layout.edge_shapes(space.steps) for s in row}
    ops = {OpKey(op, *s) for s in shapes for op in space.ops if op != "none"}
    cpu_clock = thread_timer(args.warmup, args.repeats) if args.clock == "thread" else None
    started = time.perf_counter()
    table = build_table(ops, layout.parts(), device.type, 1, args.warmup, args.repeats,
                        {"clock": args.clock}, progress=False, timer=cpu_clock)
    table_s = time.perf_counter() - started
    loads.append(loadavg_1m())
    print(f"table: {len(table.ops)} op entries + {len(table.parts)} fixed parts in "
          f"{table_s:.1f} s", file=sys.stderr)

    nets = []
    for g in genotypes:
        torch.manual_seed(0)
        model = NetworkCIFAR(args.channels, args.classes, args.layers, False, g,
                             in_channels=args.in_channels)
        nets.append((count_params(model) / 1e6, to_deploy(model).to(device)))
    x = torch.randn(1, args.in_channels, *image, device=device)
    measured = [math.inf] * len(nets)
    started = time.perf_counter()
    for r in range(args.rounds):
        order = range(len(nets)) if r % 2 == 0 else reversed(range(len(nets)))
        for i in order:
            net = nets[i][1]

            def forward(net: torch.nn.Module = net) -> None:
                with torch.inference_mode():
                    net(x)

            if cpu_clock is not None:
                ms = cpu_clock(net, tuple(x.shape), "network")
            else:
                ms = time_ms(forward, device, args.warmup, args.repeats)
            measured[i] = min(measured[i], ms)
        loads.append(loadavg_1m())
    nets_s = time.perf_counter() - started
    predicted = [table.network_ms(layout, g) for g in genotypes]

    rank_m, rank_p = ranks(measured), ranks(predicted)
    rows: list[dict[str, Any]] = []
    for i, g in enumerate(genotypes):
        rows.append({
            "genotype": i, "archid": g.archid, "params_M": round(nets[i][0], 4),
            "measured_ms": round(measured[i], 4), "predicted_ms": round(predicted[i], 4),
            "pred_over_meas": round(predicted[i] / measured[i], 3),
            "rank_measured": float(rank_m[i]), "rank_predicted": float(rank_p[i]),
            "genotype_str": str(g),
        })
    rel = [(p - m) / m for p, m in zip(predicted, measured)]
    summary = {
        "genotypes": len(genotypes),
        "spearman": round(spearman(measured, predicted), 4),
        "pearson": round(pearson(measured, predicted), 4),
        "mean_abs_rel_err": round(float(np.mean(np.abs(rel))), 4),
        "mean_rel_err": round(float(np.mean(rel)), 4),
        "measured_ms_min_max": [round(min(measured), 3), round(max(measured), 3)],
        "table_entries": len(table.ops) + len(table.parts),
        "table_build_s": round(table_s, 1),
        "network_timing_s": round(nets_s, 1),
    }
    known = [v for v in loads if v is not None]
    meta.update(
        benchmark="latency_table",
        args=vars(args),
        space=space.name,
        ops=list(space.ops),
        loadavg_1m_samples=loads,
        loadavg_1m_max=max(known) if known else None,
        summary=summary,
        table_metadata=table.metadata,
    )
    notes = [
        f"{args.genotypes} random genotypes of space {space.name!r} ({args.steps} nodes), "
        f"NetworkCIFAR C={args.channels}, {args.layers} cells, {args.in_channels}x"
        f"{args.size}x{args.size} input, {args.classes} classes, deploy form, batch 1, "
        f"{meta['torch_threads']} thread(s), clock: "
        f"{'wall time' if args.clock == 'wall' else 'thread CPU time'}",
        "measured: median of the timed forwards, fastest of the rounds; predicted: stem + "
        "Σ cells (preprocess0 + preprocess1 + Σ edge ops) + head, from the table",
        f"1-min load average during the run: {', '.join(str(v) for v in loads)}",
    ]
    busy = dict(meta, loadavg_1m=meta["loadavg_1m_max"])
    advice = ("wall-clock timings are inflated, long network forwards far more than short "
              "table entries: rerun on a quiet machine or with --clock thread")
    if args.clock == "thread":
        advice = "thread CPU time does not count preemption, but shared caches still slow it"
    add_busy_cpu_note(notes, device, busy, included="this run included", advice=advice)
    extra = "## Summary\n\n" + markdown_table([{k: v for k, v in summary.items()
                                                if k != "measured_ms_min_max"}])
    write_results("latency_table", rows, meta, args.out, COLUMNS, notes=notes, extra_md=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
