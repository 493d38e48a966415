"""How much of a compare table is training-seed noise, and what it lets a design detect.

The pilot behind an experiment's recipe: for each ``nas compare`` run folder (one training
length each), the training-seed spread of every cell, pooled over the cells, and from it
the smallest group difference the exact permutation test would detect at 80 % power for
the planned group sizes, if genotypes differed by nothing but seed noise (a lower bound:
real cells also differ from each other, which the full run measures).

    python experiments/seed_spread.py RUN [RUN ...] [--seeds 3] [--groups 4:8 4:3 3:8]

Prints a markdown table; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

import yaml

from nas.evaluate.significance import detectable_difference


def run_spread(folder: Path) -> dict:
    """One compare run: its training length and each cell's seed accuracies (percent)."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    with open(folder / "compare.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["acc_per_seed"].strip()]
    cells = {r["name"]: [100 * float(v) for v in r["acc_per_seed"].split()] for r in rows}
    speed = [float(r["train_images_per_s"]) for r in rows if r["train_images_per_s"]]
    return {"epochs": cfg["train"]["optim"]["epochs"], "limit": cfg["train"]["data"]["limit"],
            "cells": cells, "images_per_s": statistics.fmean(speed) if speed else math.nan}


def pooled_seed_sd(cells: dict[str, list[float]]) -> float:
    """Within-cell standard deviation pooled over cells (each with two or more seeds)."""
    ss = sum(sum((a - statistics.fmean(v)) ** 2 for a in v) for v in cells.values())
    dof = sum(len(v) - 1 for v in cells.values())
    return math.sqrt(ss / dof) if dof > 0 else math.nan


def spread_table(folders: list[Path], seeds: int, groups: list[tuple[int, int]]) -> str:
    head = (["training", "steps of 128", "per-cell seed std (pp)", "pooled seed std (pp)",
             f"member-mean std, {seeds} seeds (pp)"]
            + [f"Δ detectable {a} vs {b} (pp)" for a, b in groups]
            + ["s per training (1 thread)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for folder in folders:
        r = run_spread(folder)
        sd = pooled_seed_sd(r["cells"])
        member = sd / math.sqrt(seeds)
        images = r["epochs"] * (r["limit"] or 60000)
        per_cell = ", ".join(f"{n} {statistics.stdev(v):.2f}" for n, v in r["cells"].items()
                             if len(v) > 1)
        cols = [f"{r['epochs']} epochs of {r['limit'] or 'all'} images",
                str(math.ceil((r["limit"] or 60000) / 128) * r["epochs"]), per_cell,
                f"{sd:.2f}", f"{member:.2f}"]
        cols += [f"{detectable_difference(a, b, member):.2f}" for a, b in groups]
        cols.append(f"{images / r['images_per_s']:.0f}")
        lines.append("| " + " | ".join(cols) + " |")
    lines += ["", "Δ detectable: the smallest true difference between group means that the "
              "exact two-sided permutation test over member means finds at p ≤ 0.05 in "
              "80 % of experiments, if members spread only by seed noise (member-mean std); "
              "the genotypes' own spread adds to it. s per training: images / the measured "
              "training throughput (it leaves out the test pass).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="nas compare run folders")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per cell planned")
    p.add_argument("--groups", nargs="+", default=["4:8", "4:3", "3:8"],
                   help="planned group sizes A:B (members)")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    for folder in args.runs:
        if not (folder / "compare.csv").is_file():
            print(f"seed_spread: {folder}: no compare.csv (not a finished nas compare run)",
                  file=sys.stderr)
            return 2
    try:
        groups = [tuple(int(x) for x in g.split(":")) for g in args.groups]
    except ValueError:
        print(f"seed_spread: --groups: expected A:B, got {args.groups}", file=sys.stderr)
        return 2
    table = spread_table(args.runs, args.seeds, groups)
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
