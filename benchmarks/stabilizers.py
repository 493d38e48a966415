"""DARTS collapse fixes side by side: each method over the same search seeds.

Per method (plain DARTS, each stabilizer of ``stabilize.*``, and their combination), one
multi-seed search (``nas search CONFIG seeds=[...]``) into ``--work/<method>/``: resumable,
a rerun reuses finished seeds. Reported per method: the share of parameter-free ops in the
derived normal and reduction cells (mean and spread over seeds; the derivation as shipped,
guards included), the mean pairwise edge agreement between seeds, R-DARTS's dominant
Hessian eigenvalue at the first and last epoch (mean over seeds), and search wall time.

The figures answer "which fix keeps the convolutions in the cell" at the chosen config's
settings; they are not an accuracy comparison (that is ``nas compare``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from _common import (
    ResultsWriter,
    add_quick_out_args,
    add_threads_arg,
    base_parser,
    describe_env,
    resolve_device,
)

from nas.cli.configs import resolve_config
from nas.config import load_config
from nas.genotype import load_genotype
from nas.run import RunDir
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob
from nas.search.seeds import run_search_seeds, summarize_seeds
from nas.search.select import select_run
from nas.spaces import random_genotype

#: method -> the config overrides that select it
METHODS: dict[str, list[str]] = {
    "darts": [],
    "beta": ["stabilize.beta=25"],
    "sdarts_rs": ["stabilize.rs_epsilon=0.3"],
    "darts_minus": ["stabilize.aux_skip=true"],
    "drnas": ["stabilize.dirichlet=true"],
    "beta+rs": ["stabilize.beta=25", "stabilize.rs_epsilon=0.3"],
    # weaker β-DARTS: at 25 the searches' α stayed within 3e-4 of uniform (chance level)
    "beta5": ["stabilize.beta=5"],
    "beta2": ["stabilize.beta=2"],
    # P-DARTS: three stages deepening the supernet by 3 cells each from the config's depth
    # (the paper: 5 -> 11 -> 17), pruning to 5 then 3 ops, the paper's skip dropout
    "pdarts": ["progressive.layers=[5,8,11]", "progressive.keep_ops=[5,3]",
               "progressive.skip_dropout=[0.0,0.4,0.7]"],
}
#: every method starts from plain DARTS, whatever the config ships (the shipped search
#: configs default to β-DARTS)
PLAIN = ["stabilize.beta=0", "stabilize.rs_epsilon=0", "stabilize.aux_skip=false",
         "stabilize.dirichlet=false"]
#: method -> (the method whose finished seeds it re-derives, how): the cap re-derives the
#: supernet with the overrides; ``select`` reads DARTS-PT's genotype_pt.yaml that
#: ``nas select`` wrote (run it first, or pass --select to run it here)
DERIVED: dict[str, tuple[str, list[str] | None]] = {
    "param_free_cap": ("darts", ["skip_guard.max_param_free=2"]),
    "darts_pt": ("darts", None),
}
#: the reference row: cells drawn uniformly from the config's space (as ``nas compare``'s
#: random entries are), what a method's figures mean nothing against if it only matches
RANDOM = "random"
RANDOM_DRAWS = 100
COLUMNS = ("method", "seeds", "normal_param_free", "normal_param_free_std",
           "reduce_param_free", "agreement", "hessian_first", "hessian_last", "search_s")
QUICK_OVERRIDES = [
    "data.name=synthetic", "data.options={num_samples: 32, image_size: 8, channels: 3, "
    "num_classes: 3}", "data.limit=null", "data.batch_size=8", "data.eval_batch_size=8",
    "model.init_channels=4", "model.layers=3", "space.steps=2", "space.multiplier=2",
    "optim.epochs=2", "runtime.progress=false", "runtime.tensorboard=false",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = base_parser(__doc__)
    p.add_argument("--config", default="quick", help="search config (default: quick)")
    p.add_argument("--seeds", type=int, nargs="+", help="search seeds (0 1 2)")
    p.add_argument("--methods", nargs="+", choices=[*METHODS, *DERIVED, RANDOM],
                   help="(all; `random`: the uniform-sampling reference)")
    p.add_argument("--select", nargs="*", metavar="KEY=VALUE",
                   help="run `nas select` for darts_pt where genotype_pt.yaml is missing, with "
                   "these select.* overrides (default: only read what is there)")
    p.add_argument("--hessian-iters", type=int,
                   help="power iterations of the eigenvalue diagnostic per epoch (5)")
    p.add_argument("--work", default="runs/bench-stabilizers",
                   help="run folders, one per method (resumable)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra overrides for every method")
    add_threads_arg(p)
    add_quick_out_args(p, "tiny synthetic searches, two methods: the smoke test")
    return p.parse_args(argv)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _search_metrics(folder: Path) -> list[dict[str, Any]]:
    """A seed's metrics rows in epoch order; a P-DARTS seed's are its stages' in turn."""
    stages = sorted(folder.glob("stage[0-9]*"), key=lambda p: int(p.name[len("stage"):]))
    return [row for f in (stages or [folder]) for row in RunDir(f, read_only=True).read_metrics()]


def _method_row(method: str, root: Path, seeds: list[int], seconds: float) -> dict[str, Any]:
    summary = json.loads((root / "summary.json").read_text())
    runs = summary["runs"]
    normal = [r["normal_param_free"] for r in runs]
    first, last = [], []
    for seed in seeds:
        eig = [r["hessian_eig"] for r in _search_metrics(root / f"seed{seed}")
               if isinstance(r.get("hessian_eig"), float)]
        if eig:
            first.append(eig[0])
            last.append(eig[-1])
    return {
        "method": method,
        "seeds": len(runs),
        "normal_param_free": _mean(normal),
        "normal_param_free_std": statistics.stdev(normal) if len(normal) > 1 else None,
        "reduce_param_free": _mean([r["reduce_param_free"] for r in runs]),
        "agreement": summary["agreement"]["mean"],
        "hessian_first": _mean(first),
        "hessian_last": _mean(last),
        "search_s": round(seconds, 1),
    }


def _derived_row(method: str, work: Path, seeds: list[int],
                 select: list[str] | None) -> dict[str, Any]:
    """A method that only re-derives another's finished searches: its genotypes per seed,
    summarized as a search of its own; time is the derivation's (DARTS-PT's selection)."""
    base, overrides = DERIVED[method]
    genotypes, seconds = {}, 0.0
    for seed in seeds:
        folder = work / base / f"seed{seed}"
        if overrides is not None:
            cfg = load_config(SearchConfig, str(folder / "config.yaml"), overrides)
            job = SearchJob(cfg, RunDir(folder, read_only=True))
            job.load_state_dict(RunDir(folder, read_only=True).load_checkpoint()["job"])
            guard = cfg.skip_guard
            genotypes[seed] = job.model.genotype(guard.max_skips, guard.max_param_free)
            continue
        if not (folder / "genotype_pt.yaml").is_file() and select is not None:
            select_run(folder, select)
        genotypes[seed] = load_genotype(folder / "genotype_pt.yaml")
        seconds += json.loads((folder / "selection.json").read_text()).get("seconds") or 0.0
    summary = summarize_seeds(genotypes)
    normal = [r["normal_param_free"] for r in summary["runs"]]
    base_row = _method_row(base, work / base, seeds, 0.0)
    return {
        "method": method, "seeds": len(seeds), "normal_param_free": _mean(normal),
        "normal_param_free_std": statistics.stdev(normal) if len(normal) > 1 else None,
        "reduce_param_free": _mean([r["reduce_param_free"] for r in summary["runs"]]),
        "agreement": summary["agreement"]["mean"],
        "hessian_first": base_row["hessian_first"], "hessian_last": base_row["hessian_last"],
        "search_s": round(seconds, 1) if seconds else None,
    }


def _random_row(config: str, extra: list[str]) -> dict[str, Any]:
    """What chance gives: RANDOM_DRAWS cells drawn uniformly from the config's space
    (``random.Random(0)``), summarized like a search over that many seeds."""
    cfg = load_config(SearchConfig, config, [*extra, "seeds=null"])
    rng = random.Random(0)
    space = cfg.space.build()
    summary = summarize_seeds({i: random_genotype(space, rng) for i in range(RANDOM_DRAWS)})
    normal = [r["normal_param_free"] for r in summary["runs"]]
    return {
        "method": RANDOM, "seeds": RANDOM_DRAWS, "normal_param_free": _mean(normal),
        "normal_param_free_std": statistics.stdev(normal),
        "reduce_param_free": _mean([r["reduce_param_free"] for r in summary["runs"]]),
        "agreement": summary["agreement"]["mean"], "hessian_first": None,
        "hessian_last": None, "search_s": None,
    }


def _search_row(method: str, work: Path, config: str,
                args: argparse.Namespace) -> dict[str, Any]:
    """One multi-seed search per method (resumable), summarized."""
    root = work / method
    overrides = [*(QUICK_OVERRIDES if args.quick else []), *PLAIN, *args.set, *METHODS[method],
                 f"seeds={list(args.seeds)}", f"run_dir={root}",
                 f"diagnostics.hessian_iters={args.hessian_iters}",
                 f"runtime.device={args.device}", f"name={method}"]
    cfg = load_config(SearchConfig, config, overrides)
    start = time.perf_counter()
    run_search_seeds(cfg)
    return _method_row(method, root, list(args.seeds), time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = {"methods": ["darts", "beta+rs", "param_free_cap", "darts_pt", RANDOM],
             "seeds": [0, 1],
             "hessian_iters": 2, "select": ["select.tune_steps=1", "select.eval_batches=1"]}
    full = {"methods": [*METHODS, *DERIVED, RANDOM], "seeds": [0, 1, 2], "hessian_iters": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    config = str(resolve_config(args.config, "search"))
    meta = {**describe_env(resolve_device(args.device)), "config": args.config,
            "seeds": list(args.seeds), "extra": args.set, "hessian_iters": args.hessian_iters,
            "quick": args.quick}
    writer = ResultsWriter("stabilizers", meta, args.out, COLUMNS)  # a row per method, kept
    for method in args.methods:
        if method == RANDOM:
            writer.add(_random_row(config, [*(QUICK_OVERRIDES if args.quick else []), *args.set]))
        elif method in DERIVED:
            writer.add(_derived_row(method, work, list(args.seeds), args.select))
        else:
            writer.add(_search_row(method, work, config, args))
        print(f"{method}: normal cells {100 * writer.rows[-1]['normal_param_free']:.0f}% "
              "parameter-free", file=sys.stderr)
    notes = [f"config `{args.config}`, seeds {list(args.seeds)}; param-free: share of the "
             "derived cell's edges on skip/pools (mean over seeds); agreement: mean pairwise "
             "edge agreement; hessian: dominant eigenvalue of the α Hessian (mean over seeds); "
             "search_s: wall time of a method's seeds (seconds only when reused from --work); "
             "derived methods re-derive plain DARTS's searches: param_free_cap caps "
             "skip/pools at 2, darts_pt is DARTS-PT's selection (search_s: its time), "
             "their hessian columns are plain DARTS's."]
    how = {**{m: " ".join(o) or "plain DARTS" for m, o in METHODS.items()},
           "param_free_cap": "darts re-derived, skip_guard.max_param_free=2",
           "darts_pt": "darts re-derived by DARTS-PT (nas select)",
           RANDOM: f"{RANDOM_DRAWS} cells drawn uniformly from the space (the chance level)"}
    methods = "; ".join(f"`{m}`: {how[m]}" for m in args.methods)
    writer.finish(meta, notes=notes, extra_md=f"\nMethods: {methods}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
