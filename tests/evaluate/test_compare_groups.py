"""Groups in `nas compare`: random-genotype baselines and multi-seed search folders."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

from nas.config import load_config
from nas.errors import ConfigError
from nas.evaluate import compare
from nas.evaluate.compare import (
    CompareConfig,
    CompareEntry,
    RandomGroup,
    expand_entries,
    format_table,
    group_summary,
    pareto_figure,
    run_compare,
    with_group_rows,
)
from nas.genotype import Genotype, load_genotype, save_genotype
from nas.spaces import get_space, random_genotype
from nas.spaces.baselines import BASELINES

SMALL = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "model.layers=3",
    "model.init_channels=4",
    "runtime.progress=false",
]


def _entries(text: str) -> CompareConfig:
    return load_config(CompareConfig, None, [f"entries={text}"])


def _check_topology(genotype: Genotype, ops: tuple[str, ...], steps: int) -> None:
    for cell in ("normal", "reduce"):
        edges, concat = genotype.cell(cell)
        assert len(edges) == 2 * steps
        assert concat == tuple(range(2, 2 + steps))
        for node in range(steps):
            (op_a, in_a), (op_b, in_b) = edges[2 * node: 2 * node + 2]
            assert op_a in ops and op_b in ops and "none" not in (op_a, op_b)
            assert in_a != in_b and 0 <= in_a < node + 2 and 0 <= in_b < node + 2


# --- random genotypes -------------------------------------------------------------------


def test_random_group_draws_are_deterministic_valid_and_seed_dependent():
    group = RandomGroup(space="full", n=5, seed=0)
    draws = group.draw()
    assert draws == RandomGroup(space="full", n=5, seed=0).draw()  # same config, same cells
    assert len(set(draws)) == 5
    space = get_space("full")
    for text in draws:
        _check_topology(Genotype.parse(text), space.ops, 4)
    # The k-th entry is the k-th draw of one random.Random(seed), in order.
    rng = random.Random(0)
    assert draws == [str(random_genotype(space, rng)) for _ in range(5)]
    assert RandomGroup(space="full", n=5, seed=1).draw() != draws
    small = RandomGroup(space="darts", n=3, seed=4, steps=2).draw()
    for text in small:
        _check_topology(Genotype.parse(text), get_space("darts").ops, 2)


def test_random_genotype_uses_every_op_but_none():
    space = get_space("full")
    rng = random.Random(7)
    counts = Counter(op for _ in range(60) for op, _ in random_genotype(space, rng).normal)
    assert set(counts) == set(space.ops) - {"none"}
    # Uniform over 12 ops: 480 edges, 40 expected each; far from uniform would fail.
    assert min(counts.values()) > 15 and max(counts.values()) < 70


# --- config errors ----------------------------------------------------------------------


@pytest.mark.parametrize("entries, field", [
    ("[{name: a, genotype: DARTS_V2}, {name: r, random: {space: full, n: 0}}]",
     "entries[1].random.n:"),
    ("[{name: r, random: {space: full}}]", "entries[0].random.n:"),
    ("[{name: r, random: {space: full, n: 2, foo: 1}}]", "'entries[0].random.foo'"),
    ("[{name: r, random: {space: nosuch, n: 2}}]", "entries[0].random.space:"),
    ("[{name: r, random: {n: 2, steps: 0}}]", "entries[0].random.steps:"),
    ("[{name: r, random: {n: two}}]", "entries[0].random.n:"),
    ("[{name: r, genotype: DARTS_V2, random: {n: 2}}]", "entries[0].random:"),
    ("[{name: a, genotype: DARTS_V2}, {name: r}]", "entries[1].genotype:"),
])
def test_bad_entries_are_one_line_errors_naming_the_field(entries, field):
    with pytest.raises(ConfigError) as info:
        _entries(entries)
    message = str(info.value)
    assert field in message and "\n" not in message


def test_existing_configs_load_unchanged():
    cfg = load_config(CompareConfig, Path(compare.__file__).parents[2] / "configs" / "compare"
                      / "quick.yaml")
    assert [(e.name, e.genotype, e.random) for e in cfg.entries] == [
        ("searched", "runs/search/quick/genotype.yaml", None), ("DARTS_V2", "DARTS_V2", None)]
    assert CompareEntry("x", "DARTS_V1").genotype == "DARTS_V1"  # positional, as quickstart


# --- expansion --------------------------------------------------------------------------


def test_random_group_expands_to_named_entries():
    cfg = _entries("[{name: rnd, random: {space: paper, n: 3, seed: 2}, init_channels: 6}, "
                   "{name: V2, genotype: DARTS_V2}]")
    members = expand_entries(cfg.entries)
    assert [m.entry.name for m in members] == ["rnd_0", "rnd_1", "rnd_2", "V2"]
    assert [m.group for m in members] == ["rnd", "rnd", "rnd", ""]
    assert [m.random for m in members] == [True, True, True, False]
    assert [m.entry.genotype for m in members[:3]] == RandomGroup("paper", 3, 2).draw()
    assert all(m.entry.random is None and m.entry.init_channels == 6 for m in members[:3])
    assert expand_entries(cfg.entries) == members


def test_expanded_names_must_not_collide():
    cfg = _entries("[{name: r, random: {n: 2}}, {name: r_1, genotype: DARTS_V2}]")
    with pytest.raises(ConfigError, match="'r_1' occurs twice"):
        expand_entries(cfg.entries)


def test_search_folders_expand_by_seed(tmp_path):
    multi = tmp_path / "multi"
    for seed, name in ((0, "DARTS_V1"), (2, "DARTS_V2"), (10, "PC_DARTS")):
        save_genotype(BASELINES[name], multi / f"seed{seed}" / "genotype.yaml")
    (multi / "seed1").mkdir()  # an unfinished seed: left out
    (multi / "summary.md").write_text("x")
    single = tmp_path / "single"
    save_genotype(BASELINES["P_DARTS"], single / "genotype.yaml")
    cfg = _entries(f"[{{name: searched, genotype: {multi}, transplant: osep}}, "
                   f"{{name: one, genotype: {single}}}]")
    members = expand_entries(cfg.entries)
    assert [m.entry.name for m in members] == ["searched_s0", "searched_s2", "searched_s10",
                                               "one"]
    assert [m.group for m in members] == ["searched"] * 3 + [""]
    assert not any(m.random for m in members)
    loaded = [load_genotype(m.entry.genotype) for m in members]
    assert loaded == [BASELINES[n] for n in ("DARTS_V1", "DARTS_V2", "PC_DARTS", "P_DARTS")]
    assert members[0].entry.transplant == "osep"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        expand_entries(_entries(f"[{{name: a, genotype: DARTS_V2}}, "
                                f"{{name: b, genotype: {tmp_path / 'empty'}}}]").entries)
    assert str(info.value).startswith("entries[1].genotype: folder") and "\n" not in str(info.value)


# --- group rows -------------------------------------------------------------------------


def _row(name: str, group: str, acc: float, params: float, noisy: bool = False) -> dict:
    return {"name": name, "genotype": "g", "channels": 8, "seeds": 2, "acc_mean": acc,
            "acc_std": 0.05, "params_M": params, "macs_M": 10 * params, "deploy_bytes": 1000.0,
            "latency_ms": params + 1, "latency_noisy": noisy, "train_images_per_s": 100.0,
            "peak_train_mem_MB": float("nan"), "group": group}


def test_group_summary_is_mean_and_std_over_member_means():
    members = [_row("r_0", "r", 0.5, 1.0), _row("r_1", "r", 0.6, 2.0, noisy=True),
               _row("r_2", "r", 0.7, 6.0)]
    s = group_summary("r", members)
    assert s["name"] == "r (n=3)" and s["group"] == "r" and s["genotype"] == ""
    assert s["acc_mean"] == pytest.approx(0.6)
    assert s["acc_std"] == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7 (not the 0.05s)
    assert s["params_M"] == pytest.approx(3.0) and s["macs_M"] == pytest.approx(30.0)
    assert s["latency_ms"] == pytest.approx(4.0) and s["latency_noisy"] is True
    assert s["members"] == 3 and s["seeds"] == 6 and s["channels"] == 8
    assert math.isnan(s["peak_train_mem_MB"])
    # A member without accuracy does not count; one member has std 0.
    lone = group_summary("r", [_row("a", "r", 0.8, 1.0), _row("b", "r", float("nan"), 3.0)])
    assert lone["acc_mean"] == pytest.approx(0.8) and lone["acc_std"] == 0.0
    assert lone["members"] == 1 and lone["params_M"] == pytest.approx(2.0)


def test_group_rows_follow_their_last_member_and_render():
    rows = [_row("r_0", "r", 0.5, 1.0), _row("V2", "", 0.9, 3.0), _row("r_1", "r", 0.7, 2.0)]
    out = with_group_rows(rows)
    assert [r["name"] for r in out] == ["r_0", "V2", "r_1", "r (n=2)"]
    table = format_table(out, "note")
    assert "| r (n=2) | 8 | 60.00 ± 14.14 (n=2 genotypes) |" in table
    assert "| V2 | 8 | 90.00 ± 5.00 (n=2) |" in table
    assert "Group rows" in table
    assert "Group rows" not in format_table(rows[1:2], "note")


def _error_bars(rows: list[dict], key: str) -> dict[float, tuple[float, float]]:
    """x -> (low, high) of each error bar on the Pareto plot of ``rows`` against ``key``."""
    ax = pareto_figure(rows, key, key, clouds=["r"]).axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    out = {}
    for bar in bars:
        for segment in bar.lines[2][0].get_segments():
            (x0, y0), (x1, y1) = segment
            assert x0 == x1
            out[float(x0)] = (float(min(y0, y1)), float(max(y0, y1)))
    return out


def test_pareto_plots_show_the_seed_spread_as_error_bars():
    """± one std over the training seeds around each multi-seed entry's mean; none for a
    single-seed entry, none for a group's summary row (not plotted at all)."""
    one = {**_row("V1", "", 0.8, 4.0), "seeds": 1, "acc_std": 0.0}
    rows = with_group_rows([_row("r_0", "r", 0.5, 1.0), _row("r_1", "r", 0.7, 2.0),
                            {**_row("V2", "", 0.9, 3.0), "acc_std": 0.02}, one])
    for key in ("params_M", "latency_ms"):
        bars = _error_bars(rows, key)
        x = {r["name"]: r[key] for r in rows}
        assert sorted(bars) == pytest.approx(sorted([x["r_0"], x["r_1"], x["V2"]]))
        assert bars[x["r_0"]] == pytest.approx((45.0, 55.0))  # 100 * (0.5 ± 0.05)
        assert bars[x["V2"]] == pytest.approx((88.0, 92.0))
        assert x["V1"] not in bars and x["r (n=2)"] not in bars
    assert _error_bars([one], "params_M") == {}  # all single-seed: no error bars at all


# --- end to end -------------------------------------------------------------------------


def test_compare_random_group_end_to_end(tmp_path, monkeypatch):
    figures = {}
    save = compare.atomic_savefig

    def keep(fig, path, **kw):
        figures[Path(path).name] = fig
        return save(fig, path, **kw)

    monkeypatch.setattr(compare, "atomic_savefig", keep)
    cfg = load_config(CompareConfig, None, [
        f"run_dir={tmp_path / 'cmp'}",
        "train.optim.epochs=1",
        *[f"train.{o}" for o in SMALL],
        "entries=[{name: rnd, random: {space: full, n: 2, seed: 3, steps: 2}}, "
        "{name: DARTS_V2, genotype: DARTS_V2}]",
        "seeds=[0, 1]",
    ])
    rows = run_compare(cfg)
    run = tmp_path / "cmp"
    with open(run / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["rnd_0", "rnd_1", "rnd (n=2)", "DARTS_V2"]
    assert [r["group"] for r in table] == ["rnd", "rnd", "rnd", ""]
    assert [r["members"] for r in table] == ["", "", "2", ""]
    # Each random genotype is rebuildable from the CSV and is what was trained.
    draws = RandomGroup("full", 2, 3, steps=2).draw()
    for k in range(2):
        assert table[k]["genotype"] == draws[k]
        trained = load_genotype(run / f"rnd_{k}" / "seed0" / "genotype.yaml")
        assert trained == Genotype.parse(table[k]["genotype"])
        accs = [json.loads((run / f"rnd_{k}" / f"seed{s}" / "result.json").read_text())[
            "test_acc"] for s in (0, 1)]
        assert rows[k]["acc_mean"] == pytest.approx(sum(accs) / 2)
        assert table[k]["acc_per_seed"] == f"{accs[0]:.4f} {accs[1]:.4f}"  # seed order
    assert table[2]["acc_per_seed"] == ""  # a group row has no seeds of its own
    sig = (run / "significance.md").read_text()  # two seeds: each entry tested
    assert "| rnd_0 | DARTS_V2 | training seeds | 2 vs 2 |" in sig
    assert "| rnd_1 | DARTS_V2 | training seeds | 2 vs 2 |" in sig
    assert rows[2]["acc_mean"] == pytest.approx((rows[0]["acc_mean"] + rows[1]["acc_mean"]) / 2)
    assert rows[2]["params_M"] == pytest.approx((rows[0]["params_M"] + rows[1]["params_M"]) / 2)
    assert "rnd: 2 genotypes drawn uniformly" in (run / "compare.md").read_text()
    for name in ("pareto_params.png", "pareto_latency.png"):
        assert (run / name).stat().st_size > 1000
        ax = figures[name].axes[0]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "rnd (n=2)" in labels and "Pareto front" in labels
        notes = {t.get_text() for t in ax.texts}
        assert "DARTS_V2" in notes
        assert not notes & {"rnd_0", "rnd_1", "rnd (n=2)"}  # unlabelled cloud, no summary
        # Plotted: the 3 individual entries only (the cloud first), never the group mean.
        key = "params_M" if name == "pareto_params.png" else "latency_ms"
        xs = {float(x) for c in ax.collections if isinstance(c, PathCollection)
              for x, _ in c.get_offsets()}
        assert sorted(xs) == pytest.approx(sorted({rows[i][key] for i in (0, 1, 3)}))
        assert rows[2][key] not in xs
        assert len(ax.collections[0].get_offsets()) == 2
