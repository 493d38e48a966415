"""Multi-seed DARTS search: one ordinary search per seed, then what their genotypes share.

A DARTS genotype changes a lot with the seed, so one search says little about a space or a
setting. ``nas search CONFIG seeds=[0,1,2]`` calls :func:`run_search_seeds`: each seed is a
plain :func:`~nas.search.darts.run_search` in ``<run>/seed<N>/`` (it resumes on its own; a
finished one only reloads its checkpoint), then ``<run>/summary.md`` and ``summary.json``
compare the genotypes. The summary is a pure function of the genotypes and metrics
(:func:`summarize_seeds`), so it is tested without searching.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas import distributed
from nas.config import dump_config
from nas.errors import ConfigError
from nas.genotype import CELLS, Genotype
from nas.run import RunDir, atomic_write_text, default_run_dir, run_owner
from nas.runtime import open_run
from nas.search.config import SearchConfig
from nas.search.darts import SearchResult, run_search
from nas.search.diagnostics import param_free_share

__all__ = [
    "MULTI_SEED_COMMAND",
    "edge_agreement",
    "format_summary",
    "multi_seed_dir",
    "run_search_seeds",
    "seed_dir",
    "summarize_seeds",
    "write_summary",
]

log = logging.getLogger("nas")

#: Owner of the parent folder (its ``.nas-run.json``): a later plain ``nas search`` of the
#: same config refuses that folder instead of searching into it beside the seed folders.
MULTI_SEED_COMMAND = "search seeds=[...]"

_ONE_SEED_FILES = ("checkpoint.pt", "genotype.yaml", "metrics.jsonl")


def seed_dir(seed: int) -> str:
    """``seed<N>``: one seed's search folder inside the run (``nas compare`` reads it)."""
    return f"seed{seed}"


def multi_seed_dir(cfg: SearchConfig) -> Path:
    """The run folder of a multi-seed search: ``run_dir``, else ``runs/search/<name>``."""
    return Path(cfg.run_dir) if cfg.run_dir else default_run_dir("search", cfg.name)


def _check_not_one_seed(root: Path) -> None:
    """Refuse a folder that holds a one-seed search: its files would sit beside the seeds."""
    one_seed = (run_owner(root) or {}).get("command") == "search"
    if one_seed or any((root / name).exists() for name in _ONE_SEED_FILES):
        raise ConfigError(f"run_dir {root} holds a one-seed `nas search` run; choose another "
                          "run_dir for seeds=[...] or delete that folder")


def _seed_config(cfg: SearchConfig, root: Path, seed: int) -> SearchConfig:
    runtime = dataclasses.replace(cfg.runtime, seed=seed)
    return dataclasses.replace(cfg, runtime=runtime, run_dir=str(root / seed_dir(seed)),
                               seeds=None)


def _last_val_acc(run_dir: Path) -> float | None:
    """The last epoch's validation accuracy of a search folder (None if it logged none)."""
    try:
        rows = RunDir(run_dir, read_only=True).read_metrics()
    except (OSError, ValueError):
        return None
    value = rows[-1].get("val_acc") if rows else None
    return float(value) if isinstance(value, (int, float)) else None


def run_search_seeds(cfg: SearchConfig) -> list[SearchResult]:
    """One search per seed of ``cfg.seeds``, one after another, then the summary.

    Each seed runs ``cfg`` with ``runtime.seed`` set to it in ``<run>/seed<N>/``. Running
    it again reuses finished seeds and resumes an interrupted one.

    Raises:
        ConfigError: ``cfg.seeds`` is unset, this process was started by torchrun, or the
            run folder holds a one-seed search.
    """
    if not cfg.seeds:
        raise ConfigError("seeds: set a list of seeds for a multi-seed search, e.g. seeds=[0,1]")
    if distributed.launched():
        raise ConfigError("seeds: a multi-seed search runs in one process; start it without "
                          "torchrun, or launch one torchrun search per seed (runtime.seed=N)")
    root = multi_seed_dir(cfg)
    _check_not_one_seed(root)
    results: list[SearchResult] = []
    # The parent stays open, so its log.txt gathers every seed's log; each seed's open_run
    # checks and marks only its own sub-folder, so parent and seeds never conflict.
    with open_run(cfg.name, str(root), MULTI_SEED_COMMAND) as run:
        run.save_config(dump_config(cfg))
        for i, seed in enumerate(cfg.seeds):
            log.info("multi-seed search %s: seed %d (%d/%d)", cfg.name, seed, i + 1,
                     len(cfg.seeds))
            results.append(run_search(_seed_config(cfg, root, seed)))
        summary = summarize_seeds(
            {s: r.genotype for s, r in zip(cfg.seeds, results)},
            val_acc={s: _last_val_acc(r.run_dir) for s, r in zip(cfg.seeds, results)},
            epochs={s: r.epochs for s, r in zip(cfg.seeds, results)},
        )
        md = write_summary(run.path, summary, cfg.name)
        log.info("multi-seed summary: %s (mean edge agreement %s)", md,
                 _num(summary["agreement"]["mean"]))
    return results


# --- the summary (pure) ---------------------------------------------------------------------


def _node_edges(genotype: Genotype, cell: str) -> list[Counter]:
    edges = list(getattr(genotype, cell))
    return [Counter(edges[j : j + 2]) for j in range(0, len(edges), 2)]


def _shared_edges(a: Genotype, b: Genotype, cell: str) -> tuple[int, int]:
    """(edges both chose, edge slots) in ``cell``; a node's two edges are matched without
    regard to order (the derivation lists them by strength, not by meaning)."""
    na, nb = _node_edges(a, cell), _node_edges(b, cell)
    shared = sum(sum((x & y).values()) for x, y in zip(na, nb))
    return shared, 2 * max(len(na), len(nb))


def edge_agreement(a: Genotype, b: Genotype, cell: str | None = None) -> float:
    """Share of edge slots where ``a`` and ``b`` chose the same op from the same input.

    Over both cells when ``cell`` is None, else over ``"normal"`` or ``"reduce"`` alone.
    Per node the two edges are compared as a pair, in either order.
    """
    cells = CELLS if cell is None else (cell,)
    counts = [_shared_edges(a, b, c) for c in cells]
    total = sum(n for _, n in counts)
    return sum(s for s, _ in counts) / total if total else 1.0


def summarize_seeds(
    genotypes: Mapping[int, Genotype],
    val_acc: Mapping[int, float | None] | None = None,
    epochs: Mapping[int, int | None] | None = None,
) -> dict[str, Any]:
    """What the seeds' genotypes share, as plain JSON-ready data (``summary.json``).

    Args:
        genotypes: each seed's derived genotype, in the order to report them.
        val_acc: each seed's last-epoch search validation accuracy (missing: None).
        epochs: each seed's finished search epochs (missing: None).

    Returns:
        ``runs`` (per seed: genotype file relative to the run, DARTS string, epochs,
        val_acc, the share of parameter-free ops per cell), ``edges`` (per cell, per
        slot ``node``/``slot``: each seed's op and input),
        ``op_counts`` (per cell: how many edges chose each op over all seeds), and
        ``agreement`` (per pair of seeds: :func:`edge_agreement` overall and per cell;
        ``mean``: the pairs' mean overall agreement, None with one seed).
    """
    seeds = list(genotypes)
    val_acc, epochs = val_acc or {}, epochs or {}
    runs = [
        {"seed": s, "genotype_file": f"{seed_dir(s)}/genotype.yaml",
         "genotype": str(genotypes[s]), "epochs": epochs.get(s), "val_acc": val_acc.get(s),
         **{f"{c}_param_free": param_free_share(getattr(genotypes[s], c)) for c in CELLS}}
        for s in seeds
    ]
    edges: dict[str, list[dict[str, Any]]] = {}
    op_counts: dict[str, dict[str, int]] = {}
    for cell in CELLS:
        per_seed = {s: list(getattr(genotypes[s], cell)) for s in seeds}
        slots = max((len(e) for e in per_seed.values()), default=0)
        edges[cell] = [
            {"node": j // 2, "slot": j % 2,
             "choices": [{"seed": s, "op": per_seed[s][j][0], "input": per_seed[s][j][1]}
                         for s in seeds if j < len(per_seed[s])]}
            for j in range(slots)
        ]
        counts = Counter(op for e in per_seed.values() for op, _ in e)
        op_counts[cell] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    pairs = [
        {"seeds": [a, b],
         **{c: edge_agreement(genotypes[a], genotypes[b], c) for c in CELLS},
         "overall": edge_agreement(genotypes[a], genotypes[b])}
        for a, b in itertools.combinations(seeds, 2)
    ]
    mean = sum(p["overall"] for p in pairs) / len(pairs) if pairs else None
    return {"seeds": seeds, "runs": runs, "edges": edges, "op_counts": op_counts,
            "agreement": {"pairs": pairs, "mean": mean}}


def _num(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}%" if pct else f"{value:.3f}"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def format_summary(summary: Mapping[str, Any], name: str | None = None) -> str:
    """``summary.md``: the :func:`summarize_seeds` data as Markdown tables."""
    seeds = summary["seeds"]
    out = [f"# Multi-seed search: {name}" if name else "# Multi-seed search", ""]
    out += [f"{len(seeds)} independent searches of one config, seeds "
            f"{', '.join(map(str, seeds))}; each seed's run is in `seed<N>/`.", ""]
    out += ["## Runs", "", _row(["seed", "genotype", "val acc (last epoch)", "epochs",
                                 "param-free normal", "param-free reduce"]),
            _row(["---"] * 6)]
    out += [_row([r["seed"], f"`{r['genotype_file']}`", _num(r["val_acc"], pct=True),
                  "n/a" if r["epochs"] is None else r["epochs"],
                  _num(r.get("normal_param_free"), pct=True),
                  _num(r.get("reduce_param_free"), pct=True)]) for r in summary["runs"]]
    out += [""] + [f"- seed {r['seed']}: `{r['genotype']}`" for r in summary["runs"]] + [""]

    agreement = summary["agreement"]
    out += ["## Agreement", ""]
    if not agreement["pairs"]:
        out += ["One seed: nothing to compare.", ""]
    else:
        out += ["Per pair of seeds, the share of edges (two per node, both cells) where both "
                "chose the same op from the same input; a node's two edges match in either "
                f"order. Mean over the pairs: **{_num(agreement['mean'])}**.", "",
                _row(["seeds", "overall", "normal", "reduce"]), _row(["---"] * 4)]
        out += [_row([", ".join(map(str, p["seeds"])), _num(p["overall"]), _num(p["normal"]),
                      _num(p["reduce"])]) for p in agreement["pairs"]]
        out += [""]

    counts = summary["op_counts"]
    ops = sorted({*counts["normal"], *counts["reduce"]},
                 key=lambda op: (-counts["normal"].get(op, 0) - counts["reduce"].get(op, 0), op))
    out += ["## Op counts", "", "Edges choosing each op, summed over the seeds.", "",
            _row(["op", "normal", "reduce"]), _row(["---"] * 3)]
    out += [_row([op, counts["normal"].get(op, 0), counts["reduce"].get(op, 0)]) for op in ops]
    out += [""]

    for cell in CELLS:
        out += [f"## {cell.capitalize()} cell edges", "",
                "Each seed's `op ← input` per edge slot (inputs 0, 1: previous cells; "
                "j >= 2: node j-2).", "",
                _row(["node", "slot", *(f"seed {s}" for s in seeds)]),
                _row(["---"] * (2 + len(seeds)))]
        for slot in summary["edges"][cell]:
            chosen = {c["seed"]: f"{c['op']} ← {c['input']}" for c in slot["choices"]}
            out += [_row([slot["node"], slot["slot"], *(chosen.get(s, "") for s in seeds)])]
        out += [""]
    return "\n".join(out)


def write_summary(run_dir: str | Path, summary: Mapping[str, Any],
                  name: str | None = None) -> Path:
    """Write ``summary.json`` and ``summary.md`` atomically; returns the Markdown path."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    md = run_dir / "summary.md"
    atomic_write_text(md, format_summary(summary, name))
    return md
