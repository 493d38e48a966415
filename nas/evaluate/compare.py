"""``nas compare CONFIG``: train genotypes under one recipe and seeds, tabulate, plot Pareto.

Each (entry, seed) is an ordinary training run under ``<run>/<entry>/seed<N>``; finished
runs are reused and unfinished ones resume, so a comparison can be stopped and restarted.

Two kinds of config entry expand into a *group* of ordinary entries before anything is
trained (:func:`expand_entries`), so that one searched cell is not compared against
baselines on the strength of a single lucky draw:

- ``random: {space, n, seed}``: ``n`` genotypes drawn uniformly from a space with
  ``random.Random(seed)`` (entries ``<name>_0 .. <name>_{n-1}``), the random-architecture
  baseline a search has to beat;
- ``genotype: FOLDER`` of a multi-seed search (``FOLDER/seed<N>/genotype.yaml``): one
  entry per search seed (``<name>_s<N>``). A single search run folder (``FOLDER/genotype.yaml``)
  is one ordinary entry.

Every group also gets a summary row (mean ± std of its members' accuracies, mean costs).

On the command line an entry is addressed by name: ``entries.searched=runs/search/x`` sets
its genotype (any source above), ``entries.O_DARTS.init_channels=42`` any other key. Every
genotype is resolved before anything is trained (:func:`check_members`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import random
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas.config import dump_config
from nas.cost.counts import count_bytes
from nas.cost.timing import measure_latency
from nas.deploy import to_deploy
from nas.errors import ConfigError, NasError
from nas.evaluate.deploy_report import load_trained
from nas.evaluate.significance import format_significance, significance_rows
from nas.evaluate.table import format_table, is_summary
from nas.evaluate.train import TrainConfig, TrainResult, run_train
from nas.pareto import pareto_mask
from nas.run import atomic_savefig, atomic_write_text, relative_path
from nas.runtime import open_run
from nas.spaces import SearchSpace, get_space, random_genotype
from nas.spaces.baselines import BASELINES, resolve_genotype
from nas.threads import cpu_oversubscribed

__all__ = [
    "CompareConfig", "CompareEntry", "RandomGroup", "Member", "expand_entries", "check_members",
    "group_summary", "with_group_rows", "run_compare", "format_table", "pareto_figure",
]

log = logging.getLogger("nas")


@dataclasses.dataclass(frozen=True)
class RandomGroup:
    """``n`` genotypes drawn uniformly from a space (:func:`nas.spaces.random_genotype`),
    in order from one ``random.Random(seed)``: the same config always draws the same ones.

    ``space``: a shipped space name or a space YAML file (as ``space.name`` of a search);
    ``steps``/``multiplier`` as in a search's ``space`` (``multiplier`` unset: ``steps``).
    """

    space: str = "full"
    n: int | None = None
    seed: int = 0
    steps: int = 4
    multiplier: int | None = None

    def build_space(self) -> SearchSpace:
        return get_space(self.space, None, self.steps, 2, self.multiplier or self.steps)

    def draw(self) -> list[str]:
        """The ``n`` genotypes as DARTS strings (what the entries train and the CSV holds)."""
        rng = random.Random(self.seed)
        space = self.build_space()
        return [str(random_genotype(space, rng)) for _ in range(self.n or 0)]

    def check(self, field: str) -> None:
        """One-line ConfigError naming ``field.<key>`` (the entry's position in the list)."""
        if self.n is None or self.n < 1:
            raise ConfigError(f"{field}.n: number of random genotypes, >= 1, got {self.n}")
        if self.steps < 1:
            raise ConfigError(f"{field}.steps: must be >= 1, got {self.steps}")
        if self.multiplier is not None and not 1 <= self.multiplier <= self.steps:
            raise ConfigError(
                f"{field}.multiplier: must be in 1..steps ({self.steps}), got {self.multiplier}"
            )
        try:
            self.build_space()
        except ConfigError as exc:
            raise ConfigError(f"{field}.space: {exc}") from None


@dataclasses.dataclass(frozen=True)
class CompareEntry:
    """One config entry: a genotype (baseline name, file, DARTS string or search run folder)
    or a ``random`` group, optionally transplanted / at its own width."""

    #: ``nas compare CONFIG entries.NAME=VALUE`` sets this key of entry NAME
    #: (:func:`nas.config.load_config`), e.g. ``entries.searched=runs/search/pcdarts_cifar10``.
    OVERRIDE_KEY: ClassVar[str] = "genotype"

    name: str
    genotype: str = ""
    init_channels: int | None = None
    transplant: str | None = None
    random: RandomGroup | None = None


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
    #: compare.csv names genotype files and folders relative to this folder (default: the
    #: run folder), never as absolute paths of the machine that ran (experiments: their own
    #: folder, so committed results read the same on any checkout)
    paths_relative_to: str | None = None

    def validate(self) -> None:
        if not self.entries:
            raise ConfigError("entries: at least one genotype to compare")
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ConfigError(f"entries: duplicate names in {names}")
        for i, e in enumerate(self.entries):
            if not e.name.replace("-", "_").replace(".", "_").isidentifier():
                raise ConfigError(f"entries: name {e.name!r} must be a simple identifier")
            if e.random is not None and e.genotype.strip():
                raise ConfigError(f"entries[{i}].random: set either genotype or random, not both")
            if e.random is None and not e.genotype.strip():
                raise ConfigError(
                    f"entries[{i}].genotype: missing (a baseline name, genotype file, DARTS "
                    "string or search run folder), or set random: {space, n, seed}"
                )
            if e.random is not None:
                e.random.check(f"entries[{i}].random")
        if not self.seeds:
            raise ConfigError("seeds: at least one seed")


@dataclasses.dataclass(frozen=True)
class Member:
    """A concrete entry to train (``genotype`` set, no ``random``) and where it came from:
    ``group`` is the config entry's name when that entry expanded into several."""

    entry: CompareEntry
    group: str = ""
    random: bool = False


_SEED_DIR = re.compile(r"seed(\d+)")


def _names_path(spec: str) -> bool:
    """``spec`` can only be a file or folder: no baseline name, DARTS string or JSON text."""
    spec = spec.strip()
    return bool(spec) and (spec.upper().replace("-", "_") not in BASELINES
                           and not spec.startswith(("Genotype(", "{")))


def _search_folder(spec: str) -> Path | None:
    """``spec`` as a folder (a search run or a multi-seed search), else None."""
    path = Path(spec.strip()).expanduser()
    return path if _names_path(spec) and path.is_dir() else None


def _folder_members(i: int, entry: CompareEntry, folder: Path) -> list[Member]:
    seeds = []
    for sub in folder.iterdir():
        match = _SEED_DIR.fullmatch(sub.name)
        if match and sub.is_dir():
            if (sub / "genotype.yaml").is_file():
                seeds.append((int(match.group(1)), sub / "genotype.yaml"))
            else:
                log.warning("compare: entries[%d]: %s has no genotype.yaml (search unfinished?); "
                            "left out", i, sub)
    if seeds:
        return [
            Member(dataclasses.replace(entry, name=f"{entry.name}_s{n}", genotype=str(path)),
                   group=entry.name)
            for n, path in sorted(seeds)
        ]
    if (folder / "genotype.yaml").is_file():
        return [Member(dataclasses.replace(entry, genotype=str(folder / "genotype.yaml")))]
    raise ConfigError(
        f"entries[{i}].genotype: folder {folder} holds neither genotype.yaml nor "
        "seed<N>/genotype.yaml (a finished `nas search` run folder)"
    )


def expand_entries(entries: Sequence[CompareEntry]) -> list[Member]:
    """Config entries -> the entries to train: random groups drawn, search folders read.

    Raises:
        ConfigError: a folder without genotypes, or expanded names that collide.
    """
    members: list[Member] = []
    for i, entry in enumerate(entries):
        if entry.random is not None:
            entry.random.check(f"entries[{i}].random")
            members += [
                Member(dataclasses.replace(entry, name=f"{entry.name}_{k}", genotype=text,
                                           random=None), group=entry.name, random=True)
                for k, text in enumerate(entry.random.draw())
            ]
        elif (folder := _search_folder(entry.genotype)) is not None:
            members += _folder_members(i, entry, folder)
        else:
            members.append(Member(entry))
    seen: set[str] = set()
    for m in members:
        if m.entry.name in seen:
            raise ConfigError(f"entries: name {m.entry.name!r} occurs twice after expanding "
                              "random groups and search folders; rename an entry")
        seen.add(m.entry.name)
    return members


_GENOTYPE_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".txt")


def _missing_path(spec: str) -> bool:
    """``spec`` reads as a file or folder path (not a baseline or DARTS string) that is not
    there, e.g. the shipped configs' default search folder before that search ran."""
    spec = spec.strip()
    if not _names_path(spec):
        return False
    looks = "/" in spec or spec.lower().endswith(_GENOTYPE_FILE_SUFFIXES)
    return looks and not Path(spec).expanduser().exists()


def _portable_spec(spec: str, base: Path) -> str:
    """A genotype file or folder as a path relative to ``base``; any other spec as it is."""
    path = Path(spec.strip()).expanduser()
    return relative_path(path, base) if _names_path(spec) and path.exists() else spec


def check_members(members: Sequence[Member], config: str) -> None:
    """Every member's genotype resolves, before anything is trained.

    Raises:
        ConfigError: one line naming the entry; for a missing search folder or file, the
            override that points the entry elsewhere (``entries.NAME=RUN_DIR``).
    """
    for m in members:
        entry, label = m.entry, m.group or m.entry.name
        if _missing_path(entry.genotype):
            raise ConfigError(
                f"entries.{label}: genotype {entry.genotype.strip()} does not exist (no search "
                "run folder or genotype file there); run that search first, or point the "
                f"entry at yours: nas compare {config} entries.{label}=RUN_DIR"
            )
        try:
            resolve_genotype(entry.genotype, entry.transplant)
        except NasError as exc:
            raise ConfigError(f"entries.{label}: {exc}") from None


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
    entry: CompareEntry, results: list[TrainResult], cfg: CompareConfig, base: Path
) -> dict[str, Any]:
    """One table row; paths in it are relative to ``base``."""
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
        "genotype": (_portable_spec(entry.genotype, base)
                     + (f"+{entry.transplant}" if entry.transplant else "")),
        "channels": results[0].init_channels,
        "seeds": len(accs),
        "acc_mean": statistics.mean(accs) if accs else float("nan"),
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        # each training seed's accuracy (CSV only): for tests across entries, not just ±
        "acc_per_seed": " ".join(f"{a:.4f}" for a in accs),
        "params_M": results[0].params / 1e6,
        "macs_M": results[0].macs / 1e6,
        "deploy_bytes": count_bytes(deployed),
        "latency_ms": latency,
        "latency_noisy": busy,
        "train_images_per_s": statistics.mean(speeds) if speeds else float("nan"),
        "peak_train_mem_MB": max(mems) if mems else float("nan"),
    }


def _finite_mean(values: list[Any]) -> float:
    vals = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return statistics.mean(vals) if vals else float("nan")


def group_summary(group: str, members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary row of a group: accuracy mean ± std over the members' own mean
    accuracies (one number per genotype, not per training run), costs as means.

    ``members`` are individual rows (as :func:`run_compare` makes them); ``members`` in the
    result counts those with an accuracy, ``seeds`` the training runs behind it.
    """
    accs = [m["acc_mean"] for m in members if not math.isnan(m["acc_mean"])]
    channels = {m["channels"] for m in members}
    return {
        "name": f"{group} (n={len(members)})",
        "genotype": "",
        "channels": channels.pop() if len(channels) == 1 else "",
        "seeds": sum(m["seeds"] for m in members),
        "acc_mean": statistics.mean(accs) if accs else float("nan"),
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        **{key: _finite_mean([m[key] for m in members]) for key in (
            "params_M", "macs_M", "deploy_bytes", "latency_ms", "train_images_per_s",
            "peak_train_mem_MB")},
        "latency_noisy": any(m.get("latency_noisy") for m in members),
        "group": group,
        "members": len(accs),
    }


def with_group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each group's summary row inserted after its last member."""
    last = {r["group"]: i for i, r in enumerate(rows) if r.get("group")}
    out = []
    for i, row in enumerate(rows):
        out.append(row)
        group = row.get("group")
        if group and last[group] == i:
            out.append(group_summary(group, [r for r in rows if r.get("group") == group]))
    return out


_CLOUD_COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:cyan")


def pareto_figure(
    rows: list[dict[str, Any]], key: str, label: str, clouds: Sequence[str] = (),
) -> Figure:
    """Accuracy against ``key``. Only individual entries are drawn (group summary rows are
    in the table) and the front is over them; members of the random groups named in
    ``clouds`` are a light unlabelled cloud with one legend entry per group. Each entry
    trained with several seeds has an error bar of ± one std over those seeds, so a gap
    smaller than the seed noise shows as such; a single-seed entry has none."""
    singles = [r for r in rows if not is_summary(r)]
    acc = np.array([100 * r["acc_mean"] for r in singles])
    cost = np.array([r[key] for r in singles], dtype=float)
    front = pareto_mask(acc, cost)
    cloud = np.array([r.get("group") in clouds for r in singles], dtype=bool)
    fig = Figure(figsize=(6, 4.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for group, color in zip(clouds, _CLOUD_COLORS * (len(clouds) // 5 + 1)):
        mask = np.array([r.get("group") == group for r in singles], dtype=bool)
        ax.scatter(cost[mask], acc[mask], s=16, c=color, alpha=0.35, edgecolors="none",
                   label=f"{group} (n={int(mask.sum())})")
    plain = ~cloud
    if (plain & ~front).any():
        ax.scatter(cost[plain & ~front], acc[plain & ~front], c="tab:gray", label="dominated")
    ax.scatter(cost[plain & front], acc[plain & front], c="tab:red", label="Pareto front")
    if (cloud & front).any():  # a random genotype on the front: ringed, still unlabelled
        ax.scatter(cost[cloud & front], acc[cloud & front], s=30, facecolors="none",
                   edgecolors="tab:red")
    spread = np.array([r["seeds"] > 1 for r in singles], dtype=bool)
    if spread.any():
        std = np.array([100 * r["acc_std"] for r in singles])
        ax.errorbar(cost[spread], acc[spread], yerr=std[spread], fmt="none", ecolor="tab:gray",
                    elinewidth=0.8, capsize=2, alpha=0.7, zorder=1,
                    label="± 1 std over training seeds")
    order = np.argsort(cost[front])
    ax.plot(cost[front][order], acc[front][order], c="tab:red", lw=1, alpha=0.6)
    for r, x, y, in_cloud in zip(singles, cost, acc, cloud):
        if not in_cloud:
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _random_note(cfg: CompareConfig) -> str:
    lines = []
    for e in cfg.entries:
        if e.random is not None:
            r, space = e.random, e.random.build_space()
            lines.append(
                f"{e.name}: {r.n} genotypes drawn uniformly (two distinct inputs per node, no "
                f"'none') from space {r.space!r}, {space.steps} steps, random.Random({r.seed}); "
                f"each one's DARTS string is the genotype column of compare.csv"
            )
    return "".join(f"\n{line}" for line in lines)


def _write_csv(rows: list[dict[str, Any]]) -> str:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run_compare(cfg: CompareConfig) -> list[dict[str, Any]]:
    """Train (or reuse) every entry for every seed; write table, CSV and Pareto plots.

    Returns the rows: one per trained entry (``group`` names its group, or ``""``), and
    after each group's members its summary row (:func:`group_summary`).
    """
    members = expand_entries(cfg.entries)  # before the run folder: a bad folder stops here
    check_members(members, cfg.name)
    with open_run(cfg.name, cfg.run_dir, "compare") as run:
        run.save_config(dump_config(cfg))
        base = Path(cfg.paths_relative_to).expanduser() if cfg.paths_relative_to else run.path
        rows = []
        for m in members:
            entry = m.entry
            log.info("compare: %s (%s)", entry.name, entry.genotype)
            results = run_train(_entry_config(cfg, entry, run.path))
            rows.append({**_summarize(entry, results, cfg, base), "group": m.group})
        rows = with_group_rows(rows)
        note = (
            f"latency: deploy form, batch {cfg.latency_batch}, {cfg.latency_device}; "
            f"{cfg.train.optim.epochs} epochs on {cfg.train.data.name}, seeds {list(cfg.seeds)}"
        ) + _random_note(cfg)
        table = format_table(rows, note)
        atomic_write_text(run / "compare.md", table)
        atomic_write_text(run / "compare.csv", _write_csv(rows))
        tests = significance_rows(rows)  # one seed: only groups (member means) to test
        if tests:
            atomic_write_text(run / "significance.md", format_significance(tests))
        clouds = list(dict.fromkeys(m.group for m in members if m.random))
        for key, label, name in (
            ("params_M", "parameters (M)", "pareto_params.png"),
            ("latency_ms", f"latency (ms, {cfg.latency_device})", "pareto_latency.png"),
        ):
            atomic_savefig(pareto_figure(rows, key, label, clouds), run / name, dpi=120)
        print(table)
        return rows
