"""Outputs of a multi-objective search: all trials (CSV), the Pareto front (markdown,
CSV, plots) and one genotype file per Pareto point, plus a ``nas compare`` config."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.trial import TrialState

from nas.pareto import pareto_mask
from nas.run import atomic_write_text

from .trial import MOConfig

__all__ = ["write_outputs", "trial_rows"]

_COLUMNS = ["trial", "accuracy", "params", "latency", "macs", "feasible", "genotype", "trial_dir"]


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"trial": t.number, **{k: t.user_attrs.get(k) for k in _COLUMNS[1:]}}
        rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _plot(rows, front, key: str, label: str, path: Path) -> None:
    acc = np.array([100 * r["accuracy"] for r in rows])
    cost = np.array([r[key] for r in rows])
    fig = Figure(figsize=(6, 4.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(cost[~front], acc[~front], c="tab:gray", s=18, label="trials")
    ax.scatter(cost[front], acc[front], c="tab:red", s=30, label="Pareto front (all objectives)")
    # The line follows the front of this 2-D projection only; with three objectives a
    # red point may sit below it (it wins on the objective not shown).
    feasible = np.array([bool(r["feasible"]) for r in rows])
    flat = pareto_mask(np.where(feasible, acc, -1.0), cost) & feasible
    order = np.argsort(cost[flat])
    ax.step(cost[flat][order], acc[flat][order], where="post", c="tab:red", lw=1, alpha=0.6,
            label="front of this projection")
    for r, x, y, f in zip(rows, cost, acc, front):
        if f:
            ax.annotate(str(r["trial"]), (x, y), textcoords="offset points", xytext=(3, 3),
                        fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def write_outputs(rows: list[dict[str, Any]], cfg: MOConfig, run_path: Path) -> dict[str, Any]:
    """Write trials.csv, pareto.md/.csv, pareto_*.png, pareto/<trial>.yaml, compare.yaml.

    ``rows``: one dict per complete trial with the keys of :data:`_COLUMNS`.
    """
    rows = [r for r in rows if r.get("accuracy") is not None]
    atomic_write_text(run_path / "trials.csv", _csv(rows))
    if not rows:
        return {"trials": 0, "pareto": []}
    costs = [np.array([r[o] for r in rows]) for o in cfg.objectives if o != "accuracy"]
    acc = np.array([r["accuracy"] if r["feasible"] else -1.0 for r in rows])
    front = pareto_mask(acc, *costs) if costs else acc == acc.max()
    front &= np.array([bool(r["feasible"]) for r in rows])
    pareto = [r for r, f in zip(rows, front) if f]
    pareto.sort(key=lambda r: -r["accuracy"])
    folder = run_path / "pareto"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    entries = []
    for r in pareto:
        name = f"trial_{r['trial']}"
        shutil.copyfile(Path(r["trial_dir"]) / "genotype.yaml", folder / f"{name}.yaml")
        entries.append({"name": name, "genotype": str((folder / f"{name}.yaml").resolve())})
    entries.append({"name": "DARTS_V2", "genotype": "DARTS_V2"})
    atomic_write_text(folder / "compare.yaml", yaml.safe_dump(
        {"train": {"data": {"name": cfg.data.name}}, "entries": entries, "seeds": [0]},
        sort_keys=False,
    ))
    lines = [
        "| trial | val acc (%) | params (M) | latency (ms) | MACs (M) |",
        "|---|---|---|---|---|",
        *(f"| {r['trial']} | {100 * r['accuracy']:.2f} | {r['params']:.4f} | "
          f"{r['latency']:.3f} | {r['macs']:.2f} |" for r in pareto),
    ]
    note = (
        f"\n\n{len(pareto)} Pareto points of {len(rows)} complete trials; objectives "
        f"{', '.join(cfg.objectives)}; latency: deploy form, batch {cfg.latency.batch_size}, "
        f"{cfg.latency.device}. Genotypes: {folder}/, ready for `nas compare "
        f"{folder / 'compare.yaml'}`.\n"
    )
    table = "\n".join(lines) + note
    atomic_write_text(run_path / "pareto.md", table)
    atomic_write_text(run_path / "pareto.csv", _csv(pareto))
    _plot(rows, front, "params", "parameters (M)", run_path / "pareto_params.png")
    _plot(rows, front, "latency", f"latency (ms, {cfg.latency.device})",
          run_path / "pareto_latency.png")
    print(table)
    return {"trials": len(rows), "pareto": pareto}
