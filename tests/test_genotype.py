"""Tests for nas.genotype: parsing (safely), round trips, validation, graphs and plots."""

from __future__ import annotations

import json

import pytest
import yaml

from nas.errors import GenotypeError
from nas.genotype import Genotype, load_genotype, save_genotype
from nas.plots import cell_graph, plot_cell, plot_genotype

# DARTS (second order), Liu et al. 2019, as published in the DARTS repository.
DARTS_V2_STR = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_OPS = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]
TAIL = "normal_concat=range(2, 6), reduce=[], reduce_concat=[]"
SYS = "__import__('os').system('touch MARKER')"


@pytest.fixture
def g() -> Genotype:
    return Genotype.parse(DARTS_V2_STR)


def small(normal, normal_concat=(2, 3), reduce=None, reduce_concat=(2, 3)) -> Genotype:
    reduce = [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 2 if reduce is None else reduce
    return Genotype(normal, normal_concat, reduce, reduce_concat)


# --- parsing and printing -------------------------------------------------------------------


def test_parse_darts_v2(g):
    assert g.steps == 4
    assert g.normal[7] == ("dil_conv_3x3", 2)
    assert g.reduce[0] == ("max_pool_3x3", 0)
    assert g.normal_concat == (2, 3, 4, 5) and g.reduce_concat == (2, 3, 4, 5)
    assert g.validate(DARTS_OPS, steps=4) is g


def test_parse_variants_agree(g):
    d = g.to_dict()
    variants = [
        DARTS_V2_STR.replace("[2, 3, 4, 5]", "range(2, 6)"),
        f"DARTS_V2 = {DARTS_V2_STR}",
        "Genotype({!r}, range(2, 6), {!r}, [2, 3, 4, 5])".format(d["normal"], d["reduce"]),
        repr({k: v for k, v in d.items()}),
        "Genotype(\n  normal={!r},\n  normal_concat=(2, 3, 4, 5),\n  reduce={!r},\n"
        "  reduce_concat=range(2, 6),\n)".format(tuple(map(tuple, d["normal"])), d["reduce"]),
    ]
    for text in variants:
        assert Genotype.parse(text) == g, text


def test_str_round_trip(g):
    text = str(g)
    assert "normal_concat=range(2, 6)" in text
    assert Genotype.parse(text) == g
    assert repr(g) == text
    odd = small([("a", 0), ("b", 1), ("c", 2), ("d", 0)], normal_concat=[3, 2])
    assert "normal_concat=[3, 2]" in str(odd)
    assert Genotype.parse(str(odd)) == odd


def test_constructor_normalizes():
    a = Genotype([["x", 0], ["y", 1]], range(2, 3), (("x", 1), ("y", 0)), [2])
    assert a.normal == (("x", 0), ("y", 1)) and a.normal_concat == (2,)
    assert hash(a) == hash(Genotype([("x", 0), ("y", 1)], [2], [("x", 1), ("y", 0)], (2,)))
    with pytest.raises(GenotypeError, match=r"normal\[1\]: input must be an int"):
        Genotype([("x", 0), ("y", "1")], [2], [], [2])
    with pytest.raises(GenotypeError, match=r"reduce\[0\]: op must be a string"):
        Genotype([], [2], [(3, 0)], [2])
    with pytest.raises(GenotypeError, match=r"reduce_concat\[0\]: expected an int"):
        Genotype([], [2], [], [True])
    with pytest.raises(GenotypeError, match=r"^normal: expected \(op, input\) pairs, got str"):
        Genotype("sep_conv_3x3", [2], [], [2])


@pytest.mark.parametrize(
    "text, found",
    [
        (f"Genotype(normal={SYS}, {TAIL})", "__import__"),
        (f"Genotype(normal=[('sep_conv_3x3', {SYS})], {TAIL})", "field normal[0][1]"),
        (f"Genotype(normal=(lambda: {SYS})(), {TAIL})", "lambda"),
        (f"Genotype(normal=[(os.system('touch MARKER'), 0)], {TAIL})", "os.system"),
        (f'Genotype(normal=[(f"{{{SYS}}}", 0)], {TAIL})', "field normal[0][0]"),
        (f"Genotype(normal=[('a', 0)].__class__, {TAIL})", "__class__"),
        (f"Genotype(normal=[('a', 0)] + [('b', 1)], {TAIL})", "field normal"),
        (f"Genotype(normal=[*open('MARKER', 'w')], {TAIL})", "open"),
        (f"Genotype(normal=[x for x in [1]], {TAIL})", "for x in"),
        (f"os.system('touch MARKER') or Genotype(normal=[], {TAIL})", "os.system"),
        (f"__import__('os').Genotype(normal=[], {TAIL})", "__import__"),
        (f"Genotype(normal=[], **{{'a': 1}}, {TAIL})", "**"),
        (f"Genotype(normal=[], {TAIL}); {SYS}", "one"),
        (
            "Genotype(normal=[], normal_concat=range(open('MARKER', 'w')), "
            "reduce=[], reduce_concat=[])",
            "open",
        ),
        ("import os", "statement"),
    ],
)
def test_parse_never_executes(tmp_path, monkeypatch, text, found):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GenotypeError) as info:
        Genotype.parse(text)
    message = str(info.value)
    assert "\n" not in message and found in message
    assert not (tmp_path / "MARKER").exists()
    # the same through a text file and a YAML string field
    (tmp_path / "g.txt").write_text(text)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"genotype": text}))
    for name in ("g.txt", "g.yaml"):
        with pytest.raises(GenotypeError, match=name):
            load_genotype(tmp_path / name)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ("Genotype(normal=[('a', 0)", "cannot parse"),
        ("Genotype(normal=[], normal_concat=[])", "missing genotype field 'reduce'"),
        (f"Genotype(normal=[], {TAIL}, extra=1)", "unknown genotype field 'extra'"),
        (f"Genotype(normal=[], normal=[], {TAIL})", "given twice"),
        (f"Genotype(normal=[('a', 0, 1)], {TAIL})", r"normal\[0\]: expected \(op, input\), got"),
        (f"Genotype(normal=[('a', 1.5)], {TAIL})", r"1\.5 in field normal\[0\]\[1\]"),
        (
            "Genotype(normal=[], normal_concat=range(10**9), reduce=[], reduce_concat=[])",
            "10 \\*\\* 9",
        ),
        (
            "Genotype(normal=[], normal_concat=range(10000000000), reduce=[], reduce_concat=[])",
            "range too long",
        ),
        ("NotGenotype(normal=[])", "expected Genotype"),
        ("", "one Genotype"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(GenotypeError, match=match):
        Genotype.parse(text)


def test_parse_rejects_non_string():
    with pytest.raises(GenotypeError, match="expected a genotype string"):
        Genotype.parse(b"Genotype()")  # type: ignore[arg-type]


# --- dicts and files -------------------------------------------------------------------------


def test_dict_round_trip(g):
    d = g.to_dict()
    assert d["normal"][0] == ["sep_conv_3x3", 0] and d["normal_concat"] == [2, 3, 4, 5]
    assert Genotype.from_dict(json.loads(json.dumps(d))) == g
    assert Genotype.from_dict(yaml.safe_load(yaml.safe_dump(d))) == g


def test_from_dict_errors(g):
    d = g.to_dict()
    with pytest.raises(GenotypeError, match="missing genotype key 'reduce_concat'"):
        Genotype.from_dict({k: v for k, v in d.items() if k != "reduce_concat"})
    with pytest.raises(GenotypeError, match="unknown genotype key 'steps'"):
        Genotype.from_dict({**d, "steps": 4})
    with pytest.raises(GenotypeError, match=r"reduce\[2\]: input must be an int, got '2'"):
        Genotype.from_dict({**d, "reduce": [*d["reduce"][:2], ["skip_connect", "2"]]})
    with pytest.raises(GenotypeError, match=r"normal\[0\]: expected \(op, input\), got"):
        Genotype.from_dict({**d, "normal": ["sep_conv_3x3"]})
    with pytest.raises(GenotypeError, match="expected a mapping"):
        Genotype.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".txt"])
def test_file_round_trip(tmp_path, g, suffix):
    path = save_genotype(g, tmp_path / "sub" / f"genotype{suffix}")
    assert path.exists() and load_genotype(path) == g
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    if suffix == ".json":
        assert json.loads(path.read_text())["reduce"][2] == ["skip_connect", 2]
    if suffix == ".yaml":
        assert yaml.safe_load(path.read_text()) == g.to_dict()


def test_load_wrapped_and_string_forms(tmp_path, g):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"genotype": g.to_dict(), "val_acc": 97.0}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"genotype": DARTS_V2_STR}))
    (tmp_path / "c.json").write_text(json.dumps({"genotype": g.to_dict()}))
    (tmp_path / "d").write_text(f"DARTS_V2 = {DARTS_V2_STR}\n")
    for name in ("a.yaml", "b.yaml", "c.json", "d"):
        assert load_genotype(tmp_path / name) == g, name


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.yaml", "normal: [unclosed", "malformed YAML"),
        ("bad.json", "{'normal': 1}", "malformed JSON"),
        ("empty.yaml", "", "empty file"),
        ("list.yaml", "- 1\n- 2\n", "got list"),
        ("missing.yaml", "normal: []\n", "missing genotype key 'normal_concat'"),
        ("tag.yaml", "!!python/object/apply:os.system ['touch MARKER']\n", "malformed YAML"),
    ],
)
def test_load_errors_name_file(tmp_path, monkeypatch, name, content, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(content)
    with pytest.raises(GenotypeError, match=match) as info:
        load_genotype(tmp_path / name)
    assert name in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "MARKER").exists()


def test_load_missing_file_and_save_bad_suffix(tmp_path, g):
    with pytest.raises(GenotypeError, match="nope.yaml: cannot read"):
        load_genotype(tmp_path / "nope.yaml")
    with pytest.raises(GenotypeError, match="unknown genotype file type '.pkl'"):
        save_genotype(g, tmp_path / "g.pkl")


# --- validation ------------------------------------------------------------------------------


def test_validate_unknown_op(g):
    bad = g.replace_ops({"max_pool_3x3": "foo_conv"})
    with pytest.raises(GenotypeError, match=r"^reduce\[0\]: unknown op 'foo_conv' \(known: "):
        bad.validate(DARTS_OPS)


def test_validate_input_out_of_range():
    bad = small([("a", 0), ("a", 1), ("a", 0), ("a", 5)])
    with pytest.raises(
        GenotypeError, match=r"^normal\[3\]: input 5 out of range for node 1 \(allowed 0\.\.2\)$"
    ):
        bad.validate(["a", "max_pool_3x3"])
    with pytest.raises(GenotypeError, match=r"^normal\[0\]: input -1 out of range"):
        small([("a", -1), ("a", 1), ("a", 0), ("a", 1)]).validate(["a", "max_pool_3x3"])


def test_validate_edge_count(g):
    with pytest.raises(GenotypeError, match=r"^normal: 3 edges, expected a positive even"):
        small([("a", 0), ("a", 1), ("a", 0)]).validate(["a", "max_pool_3x3"])
    with pytest.raises(GenotypeError, match=r"^normal: 8 edges, expected 10"):
        g.validate(DARTS_OPS, steps=5)
    with pytest.raises(GenotypeError, match=r"^reduce: 0 edges"):
        small([("a", 0), ("a", 1)], normal_concat=[2], reduce=[]).validate(["a"])


@pytest.mark.parametrize(
    "concat, match",
    [
        ([], r"^normal_concat: empty"),
        ([2, 4], r"^normal_concat\[1\]: node 4 out of range \(allowed 2\.\.3\)"),
        ([1], r"^normal_concat\[0\]: node 1 out of range"),
        ([2, 2], r"^normal_concat\[1\]: duplicate node 2"),
    ],
)
def test_validate_concat(concat, match):
    bad = small([("a", 0), ("a", 1), ("a", 2), ("a", 0)], normal_concat=concat)
    with pytest.raises(GenotypeError, match=match):
        bad.validate(["a", "max_pool_3x3"])


def test_validate_bad_steps(g):
    with pytest.raises(GenotypeError, match="steps must be a positive int"):
        g.validate(DARTS_OPS, steps=0)


# --- helpers ---------------------------------------------------------------------------------


def test_ops_used_and_replace_ops(g):
    assert g.ops_used() == {"sep_conv_3x3", "skip_connect", "dil_conv_3x3", "max_pool_3x3"}
    t = g.replace_ops({"sep_conv_3x3": "osep_conv_3x3", "dil_conv_3x3": "do_conv_3x3"})
    assert t.ops_used() == {"osep_conv_3x3", "skip_connect", "do_conv_3x3", "max_pool_3x3"}
    assert [i for _, i in t.normal] == [i for _, i in g.normal]
    assert t.reduce == g.reduce and t.normal_concat == g.normal_concat
    assert g.normal[0] == ("sep_conv_3x3", 0)  # original untouched


def test_archid(g):
    assert len(g.archid) == 12 and int(g.archid, 16) >= 0
    assert g.archid == Genotype.parse(str(g)).archid == Genotype.from_dict(g.to_dict()).archid
    assert g.archid != g.replace_ops({"dil_conv_3x3": "dil_conv_5x5"}).archid
    swapped = Genotype(g.reduce, g.reduce_concat, g.normal, g.normal_concat)
    assert g.archid != swapped.archid


def test_frozen(g):
    with pytest.raises(AttributeError):
        g.normal = ()  # type: ignore[misc]


# --- graphs and plots ------------------------------------------------------------------------


def test_cell_graph(g):
    normal = cell_graph(g, "normal")
    assert normal.number_of_nodes() == 2 + 4 + 1
    assert normal.number_of_edges() == 8 + 4
    assert normal.edges["3", "c_{k}"]["kind"] == "concat"
    assert normal.edges["0", "3"]["op"] == "dil_conv_3x3"
    assert normal.edges["c_{k-2}", "0"]["op"] == "sep_conv_3x3"
    reduce = cell_graph(g, "reduce")
    assert reduce.edges["0", "1"]["op"] == "skip_connect"
    assert {n for n, k in reduce.nodes(data="kind") if k == "input"} == {"c_{k-2}", "c_{k-1}"}
    assert all(d >= 1 for n, d in reduce.in_degree() if n not in ("c_{k-2}", "c_{k-1}"))


def test_cell_graph_parallel_edges_and_errors(g):
    dup = small([("a", 0), ("b", 0), ("a", 2), ("a", 1)])
    graph = cell_graph(dup)
    assert graph.edges["c_{k-2}", "0"]["ops"] == ("a", "b")
    assert graph.number_of_edges() == 3 + 2
    with pytest.raises(GenotypeError, match="unknown cell 'middle'"):
        cell_graph(g, "middle")
    with pytest.raises(GenotypeError, match=r"normal\[1\]: input 2 out of range"):
        cell_graph(small([("a", 0), ("a", 2)], normal_concat=[2]))


def test_plot_png_svg(tmp_path, g):
    png = plot_cell(g, "normal", tmp_path / "n.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plot_cell(g, "reduce", tmp_path / "r.svg")
    text = svg.read_text()
    assert "<svg" in text and len(text) > 1000
    paths = plot_genotype(g, tmp_path / "plots", stem="darts_v2", fmt="svg")
    assert [p.name for p in paths] == ["darts_v2_normal.svg", "darts_v2_reduce.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [p.name for p in paths]
    with pytest.raises(GenotypeError, match="unknown plot format 'gif'"):
        plot_cell(g, "normal", tmp_path / "n.gif")


def test_plot_leaves_pyplot_alone(tmp_path, g):
    import sys

    had_pyplot = "matplotlib.pyplot" in sys.modules
    plot_cell(g, "normal", tmp_path / "n.png")
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
