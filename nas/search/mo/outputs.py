"""Outputs of a multi-objective search: all trials (CSV), the Pareto front (markdown,
CSV, plots) and one genotype file per Pareto point, plus a ``nas compare`` config.

Accuracy is ``val_acc``: measured on a holdout of the training set, never the test set.
Trials stopped early (Ray Tune's ASHA) are listed with the epochs they reached but are
not on the front: their accuracy is not comparable with fully trained ones.
"""

from __future__ import annotations

import csv
import dataclasses
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
from nas.run import atomic_savefig, atomic_write_text
from nas.search.mo.trial import MOConfig, latency_label
from nas.tensorboard import TensorBoardLog

__all__ = ["write_outputs", "trial_rows"]

_COLUMNS = [
    "trial", "val_acc", "params", "latency", "macs", "feasible", "epochs", "stopped",
    "latency_noisy", "latency_source", "genotype", "trial_dir",
]


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per complete trial of an Optuna study (the driver stores them as user attrs)."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"trial": t.number, **{k: t.user_attrs.get(k) for k in _COLUMNS[1:]}}
        row["stopped"] = False  # Optuna trials always run their whole budget
        rows.append(row)
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _eligible(rows: list[dict[str, Any]]) -> np.ndarray:
    """Rows that may be on the front: feasible and trained for the whole budget."""
    return np.array([bool(r["feasible"]) and not r.get("stopped") for r in rows], dtype=bool)


def _plot(rows, front, key: str, label: str, path: Path) -> Figure:
    acc = np.array([100 * r["val_acc"] for r in rows])
    cost = np.array([r[key] for r in rows])
    fig = Figure(figsize=(6, 4.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(cost[~front], acc[~front], c="tab:gray", s=18, label="trials")
    ax.scatter(cost[front], acc[front], c="tab:red", s=30, label="Pareto front (all objectives)")
    # The line follows the front of this 2-D projection only; with three objectives a
    # red point may sit below it (it wins on the objective not shown).
    ok = _eligible(rows)
    flat = np.zeros(len(rows), dtype=bool)
    if ok.any():
        flat[ok] = pareto_mask(acc[ok], cost[ok])
    order = np.argsort(cost[flat])
    ax.step(cost[flat][order], acc[flat][order], where="post", c="tab:red", lw=1, alpha=0.6,
            label="front of this projection")
    for r, x, y, f in zip(rows, cost, acc, front):
        if f:
            ax.annotate(str(r["trial"]), (x, y), textcoords="offset points", xytext=(3, 3),
                        fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("val accuracy (holdout, %)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_savefig(fig, path, dpi=120)
    return fig


def compare_config_text(cfg: MOConfig, entries: list[dict[str, Any]]) -> str:
    """A ``nas compare`` config for the front: the study's data and training budget (not
    the 600-epoch DARTS recipe, which takes days on a CPU), test accuracy this time."""
    b = cfg.budget
    train = {
        "data": dataclasses.asdict(cfg.data),
        "model": {"init_channels": b.init_channels, "layers": b.layers,
                  "drop_path": b.drop_path, "auxiliary": False},
        "optim": {"epochs": b.epochs, "lr": b.lr},
        "runtime": {"device": cfg.runtime.device},
    }
    header = (
        "# Retrain the Pareto genotypes and DARTS_V2 under the study's own budget\n"
        f"# ({b.epochs} epochs, C={b.init_channels}, {b.layers} cells) and report TEST\n"
        "# accuracy. For the DARTS evaluation recipe, override for example:\n"
        "#   train.optim.epochs=600 train.model.init_channels=36 train.model.layers=20\n"
        "#   train.model.auxiliary=true train.model.drop_path=0.2 train.data.cutout=16\n"
    )
    body = {"train": train, "entries": entries, "seeds": [0]}
    return header + yaml.safe_dump(body, sort_keys=False)


def write_outputs(rows: list[dict[str, Any]], cfg: MOConfig, run_path: Path) -> dict[str, Any]:
    """Write trials.csv, pareto.md/.csv, pareto_*.png, pareto/<trial>.yaml, compare.yaml.

    ``rows``: one dict per complete trial with the keys of :data:`_COLUMNS`.
    """
    rows = [r for r in rows if r.get("val_acc") is not None]
    atomic_write_text(run_path / "trials.csv", _csv(rows))
    if not rows:
        return {"trials": 0, "pareto": []}
    ok = _eligible(rows)
    front = np.zeros(len(rows), dtype=bool)
    if ok.any():
        sub = [r for r, e in zip(rows, ok) if e]
        acc = np.array([r["val_acc"] for r in sub])
        costs = [np.array([r[o] for r in sub]) for o in cfg.objectives if o != "val_acc"]
        front[ok] = pareto_mask(acc, *costs) if costs else acc == acc.max()
    pareto = [r for r, f in zip(rows, front) if f]
    pareto.sort(key=lambda r: -r["val_acc"])
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
    atomic_write_text(folder / "compare.yaml", compare_config_text(cfg, entries))
    lines = [
        "| trial | val_acc (holdout, %) | params (M) | latency (ms) | MACs (M) |",
        "|---|---|---|---|---|",
        *(f"| {r['trial']} | {100 * r['val_acc']:.2f} | {r['params']:.4f} | "
          f"{r['latency']:.3f} | {r['macs']:.2f} |" for r in pareto),
    ]
    stopped = sum(bool(r.get("stopped")) for r in rows)
    note = (
        f"\n\n{len(pareto)} Pareto points of {len(rows)} trials ({int(ok.sum())} feasible and "
        f"fully trained, {stopped} stopped early); objectives {', '.join(cfg.objectives)}; "
        f"val_acc: {cfg.budget.holdout:.0%} of the training set held out (the test set is "
        f"never used); latency: deploy form, batch {cfg.latency.batch_size}, "
        f"{latency_label(cfg)}. Genotypes: {folder}/, ready for `nas compare "
        f"{folder / 'compare.yaml'}`.\n"
    )
    table = "\n".join(lines) + note
    atomic_write_text(run_path / "pareto.md", table)
    atomic_write_text(run_path / "pareto.csv", _csv(pareto))
    figs = {"pareto/params": _plot(rows, front, "params", "parameters (M)",
                                   run_path / "pareto_params.png")}
    where = "table" if cfg.latency.table is not None else cfg.latency.device
    figs["pareto/latency"] = _plot(rows, front, "latency", f"latency (ms, {where})",
                                   run_path / "pareto_latency.png")
    tb = TensorBoardLog(run_path, enabled=cfg.runtime.tensorboard)
    for tag, fig in figs.items():  # step = trials so far: the front as the study grows
        tb.figure(tag, fig, step=len(rows))
    tb.close()
    print(table)
    return {"trials": len(rows), "pareto": pareto}
