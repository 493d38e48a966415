"""Latency tables (``nas latency-table``): building, files, and their use by both searches."""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

import pytest
import torch

import nas.cost.timing
import nas.search.mo.trial as trial_mod
from nas.cli.latency_table import add_latency_table_parser
from nas.config import load_config
from nas.cost.lookup import build_table
from nas.cost.table import LatencyTable, OpKey, PartKey, load_table, network_layout
from nas.errors import ConfigError
from nas.genotype import Genotype
from nas.network import NetworkCIFAR
from nas.ops.primitives import FactorizedReduce
from nas.run import RunDir
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob
from nas.search.latency_table import data_shape, search_requirements
from nas.search.mo.trial import MOConfig, check_inputs, mo_requirements, run_trial
from nas.search.supernet.model import Supernet
from nas.spaces import get_space, random_genotype

OPS = "[none, skip_connect, sep_conv_3x3, c2sp_conv_2x2]"
DATA = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=16",
    "data.eval_batch_size=48",
    f"space.ops={OPS}",
    "space.steps=2",
    "space.multiplier=2",
    "runtime.device=cpu",
    "runtime.progress=false",
]
SEARCH = [*DATA, "model.init_channels=4", "model.layers=3"]
MO = [*DATA, "budget.epochs=1", "budget.init_channels=4", "budget.layers=3",
      "population_size=2"]
FAST = ["--repeats", "2", "--warmup", "1"]


def _cli(argv: list[str]) -> int:
    """``nas latency-table ...`` through its own parser (what nas.cli.main wires in)."""
    parser = argparse.ArgumentParser(prog="nas")
    add_latency_table_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["latency-table", *argv])
    return args.func(args)


def _no_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("latency was measured although a table was given")

    monkeypatch.setattr(nas.cost.timing, "measure_latency", refuse)
    monkeypatch.setattr(trial_mod, "measure_latency", refuse)


def _hand_table(ops: set[OpKey], parts: set[PartKey], path: Path,
                expensive: str | None = None) -> LatencyTable:
    """Distinct, made-up latencies: every (op, shape) and part has its own value."""
    op_ms = {k: (1000.0 if k.op == expensive else 0.01 * (i + 1))
             for i, k in enumerate(sorted(ops))}
    part_ms = {k: 0.5 + 0.01 * i for i, k in enumerate(sorted(parts))}
    table = LatencyTable({"device": "cpu", "device_key": "hand", "batch_size": 1}, op_ms, part_ms)
    table.save(path)
    return table


def _search_cfg(*extra: str) -> SearchConfig:
    return load_config(SearchConfig, None, [*SEARCH, *extra])


def _mo_cfg(*extra: str) -> MOConfig:
    return load_config(MOConfig, None, [*MO, *extra])


# --- layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("layers,size,steps", [(3, 8, 2), (5, 9, 3), (8, 16, 4)])
def test_layout_edge_shapes_match_the_supernet(layers: int, size: int, steps: int) -> None:
    space = get_space("tiny", ["skip_connect", "max_pool_3x3"], steps, 2, steps)
    net = Supernet(space, 3, 4, layers, in_channels=3, fused=False)
    layout = network_layout(4, layers, 3, (size, size), 3, steps)
    assert layout.edge_shapes(steps) == net.edge_shapes((size, size))


def _observed(model: NetworkCIFAR, genotype: Genotype, image: tuple[int, int, int]
              ) -> tuple[list[OpKey], list[PartKey]]:
    """The (op, shape) of every edge and fixed part a real forward pass runs, from hooks."""
    ops: list[OpKey] = []
    parts: list[PartKey] = []
    hooks = []

    def add(module, record):
        hooks.append(module.register_forward_hook(
            lambda m, i, o: record(i[0].shape, o.shape)))

    def stride(i, o) -> int:
        return 2 if o[-1] < i[-1] else 1

    for cell in model.cells:
        edges = genotype.reduce if cell.reduction else genotype.normal
        for (name, _), op in zip(edges, cell._ops):
            add(op, lambda i, o, name=name: ops.append(OpKey(name, i[1], stride(i, o), *i[2:])))
        pre0 = "factorized_reduce" if isinstance(cell.preprocess0, FactorizedReduce) else \
            "relu_conv_bn"
        add(cell.preprocess0,
            lambda i, o, p=pre0: parts.append(PartKey(p, i[1], o[1], stride(i, o), *i[2:])))
        add(cell.preprocess1,
            lambda i, o: parts.append(PartKey("relu_conv_bn", i[1], o[1], 1, *i[2:])))
    add(model.stem, lambda i, o: parts.append(PartKey("stem", i[1], o[1], 1, *i[2:])))
    add(model.global_pooling, lambda i, o: parts.append(
        PartKey("head", i[1], model.classifier.out_features, 1, *i[2:])))
    with torch.no_grad():
        model.eval()(torch.randn(1, *image))
    for h in hooks:
        h.remove()
    return ops, parts


@pytest.mark.parametrize("layers,size", [(3, 8), (5, 9)])
def test_layout_keys_are_what_the_network_runs(layers: int, size: int) -> None:
    space = get_space("tiny", ["skip_connect", "sep_conv_3x3", "max_pool_3x3"], 3, 2, 3)
    genotype = random_genotype(space, random.Random(layers))
    model = NetworkCIFAR(4, 5, layers, False, genotype, in_channels=2)
    ops, parts = _observed(model, genotype, (2, size, size))
    layout = network_layout(4, layers, 2, (size, size), 5, 3)
    want_ops, want_parts = layout.genotype_keys(genotype)
    assert sorted(ops) == sorted(want_ops)
    assert sorted(parts) == sorted(want_parts)


# --- building -------------------------------------------------------------------------


def test_cli_builds_a_table_with_every_pair_the_supernet_needs(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "lut.json"
    assert _cli(["quick", *SEARCH, "--kind", "search", "--out", str(out), *FAST]) == 0
    table = load_table(out)
    cfg = _search_cfg()
    shape, classes = data_shape(cfg.data)
    assert shape == (3, 8, 8) and classes == 3
    need = search_requirements(cfg, shape, classes)
    assert set(table.ops) == need
    assert {k.op for k in need} == {"none", "skip_connect", "sep_conv_3x3", "c2sp_conv_2x2"}
    assert {k.stride for k in need} == {1, 2}
    assert all(ms > 0 for ms in table.ops.values())
    assert table.parts == {}
    meta = table.metadata
    assert meta["device"] == "cpu" and meta["batch_size"] == 1 and meta["repeats"] == 2
    assert meta["config_kind"] == "search" and meta["image"] == [3, 8, 8]
    for key in ("device_key", "torch", "threads", "date", "config", "warmup"):
        assert meta[key] not in (None, ""), key
    assert not list(out.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_cli_builds_an_mo_table_with_fixed_parts(tmp_path: Path) -> None:
    out = tmp_path / "mo.json"
    assert _cli(["quick", *MO, "--kind", "mo", "--out", str(out), *FAST]) == 0
    table = load_table(out)
    ops, parts = mo_requirements(_mo_cfg(), (3, 8, 8), 3)
    assert set(table.ops) == ops and set(table.parts) == parts
    assert "none" not in {k.op for k in ops}  # trial networks never run it
    assert {p.part for p in parts} == {"stem", "relu_conv_bn", "factorized_reduce", "head"}
    assert table.metadata["config_kind"] == "mo"


def test_cli_argument_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--repeats must be >= 1"):
        _cli(["quick", "--kind", "search", "--repeats", "0"])
    with pytest.raises(ConfigError, match="--kind search or --kind mo"):
        _cli(["quick", "--out", str(tmp_path / "x.json")])  # a shipped name of both kinds
    with pytest.raises(ConfigError, match="is a folder"):
        _cli(["quick", "--kind", "search", "--out", str(tmp_path)])


def test_cli_detects_the_config_kind_of_a_file(tmp_path: Path) -> None:
    config = tmp_path / "my_mo.yaml"
    config.write_text("trial_kind: genotype\nobjectives: [val_acc, latency]\n")
    out = tmp_path / "lut.json"
    assert _cli([str(config), *MO, "--out", str(out), *FAST]) == 0
    assert load_table(out).metadata["config_kind"] == "mo"


def test_onnxruntime_device_times_ops() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    keys = [OpKey("sep_conv_3x3", 4, 1, 8, 8), OpKey("c2sp_conv_2x2", 4, 2, 8, 8),
            OpKey("skip_connect", 4, 1, 8, 8)]
    part = PartKey("factorized_reduce", 8, 4, 2, 8, 8)
    table = build_table(keys, [part], "onnxruntime", warmup=1, repeats=2, progress=False)
    assert set(table.ops) == set(keys) and set(table.parts) == {part}
    assert all(ms > 0 for ms in [*table.ops.values(), *table.parts.values()])
    assert table.metadata["device"] == "onnxruntime"
    assert table.metadata["device_key"].startswith("onnxruntime")


def test_onnxruntime_times_c2sp_in_the_form_nas_export_ships(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The table's ONNX Runtime timings run what `nas export` writes: C2sp as pad + concat,
    not the slice-assignment (ScatterND) graph that a plain export of the op gives."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import nas.cost.onnx as cost_onnx
    from nas.cost.lookup import op_module

    timed: list[bytes] = []
    real_runner = cost_onnx.ort_runner

    def recording(data: bytes, threads: int | None = None):
        timed.append(data)
        return real_runner(data, threads)

    monkeypatch.setattr(cost_onnx, "ort_runner", recording)
    build_table([OpKey("c2sp_conv_2x2", 4, 1, 8, 8)], [], "onnxruntime", warmup=1, repeats=1,
                progress=False)

    def op_types(data: bytes) -> set[str]:
        return {node.op_type for node in onnx.load_from_string(data).graph.node}

    assert len(timed) == 1 and "ScatterND" not in op_types(timed[0])
    plain, _ = cost_onnx.onnx_bytes(op_module("c2sp_conv_2x2", 4, 1), torch.randn(2, 4, 8, 8))
    assert "ScatterND" in op_types(plain)  # what the table would time without export_form


def test_missing_onnxruntime_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r'pip install "nas-effconv\[export\]"'):
        build_table([OpKey("skip_connect", 4, 1, 8, 8)], device="onnxruntime")


# --- files ----------------------------------------------------------------------------

_GOOD_META = {"device": "cpu", "batch_size": 1}
_ENTRY = {"op": "sep_conv_3x3", "C": 4, "stride": 1, "H": 8, "W": 8, "ms": 0.5}


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ('{"sep_conv_3x3|4|1|8|8": 0.1}', "not a latency table"),  # the local cache format
    ("[1, 2]", "not a latency table"),
    (json.dumps({"format": "nas-latency-table", "version": 99, "metadata": _GOOD_META,
                 "entries": []}), "format version 99"),
    (json.dumps({"format": "nas-latency-table", "version": 1, "metadata": {},
                 "entries": []}), "metadata"),
    (json.dumps({"format": "nas-latency-table", "version": 1, "metadata": _GOOD_META,
                 "entries": [{**_ENTRY, "ms": -1}]}), r"entries\[0\]: ms must be"),
    (json.dumps({"format": "nas-latency-table", "version": 1, "metadata": _GOOD_META,
                 "entries": [{"op": "sep_conv_3x3", "C": 4, "ms": 0.5}]}), r"entries\[0\]"),
    (json.dumps({"format": "nas-latency-table", "version": 1, "metadata": _GOOD_META,
                 "entries": [{**_ENTRY, "C": "4"}]}), "positive integers"),
    (json.dumps({"format": "nas-latency-table", "version": 1, "metadata": _GOOD_META,
                 "entries": [_ENTRY, _ENTRY]}), r"entries\[1\] repeats"),
    ('{"format": "nas-latency-table", "version": 1, "metadata": {"device": "cpu", '
     '"batch_size": 1}, "entries": [{"op": "x", "C": 1, "stride": 1, "H": 1, "W": 1, '
     '"ms": NaN}]}', "finite"),
])
def test_bad_table_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_table(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_table_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file; build one with `nas latency-table"):
        load_table(tmp_path / "absent.json")


def test_saved_table_round_trips(tmp_path: Path) -> None:
    ops = {OpKey("sep_conv_3x3", 4, 1, 8, 8), OpKey("none", 4, 2, 8, 8)}
    parts = {PartKey("stem", 3, 12, 1, 8, 8)}
    table = _hand_table(ops, parts, tmp_path / "t.json")
    loaded = load_table(tmp_path / "t.json")
    assert loaded.ops == table.ops and loaded.parts == table.parts
    assert loaded.metadata == table.metadata


# --- nas search with cost.table ---------------------------------------------------------


def _search_table(tmp_path: Path, expensive: str | None = None) -> tuple[SearchConfig, Path,
                                                                        LatencyTable]:
    cfg = _search_cfg()
    shape, classes = data_shape(cfg.data)
    path = tmp_path / "lut.json"
    table = _hand_table(search_requirements(cfg, shape, classes), set(), path, expensive)
    return cfg, path, table


def test_search_cost_tensor_is_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    _no_timing(monkeypatch)
    _, path, table = _search_table(tmp_path, expensive="sep_conv_3x3")
    cfg = _search_cfg("cost.metric=latency", "cost.weight=0.5", f"cost.table={path}",
                      f"run_dir={tmp_path / 'run'}")
    job = SearchJob(cfg, RunDir(tmp_path / "run"))
    shapes = job.model.edge_shapes((8, 8))
    ops = job.space.ops
    assert job.cost is not None and job.cost.shape == (3, len(shapes[0]), len(ops))
    for c, row in enumerate(shapes):
        for e, shape in enumerate(row):
            for o, op in enumerate(ops):
                assert job.cost[c, e, o].item() == pytest.approx(table.ops[OpKey(op, *shape)])
    expensive = job.cost[..., ops.index("sep_conv_3x3")]
    assert torch.all(expensive == 1000.0)
    w_n, w_r = job.model.op_weights(False), job.model.op_weights(True)
    reduce = torch.tensor([c.reduction for c in job.model.cells])
    manual = (job.cost[~reduce] * w_n).sum() + (job.cost[reduce] * w_r).sum()
    assert job.model.expected_cost(job.cost).item() == pytest.approx(manual.item())
    assert job.model.expected_cost(job.cost).item() > 1000.0  # the dear op dominates


def test_search_with_table_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    from nas.cli.main import main

    _no_timing(monkeypatch)
    _, path, _ = _search_table(tmp_path)
    run = tmp_path / "run"
    assert main(["search", "quick", f"run_dir={run}", "optim.epochs=1", "cost.metric=latency",
                 "cost.weight=0.1", f"cost.table={path}", *SEARCH, "model.partial_channels=1"]
                ) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["expected_cost"] > 0


def test_search_table_missing_entry_is_one_line(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _no_timing(monkeypatch)
    _, path, table = _search_table(tmp_path)
    gone = OpKey("c2sp_conv_2x2", 8, 2, 8, 8)
    assert gone in table.ops
    del table.ops[gone]
    table.save(path)
    cfg = _search_cfg("cost.metric=latency", "cost.weight=0.5", f"cost.table={path}")
    with pytest.raises(ConfigError) as err:
        SearchJob(cfg, RunDir(tmp_path / "run"))
    text = str(err.value)
    assert "'c2sp_conv_2x2' at C=8, stride 2, 8x8" in text
    assert "rebuild the table with this config" in text and "\n" not in text


def test_search_table_needs_latency_metric_and_same_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cost.metric=latency"):
        _search_cfg("cost.table=lut.json")
    _, path, _ = _search_table(tmp_path)
    cfg = _search_cfg("cost.metric=latency", "cost.weight=0.5", f"cost.table={path}",
                      "cost.batch_size=8")
    with pytest.raises(ConfigError, match="measured at batch 1 but cost.batch_size is 8"):
        SearchJob(cfg, RunDir(tmp_path / "run"))


def test_local_latency_cache_times_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    from nas.cost.lookup import CostTable

    shapes = [[(4, 1, 8, 8), (4, 2, 8, 8)]]
    ops = ("skip_connect", "sep_conv_3x3")
    first = CostTable("latency", "cpu", cache_dir=tmp_path, repeats=2).tensor(ops, shapes)
    assert (first > 0).all() and "measured on cpu" in CostTable("latency", "cpu").source
    [cache] = tmp_path.glob("latency-*-b1-deploy.json")
    assert len(json.loads(cache.read_text())) == 4
    _no_timing(monkeypatch)  # the second search on this machine reads the cache
    again = CostTable("latency", "cpu", cache_dir=tmp_path).tensor(ops, shapes)
    assert torch.equal(first, again)


# --- nas mo-search with latency.table ---------------------------------------------------


def _params(genotype: Genotype, steps: int) -> dict[str, str]:
    params = {}
    for cell, edges in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        for node in range(steps):
            (op0, a), (op1, b) = edges[2 * node], edges[2 * node + 1]
            params.update({f"{cell}_n{node}_inputs": f"{a},{b}", f"{cell}_n{node}_op0": op0,
                           f"{cell}_n{node}_op1": op1})
    return params


def test_mo_latency_is_the_documented_sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    _no_timing(monkeypatch)
    path = tmp_path / "lut.json"
    base = _mo_cfg()
    table = _hand_table(*mo_requirements(base, (3, 8, 8), 3), path)
    # over the params budget: costs are computed, the network is not trained
    cfg = _mo_cfg(f"latency.table={path}", "constraints.params_max_m=0",
                  f"run_dir={tmp_path / 'mo'}")
    check_inputs(cfg)
    genotype = random_genotype(cfg.space.build(), random.Random(3))
    metrics = run_trial(_params(genotype, 2), cfg, tmp_path / "trial")
    model = NetworkCIFAR(4, 3, 3, False, genotype, in_channels=3)
    ops, parts = _observed(model, genotype, (3, 8, 8))
    expected = sum(table.ops[k] for k in ops) + sum(table.parts[k] for k in parts)
    assert len(ops) == 3 * 4 and len(parts) == 2 + 2 * 3
    assert metrics["latency"] == pytest.approx(expected, rel=1e-9)
    assert metrics["latency_source"] == f"table:{path}"
    assert metrics["latency_noisy"] is False and metrics["feasible"] is False


def test_mo_check_inputs_names_what_the_table_lacks(tmp_path: Path) -> None:
    path = tmp_path / "lut.json"
    ops, _ = mo_requirements(_mo_cfg(), (3, 8, 8), 3)
    _hand_table(ops, set(), path)  # a table without fixed parts (as for a search config)
    cfg = _mo_cfg(f"latency.table={path}", "latency.device=cuda")  # device unused: no error
    with pytest.raises(ConfigError, match="no entry for fixed part 'factorized_reduce'") as err:
        check_inputs(cfg)
    assert "rebuild the table with this config" in str(err.value)


def test_mo_darts_trials_with_latency_cost_need_supernet_shapes() -> None:
    measured = _mo_cfg("trial_kind=darts", "darts.spaces=[darts]", "darts.init_channels=4",
                       "darts.layers=3", "darts.cost_metric=params")
    latency = _mo_cfg("trial_kind=darts", "darts.spaces=[darts]", "darts.init_channels=4",
                      "darts.layers=3", "darts.cost_metric=latency")
    ops_p, _ = mo_requirements(measured, (3, 8, 8), 3)
    ops_l, _ = mo_requirements(latency, (3, 8, 8), 3)
    assert "none" not in {k.op for k in ops_p}
    assert {k.op for k in ops_l - ops_p} == {"none"}  # same shapes: C and layers agree
    assert {k.op for k in ops_p} == set(get_space("darts").ops) - {"none"}


def test_mo_search_with_table_writes_its_source(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.search.mo.optuna_driver import run_mo_search

    _no_timing(monkeypatch)
    monkeypatch.chdir(tmp_path)
    _hand_table(*mo_requirements(_mo_cfg(), (3, 8, 8), 3), tmp_path / "lut.json")
    cfg = _mo_cfg("latency.table=lut.json", "n_trials=2", "run_dir=mo")  # relative path
    run_mo_search(cfg)
    rows = list(csv.DictReader((tmp_path / "mo" / "trials.csv").open()))
    assert len(rows) == 2
    assert {r["latency_source"] for r in rows} == {f"table:{tmp_path / 'lut.json'}"}
    assert all(float(r["latency"]) > 0 for r in rows)
    assert "predicted from table" in (tmp_path / "mo" / "pareto.md").read_text()


# --- random genotypes -----------------------------------------------------------------


def test_random_genotypes_are_valid_seeded_and_varied() -> None:
    space = get_space("full")
    draws = [random_genotype(space, random.Random(0)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(1)
    many = [random_genotype(space, rng) for _ in range(20)]
    assert len({str(g) for g in many}) == 20
    for g in many:
        g.validate(space.ops, steps=space.steps)
        assert "none" not in g.ops_used()
        for cell in (g.normal, g.reduce):
            inputs = [i for _, i in cell]
            assert all(inputs[2 * n] != inputs[2 * n + 1] for n in range(space.steps))


# --- benchmark ------------------------------------------------------------------------


def _bench_module(monkeypatch: pytest.MonkeyPatch):
    import importlib.util
    import sys

    from _bench_helpers import BENCHMARKS

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_latency_table",
                                                  BENCHMARKS / "latency_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_latency_table", module)
    spec.loader.exec_module(module)
    return module


def test_benchmark_rank_correlation_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench_module(monkeypatch)
    assert bench.ranks([3.0, 1.0, 2.0, 2.0]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert bench.spearman([1, 2, 3, 4], [10, 20, 25, 400]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert bench.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    timer = bench.thread_timer(1, 3)  # --clock thread: CPU time of this thread
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    assert 0 < timer(conv, (1, 4, 32, 32), "conv") < timer(conv, (8, 4, 64, 64), "conv")


def test_benchmark_quick_run(tmp_path: Path) -> None:
    from _bench_helpers import quick_run

    data, out = quick_run("latency_table", tmp_path)
    summary = data["metadata"]["summary"]
    assert summary["genotypes"] == len(data["rows"]) == 4
    assert summary["spearman"] is None or -1.0 <= summary["spearman"] <= 1.0
    for row in data["rows"]:
        assert row["measured_ms"] > 0 and row["predicted_ms"] > 0, row
    text = (out / "latency_table.md").read_text()
    assert "spearman" in text and "| genotype | archid |" in text


def test_importing_the_command_does_not_load_torch() -> None:
    """`nas` builds its parser before torch loads (OMP_WAIT_POLICY must be set first)."""
    import subprocess
    import sys

    code = "import sys, nas.cost.table; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
