"""``nas compare CONFIG``: train genotypes under one recipe and seeds, tabulate, plot Pareto.

Each (entry, seed) is an ordinary training run under ``<run>/<entry>/seed<N>``; finished
runs are reused and unfinished ones resume, so a comparison can be stopped and restarted.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas.config import dump_config
from nas.cost import count_bytes, measure_latency
from nas.deploy import to_deploy
from nas.errors import ConfigError
from nas.pareto import pareto_mask
from nas.retrain import TrainConfig, TrainResult, run_train
from nas.run import atomic_savefig, atomic_write_text
from nas.runtime import open_run
from nas.threads import cpu_oversubscribed

from .deploy import load_trained

__all__ = ["CompareConfig", "CompareEntry", "run_compare", "pareto_mask", "format_table"]

log = logging.getLogger("nas")


@dataclasses.dataclass(frozen=True)
class CompareEntry:
    """One row: a genotype (baseline name, file or DARTS string), optionally transplanted."""

    name: str
    genotype: str
    init_channels: int | None = None
    transplant: str | None = None


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    name: str = "compare"
    run_dir: str | None = None
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    entries: list[CompareEntry] = dataclasses.field(
        default_factory=lambda: [CompareEntry("DARTS_V2", "DARTS_V2")]
    )
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    latency_device: str = "cpu"
    latency_batch: int = 1

    def validate(self) -> None:
        if not self.entries:
            raise ConfigError("entries: at least one genotype to compare")
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"entries: duplicate names in {names}")
        for e in self.entries:
            if not e.name.replace("-", "_").replace(".", "_").isidentifier():
                raise ConfigError(f"entries: name {e.name!r} must be a simple identifier")
        if not self.seeds:
            raise ConfigError("seeds: at least one seed")


def _entry_config(cfg: CompareConfig, entry: CompareEntry, base: Path) -> TrainConfig:
    channels = entry.init_channels if entry.init_channels else cfg.train.model.init_channels
    model = dataclasses.replace(
        cfg.train.model, genotype=entry.genotype, transplant=entry.transplant,
        init_channels=channels,
    )
    return dataclasses.replace(
        cfg.train, name=entry.name, run_dir=str(base / entry.name), model=model,
        seeds=list(cfg.seeds),
    )


def _summarize(
    entry: CompareEntry, results: list[TrainResult], cfg: CompareConfig
) -> dict[str, Any]:
    accs = [r.test_acc for r in results if r.test_acc is not None]
    model, _ = load_trained(results[0].run_dir)
    deployed = to_deploy(model)
    shape = (cfg.latency_batch, *results[0].input_shape)
    busy = cpu_oversubscribed()
    latency = measure_latency(deployed, shape, cfg.latency_device)
    busy = busy or cpu_oversubscribed()  # measured on a busy CPU: noise, flagged in the table
    speeds = [r.images_per_s for r in results if r.images_per_s]
    mems = [r.peak_mem_mb for r in results if r.peak_mem_mb]
    return {
        "name": entry.name,
        "genotype": entry.genotype + (f"+{entry.transplant}" if entry.transplant else ""),
        "channels": results[0].init_channels,
        "seeds": len(accs),
        "acc_mean": statistics.mean(accs) if accs else float("nan"),
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "params_M": results[0].params / 1e6,
        "macs_M": results[0].macs / 1e6,
        "deploy_bytes": count_bytes(deployed),
        "latency_ms": latency,
        "latency_noisy": busy,
        "train_images_per_s": statistics.mean(speeds) if speeds else float("nan"),
        "peak_train_mem_MB": max(mems) if mems else float("nan"),
    }


_COLUMNS = [
    ("name", "genotype", "{}"),
    ("channels", "C", "{}"),
    ("acc_mean", "test acc (mean ± std)", None),
    ("params_M", "params (M)", "{:.3f}"),
    ("macs_M", "MACs (M)", "{:.1f}"),
    ("deploy_bytes", "deploy KiB", None),
    ("latency_ms", "latency (ms)", "{:.2f}"),
    ("train_images_per_s", "train img/s", "{:.0f}"),
    ("peak_train_mem_MB", "peak train mem (MB)", "{:.0f}"),
]


def format_table(rows: list[dict[str, Any]], latency_note: str) -> str:
    """Markdown table, one row per compared genotype."""
    head = [title for _, title, _ in _COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for key, _, fmt in _COLUMNS:
            if key == "acc_mean":
                mean, std = 100 * r["acc_mean"], 100 * r["acc_std"]
                cells.append(f"{mean:.2f} ± {std:.2f} (n={r['seeds']})")
            elif key == "deploy_bytes":
                cells.append(f"{r['deploy_bytes'] / 1024:.1f}")
            elif key == "latency_ms":
                cells.append(fmt.format(r[key]) + (" (busy CPU)" if r.get("latency_noisy") else ""))
            else:
                cells.append(fmt.format(r[key]))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("latency_noisy") for r in rows):
        latency_note += ("\n(busy CPU): latency measured while the CPU was oversubscribed; "
                         "re-measure on an idle machine (`nas deploy RUN`)")
    return "\n".join(lines) + f"\n\n{latency_note}\n"


def _plot(rows: list[dict[str, Any]], key: str, label: str, path: Path) -> None:
    acc = np.array([100 * r["acc_mean"] for r in rows])
    cost = np.array([r[key] for r in rows])
    front = pareto_mask(acc, cost)
    fig = Figure(figsize=(6, 4.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter(cost[~front], acc[~front], c="tab:gray", label="dominated")
    ax.scatter(cost[front], acc[front], c="tab:red", label="Pareto front")
    order = np.argsort(cost[front])
    ax.plot(cost[front][order], acc[front][order], c="tab:red", lw=1, alpha=0.6)
    for r, x, y in zip(rows, cost, acc):
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_savefig(fig, path, dpi=120)


def run_compare(cfg: CompareConfig) -> list[dict[str, Any]]:
    """Train (or reuse) every entry for every seed; write table, CSV and Pareto plots."""
    with open_run(cfg.name, cfg.run_dir, "compare") as run:
        run.save_config(dump_config(cfg))
        rows = []
        for entry in cfg.entries:
            log.info("compare: %s (%s)", entry.name, entry.genotype)
            results = run_train(_entry_config(cfg, entry, run.path))
            rows.append(_summarize(entry, results, cfg))
        note = (
            f"latency: deploy form, batch {cfg.latency_batch}, {cfg.latency_device}; "
            f"{cfg.train.optim.epochs} epochs on {cfg.train.data.name}, seeds {list(cfg.seeds)}"
        )
        table = format_table(rows, note)
        atomic_write_text(run / "compare.md", table)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(run / "compare.csv", buf.getvalue())
        _plot(rows, "params_M", "parameters (M)", run / "pareto_params.png")
        _plot(rows, "latency_ms", f"latency (ms, {cfg.latency_device})", run / "pareto_latency.png")
        print(table)
        return rows
