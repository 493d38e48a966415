"""``nas quickstart``: search → export → retrain the result and DARTS_V2 → compare.

Runs offline on the embedded Fashion-MNIST sample in minutes on a laptop CPU. The numbers
are smoke-scale: they show the pipeline works, not which cell is better.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from nas.config import load_config

__all__ = ["QuickstartConfig", "run_quickstart"]

log = logging.getLogger("nas")

REAL_FLOW = """\
The real CIFAR-10 flow (GPU):
  nas search darts_cifar10        # or pcdarts_cifar10
  nas compare darts_cifar10       # searched vs DARTS_V1/V2, PC-DARTS, P-DARTS, o-DARTS
  nas deploy runs/compare/darts_cifar10/searched/seed0   # deploy form, verified, latency"""


@dataclasses.dataclass(frozen=True)
class QuickstartConfig:
    name: str = "quickstart"
    run_dir: str | None = None
    search_config: str = "quick"
    compare_config: str = "quick"
    search_epochs: int | None = None
    train_epochs: int | None = None
    progress: bool = True


def run_quickstart(cfg: QuickstartConfig) -> list[dict]:
    from nas.cli.configs import resolve_config
    from nas.evaluate.compare import CompareConfig, CompareEntry, run_compare
    from nas.search.config import SearchConfig
    from nas.search.darts import run_search

    root = Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name
    tic = time.perf_counter()
    overrides = [f"run_dir={root / 'search'}", f"runtime.progress={str(cfg.progress).lower()}"]
    if cfg.search_epochs is not None:
        overrides.append(f"optim.epochs={cfg.search_epochs}")
    search_cfg = load_config(SearchConfig, resolve_config(cfg.search_config, "search"), overrides)
    log.info("[1/3] search on %s (%d epochs)", search_cfg.data.name, search_cfg.optim.epochs)
    result = run_search(search_cfg)
    genotype_file = result.run_dir / "genotype.yaml"
    log.info("[2/3] exported %s", genotype_file)

    overrides = [f"run_dir={root / 'compare'}",
                 f"train.runtime.progress={str(cfg.progress).lower()}"]
    if cfg.train_epochs is not None:
        overrides.append(f"train.optim.epochs={cfg.train_epochs}")
    compare_cfg = load_config(
        CompareConfig, resolve_config(cfg.compare_config, "compare"), overrides
    )
    entries = [
        CompareEntry("searched", str(genotype_file)) if e.name == "searched" else e
        for e in compare_cfg.entries
    ]
    compare_cfg = dataclasses.replace(compare_cfg, entries=entries)
    log.info("[3/3] retrain and compare: %s", ", ".join(e.name for e in entries))
    rows = run_compare(compare_cfg)
    minutes = (time.perf_counter() - tic) / 60
    print(
        f"\nQuickstart done in {minutes:.1f} min. Results: {root / 'compare' / 'compare.md'},"
        f" plots: {root / 'compare'}/pareto_*.png\n"
        "These are SMOKE-SCALE numbers (the 2,000-image embedded sample, 3 epochs): they show\n"
        "that search -> export -> retrain -> compare works, not which cell is better.\n\n"
        + REAL_FLOW
    )
    return rows
