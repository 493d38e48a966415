"""``nas report``: one self-contained HTML page for a compare run and an mo-search run."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from nas.config import dump_config, load_config
from nas.errors import ConfigError
from nas.evaluate.compare import CompareConfig, run_compare
from nas.evaluate.report import add_report_parser, html_table, render_report, run_kind, write_report
from nas.evaluate.table import table_header
from nas.genotype import Genotype, load_genotype, save_genotype
from nas.run import relative_path, relative_paths
from nas.search.mo.outputs import write_outputs
from nas.search.mo.trial import MOConfig
from nas.spaces.baselines import BASELINES

SMALL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('osep_conv_3x3', 0), "
    "('max_pool_3x3', 2)], normal_concat=[2, 3], reduce=[('max_pool_3x3', 0), "
    "('c2sp_conv_2x2', 1), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3])"
)
HOSTILE = "<script>alert('x')</script>"
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}
_PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Strict enough: every non-void tag closed in order; collects tables, images, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[list[list[tuple[str, dict]]]] = []  # table -> row -> (text, attrs)
        self.images: list[tuple[str, dict]] = []  # (the h3 above it, attrs)
        self.pre: list[str] = []
        self.text: list[str] = []
        self._cell: list | None = None
        self._h3: str = ""
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in _VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ["", attrs]
        elif tag == "img":
            self.images.append((self._h3, attrs))
        elif tag == "h3":
            self._h3 = ""
        elif tag == "pre":
            self.pre.append("")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append((self._cell[0], self._cell[1]))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[0] += data
        if self.stack and self.stack[-1] == "h3":
            self._h3 += data
        if "pre" in self.stack:
            self.pre[-1] += data

    def rows(self, table: int) -> tuple[list[str], list[list[str]]]:
        """Header and rows of a table, each cell's exact value (its title when rounded)."""
        head, *body = self.tables[table]
        exact = [[attrs.get("title", text) for text, attrs in row] for row in body]
        return [text for text, _ in head], exact

    def table_with(self, header: list[str]) -> int:
        """The index of the one table with this header."""
        [k] = [k for k, t in enumerate(self.tables) if [c for c, _ in t[0]] == header]
        return k


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    header, *rows = list(csv.reader(io.StringIO(path.read_text())))
    return header, rows


def _decoded(attrs: dict, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert attrs["src"].startswith(prefix)
    return base64.b64decode(attrs["src"][len(prefix):], validate=True)


def _plotted_ops(svg: str, genotype: Genotype, cell: str) -> bool:
    """The SVG is this genotype's cell: its title names the archid and its edge labels
    (matplotlib keeps each text as a comment) are the cell's ops."""
    texts = re.findall(r"<!-- (.*?) -->", svg)
    ops = sorted(t for t in texts if not t.startswith("$") and not t.isdigit()
                 and not t.endswith(")"))
    title = f"{cell} cell  ({genotype.archid})"
    return title in texts and ops == sorted(op for op, _ in genotype.cell(cell)[0])


def _self_contained(text: str) -> None:
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:|//)", text, re.I)
    assert not re.search(r"<(script|link|iframe)\b", text, re.I)
    assert "url(" not in text  # no stylesheet fetching
    for match in re.finditer(r"\bsrc=\"([^\"]*)\"", text):
        assert match.group(1).startswith("data:image/")


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory) -> Path:
    """Two entries, one seed, one epoch, C=4, 3 cells, 8x8 synthetic images (seconds)."""
    tmp = tmp_path_factory.mktemp("report")
    config = {
        "run_dir": str(tmp / "cmp"),
        "train": {
            "data": {"name": "synthetic", "batch_size": 16, "eval_batch_size": 32,
                     "options": {"num_samples": 32, "image_size": 8, "channels": 3,
                                 "num_classes": 3}},
            "model": {"layers": 3, "init_channels": 4},
            "optim": {"epochs": 1},
            "runtime": {"progress": False, "tensorboard": False},
        },
        "entries": [{"name": "DARTS_V2", "genotype": "DARTS_V2"},
                    {"name": "small", "genotype": SMALL}],
        "seeds": [0],
    }
    (tmp / "cmp.yaml").write_text(yaml.safe_dump(config))
    run_compare(load_config(CompareConfig, tmp / "cmp.yaml", []))
    return tmp / "cmp"


def test_compare_report_holds_table_plots_cells_and_config(compare_run, tmp_path):
    out = write_report(compare_run, tmp_path / "r.html")
    text = out.read_text()
    page = Page(text)
    assert page.errors == []
    _self_contained(text)
    assert run_kind(compare_run) == "compare"
    # The raw table is compare.csv: same header, every row, every exact value.
    header, rows = _csv(compare_run / "compare.csv")
    raw = page.table_with(header)
    got_header, got_rows = page.rows(raw)
    assert got_header == header and got_rows == rows
    assert [r[0] for r in got_rows] == ["DARTS_V2", "small"]
    shown = [[text for text, _ in row] for row in page.tables[raw][1:]]
    for shown_row, row in zip(shown, rows):
        for cell, exact in zip(shown_row, row):
            try:
                assert float(cell) == pytest.approx(float(exact), rel=1e-4)
            except ValueError:
                assert cell == exact
    # Pareto plots: the PNG files themselves, base64-encoded.
    plots = {a["alt"]: a for h3, a in page.images if a["alt"].startswith("pareto_")}
    assert sorted(plots) == ["pareto_latency.png", "pareto_params.png"]
    for name, attrs in plots.items():
        data = _decoded(attrs, "image/png")
        assert data.startswith(_PNG) and data == (compare_run / name).read_bytes()
    # Cells: both cells of each entry, as SVG, under the entry's heading.
    cells = {}
    for h3, attrs in page.images:
        if attrs["alt"].endswith(" cell"):
            svg = _decoded(attrs, "image/svg+xml").decode()
            assert "<svg" in svg
            cells.setdefault(h3, []).append((attrs["alt"], svg))
    assert sorted(cells) == ["DARTS_V2", "small"]
    genotypes = {"DARTS_V2": BASELINES["DARTS_V2"], "small": Genotype.parse(SMALL)}
    for name, plotted in cells.items():
        assert [alt for alt, _ in plotted] == ["normal cell", "reduce cell"]
        for (_, svg), cell in zip(plotted, ("normal", "reduce")):
            assert _plotted_ops(svg, genotypes[name], cell)
        assert f"archid {genotypes[name].archid}" in text
    assert str(Genotype.parse(SMALL)) in "".join(page.text)
    # The config, verbatim but for its paths (escaped in the page, unescaped by the parser).
    config = (compare_run / "config.yaml").read_text()
    assert str(compare_run) in config
    assert page.pre == [relative_paths(config, compare_run)]
    assert str(compare_run) not in text
    # The notes under compare.md's table.
    note = next(line for line in (compare_run / "compare.md").read_text().splitlines()
                if line.startswith("latency:"))
    assert note in "".join(page.text)


def test_default_output_is_written_atomically_in_the_run(compare_run, tmp_path):
    run = shutil.copytree(compare_run, tmp_path / "copy")
    path = write_report(run)
    assert path == run / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    assert not list(run.glob(".report.html.*"))  # no temp file left behind


def test_added_columns_summary_rows_and_hostile_cells_render(compare_run, tmp_path):
    """compare.csv may gain columns and summary rows: all of them show, all escaped."""
    run = shutil.copytree(compare_run, tmp_path / "grouped")
    header, rows = _csv(run / "compare.csv")
    header = [*header, "group"]
    rows = [[*r, "baseline"] for r in rows]
    summary = ["random (n=5)", HOSTILE, *[""] * (len(header) - 3), "random"]
    rows.append(summary)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    (run / "compare.csv").write_text(buf.getvalue())
    text = render_report(run)
    page = Page(text)
    assert page.errors == []
    assert page.rows(page.table_with(header)) == (header, rows)
    formatted = page.rows(page.table_with(table_header()))[1]
    assert [r[0] for r in formatted] == ["DARTS_V2", "small", "random (n=5)"]
    assert formatted[2][1:] == [""] * (len(table_header()) - 1)  # nothing to format
    assert HOSTILE not in text and html_escaped(HOSTILE) in text
    _self_contained(text)
    cells = {h3 for h3, a in page.images if a["alt"].endswith(" cell")}
    assert cells == {"DARTS_V2", "small"}  # a summary row has no run folder, no cells


def html_escaped(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&#x27;"))


def test_html_table_escapes_every_cell_and_keeps_exact_values():
    text = html_table(["name", "<b>col</b>", "x"], [[HOSTILE, "a&b", "0.123456789"],
                                                    ["2", '"q"', "1e-9"]])
    assert "<script" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "a&amp;b" in text and "&quot;q&quot;" in text
    page = Page(text)
    assert page.errors == []
    assert page.rows(0) == (["name", "<b>col</b>", "x"],
                            [[HOSTILE, "a&b", "0.123456789"], ["2", '"q"', "1e-9"]])
    assert page.tables[0][1][2][0] == "0.12346"  # shown rounded, exact in the title


def _mo_run(tmp: Path) -> tuple[Path, MOConfig]:
    """An mo-search folder from hand-made trials: 0 and 1 on the front, 2 dominated by 0,
    3 infeasible; trial 1's latency source is hostile text."""
    run = tmp / "mo"
    cfg = load_config(MOConfig, None, [f"run_dir={run}", "data.name=synthetic",
                                       "runtime.tensorboard=false"])
    ops = ["sep_conv_3x3", "max_pool_3x3", "skip_connect", "avg_pool_3x3"]
    rows = []
    values = [(0.5, 0.10, 1.0, True), (0.6, 0.20, 2.0, True), (0.4, 0.30, 3.0, True),
              (0.7, 0.05, 0.5, False)]
    for k, (acc, params, latency, feasible) in enumerate(values):
        g = Genotype(normal=[(ops[k], 0), ("skip_connect", 1), (ops[k], 0), (ops[k], 2)],
                     normal_concat=[2, 3],
                     reduce=[("max_pool_3x3", 0), (ops[k], 1), ("skip_connect", 2),
                             (ops[k], 0)], reduce_concat=[2, 3])
        trial_dir = run / "trials" / f"trial_{k:04d}"
        save_genotype(g, trial_dir / "genotype.yaml")
        rows.append({"trial": k, "val_acc": acc, "params": params, "latency": latency,
                     "macs": 10.0 * params, "feasible": feasible, "epochs": 1,
                     "stopped": False, "latency_noisy": k == 2,
                     "latency_source": HOSTILE if k == 1 else "measured:cpu",
                     "genotype": str(g), "trial_dir": str(trial_dir)})
    (run / "config.yaml").write_text(dump_config(cfg))
    write_outputs(rows, cfg, run)
    return run, cfg


def test_mo_search_report_holds_front_trials_plots_and_cells(tmp_path, capsys):
    run, _ = _mo_run(tmp_path)
    capsys.readouterr()
    assert run_kind(run) == "mo-search"
    text = write_report(run).read_text()
    page = Page(text)
    assert page.errors == []
    _self_contained(text)
    assert HOSTILE not in text and html_escaped(HOSTILE) in text
    assert str(tmp_path) not in text  # trial_dir, pareto.md's note, config: all relative
    front = page.rows(0)  # the front first, as pareto.md formats it
    assert front[0][0] == "trial" and [r[0] for r in front[1]] == ["1", "0"]
    for k, name in ((1, "pareto.csv"), (2, "trials.csv")):  # then the raw CSVs, folded
        header, rows = _csv(run / name)
        assert "trial_dir" in header and str(tmp_path) in (run / name).read_text()
        assert page.rows(k) == (header, [[relative_paths(c, run) for c in r] for r in rows])
    assert len(page.rows(2)[1]) == 4
    assert text.index("Cells of the Pareto points") < text.index("<details><summary>pareto.csv")
    for name in ("pareto_params.png", "pareto_latency.png"):
        [attrs] = [a for _, a in page.images if a["alt"] == name]
        assert _decoded(attrs, "image/png") == (run / name).read_bytes()
    cells: dict[str, list[str]] = {}
    for h3, attrs in page.images:
        if attrs["alt"].endswith(" cell"):
            cells.setdefault(h3, []).append(_decoded(attrs, "image/svg+xml").decode())
    assert sorted(cells) == ["trial 0", "trial 1"]
    for k in (0, 1):  # each point's cells are its own genotype's (pareto/trial_<k>.yaml)
        genotype = load_genotype(run / "pareto" / f"trial_{k}.yaml")
        assert genotype == load_genotype(run / "trials" / f"trial_{k:04d}" / "genotype.yaml")
        assert [_plotted_ops(svg, genotype, c) for svg, c in
                zip(cells[f"trial {k}"], ("normal", "reduce"))] == [True, True]
        assert f"archid {genotype.archid}" in text
    assert "Pareto points of 4 trials" in "".join(page.text)  # pareto.md's note
    assert page.pre == [relative_paths((run / "config.yaml").read_text(), run)]


def test_neither_kind_is_a_one_line_config_error(tmp_path):
    (tmp_path / "plain").mkdir()
    train = tmp_path / "train"
    train.mkdir()
    (train / ".nas-run.json").write_text(json.dumps({"command": "train", "config": "quick"}))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / ".nas-run.json").write_text(json.dumps({"command": "compare", "config": "q"}))
    what = "RUN must be the folder of a `nas compare` run"
    cases = {tmp_path / "plain": ["not a run folder", what],
             train: ["holds a `nas train` run", what],
             tmp_path / "missing": ["no such folder", what],
             unfinished: ["no compare.csv yet", "run the same `nas compare` command"]}
    for run, says in cases.items():
        with pytest.raises(ConfigError) as err:
            write_report(run)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"RUN {run}: ")
        assert all(part in message for part in says), message
        assert not (run / "report.html").exists()


def test_out_that_is_a_folder_is_refused(compare_run, tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        write_report(compare_run, tmp_path)


def test_cli_subcommand_writes_the_page_and_prints_its_path(compare_run, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="nas")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "shared" / "cmp.html"
    args = parser.parse_args(["report", str(compare_run), "--out", str(out)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert Page(out.read_text()).errors == []
    args = parser.parse_args(["report", str(tmp_path / "nothing")])
    with pytest.raises(ConfigError, match="no such folder"):
        args.func(args)


def test_cli_main_reports_bad_run_in_one_line(tmp_path, capsys):
    from nas.cli.main import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        pytest.skip("nas.cli.main.build_parser does not register `nas report` yet")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: RUN ")


def test_module_loads_without_torch():
    """`nas` builds its parser before torch loads: the report module must not import it."""
    code = ("import sys, nas.evaluate.report; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_significance_tests_render_as_their_own_table(compare_run, tmp_path):
    """With several seeds nas compare writes significance.md; the page shows every test."""
    from nas.evaluate.significance import format_significance, significance_rows

    assert not (compare_run / "significance.md").exists()  # one seed: nothing to test
    run = tmp_path / "cmp"
    shutil.copytree(compare_run, run)
    rows = [{"name": "DARTS_V2", "acc_per_seed": "0.70 0.71 0.72", "group": ""},
            {"name": "small", "acc_per_seed": "0.80 0.81 0.82", "group": ""},
            {"name": "other", "acc_per_seed": "0.69 0.75 0.71", "group": ""}]
    (run / "significance.md").write_text(format_significance(significance_rows(rows)))
    page = Page(write_report(run, tmp_path / "r.html").read_text())
    assert page.errors == []
    header, got = page.rows(1)
    assert header[:2] == ["entry", "against"]
    assert [r[:2] for r in got] == [["small", "DARTS_V2"], ["other", "DARTS_V2"]]
    assert got[0][5] == "0.100"  # 3 vs 3 seeds, fully separated
    assert any("would pass by chance" in t for t in page.text)


def test_page_leads_with_the_formatted_table_then_cells_then_folded_raw_csv(compare_run):
    """What people read at a glance comes first: the formatted table (accuracy in percent
    as in compare.md), then the cells; the raw CSV and the config are folded below."""
    text = render_report(compare_run)
    page = Page(text)
    assert page.errors == []
    formatted = page.table_with(table_header())
    assert formatted == 0
    header, rows = _csv(compare_run / "compare.csv")
    got = page.rows(formatted)[1]
    md = (compare_run / "compare.md").read_text()
    for row, csv_row in zip(got, rows):
        acc = 100 * float(csv_row[header.index("acc_mean")])
        assert row[0] == csv_row[0] and row[2] == f"{acc:.2f} (n=1)"  # one seed: no ±
        assert "| " + " | ".join(row) + " |" in md  # the same cells as compare.md
    table = text.index("<table>")
    cells = text.index('alt="normal cell"')
    pareto = text.index('alt="pareto_')
    raw = text.index("<details><summary>compare.csv")
    config = text.index("<details><summary>config.yaml")
    assert table < cells < pareto < raw < config
    assert page.table_with(header) > formatted


def test_results_name_paths_relative_to_the_run_or_a_given_folder(tmp_path):
    """A compare of a genotype file given by its absolute path: compare.csv/.md and the
    report name it relative to the run folder (or to the
    experiment folder they are given), never by a path under tmp_path."""
    exp = tmp_path / "exp"
    genotype = exp / "runs" / "search" / "genotype.yaml"
    save_genotype(Genotype.parse(SMALL), genotype)
    run = exp / "runs" / "compare"
    overrides = [
        f"run_dir={run}", "train.data.name=synthetic",
        "train.data.options={num_samples: 32, image_size: 8, channels: 3, num_classes: 3}",
        "train.data.batch_size=16", "train.data.eval_batch_size=32", "train.model.layers=3",
        "train.model.init_channels=4", "train.optim.epochs=1", "train.runtime.progress=false",
        "train.runtime.tensorboard=false", f"entries=[{{name: mine, genotype: {genotype}}}]",
        "seeds=[0, 1]",
    ]
    written = ("compare.csv", "compare.md", "report.html")  # one entry: no significance.md

    def check(base: Path, where: str, extra: list[str]) -> None:
        run_compare(load_config(CompareConfig, None, [*overrides, *extra]))
        write_report(run, relative_to=base)
        for name in written:
            assert str(tmp_path) not in (run / name).read_text(), name
        assert not (run / "significance.md").exists()  # nothing to test it against
        with open(run / "compare.csv", newline="") as f:
            [row] = list(csv.DictReader(f))
        assert row["genotype"] == where
        page = (run / "report.html").read_text()
        assert f"<td>{where}</td>" in page
        assert load_genotype(base / where) == Genotype.parse(SMALL)

    check(run, "../search/genotype.yaml", [])
    check(exp, "runs/search/genotype.yaml", [f"paths_relative_to={exp}"])  # trains nothing
    assert "run folder <code>runs/compare</code>" in (run / "report.html").read_text()


def test_relative_paths_rewrite_absolute_paths_and_nothing_else():
    base = "/work/exp"
    text = ("run_dir: /work/exp/runs/compare\n- /work/other/g.yaml, `nas compare "
            "/work/exp/runs/x/compare.yaml` km/h a/b 1/2 http://x.org </td> ./rel / end")
    assert relative_paths(text, base) == (
        "run_dir: runs/compare\n- ../other/g.yaml, `nas compare runs/x/compare.yaml` "
        "km/h a/b 1/2 http://x.org </td> ./rel / end")
    assert relative_path("/work/exp", base) == "."
    assert relative_path("runs/a", "runs/b") == "../a"
