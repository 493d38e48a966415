"""``nas report RUN``: one self-contained HTML page for a ``nas compare`` or ``nas mo-search`` run.

The page holds everything needed to share the results as one file. It leads with what
people read at a glance: the formatted table (for a compare run the one of ``compare.md``,
:mod:`nas.evaluate.table`: accuracy in percent as mean ± std, params, MACs, latency), its
notes, and the cells of every compared genotype / Pareto point; then the Pareto plots; then,
folded (``<details>``), the raw CSV (every row and column, so columns added later show up
without changes here) and the run's resolved config. Images are embedded as ``data:`` URIs;
no script, no stylesheet or image from elsewhere: it opens offline in any browser. Paths on
the page are relative to the run folder (or to ``--paths-relative-to``), never absolute.

What the run folders hold (written by :func:`nas.evaluate.compare.run_compare` and
:func:`nas.search.mo.outputs.write_outputs`):

- compare: ``compare.csv``, ``compare.md``, ``pareto_*.png`` and one training run per entry
  and seed, ``<entry>/seed<N>/`` (``genotype.yaml`` there is what was trained, transplant
  applied);
- mo-search: ``trials.csv``, ``pareto.csv``, ``pareto.md``, ``pareto_*.png`` and
  ``pareto/trial_<N>.yaml``, one genotype per Pareto point.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as _dt
import html
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nas.errors import ConfigError, NasError
from nas.evaluate.table import table_cells, table_header
from nas.genotype import Genotype, load_genotype
from nas.plots import plot_genotype
from nas.run import atomic_write_text, relative_path, relative_paths, run_owner

__all__ = ["write_report", "render_report", "run_kind", "html_table", "add_report_parser",
           "cmd_report"]

_DOC = "one self-contained HTML page (tables, Pareto and cell plots) for a compare or mo-search run"
_WHAT = ("RUN must be the folder of a `nas compare` run (with compare.csv) or of a "
         "`nas mo-search` run (with trials.csv)")
_PNG = b"\x89PNG\r\n\x1a\n"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.busy td { background: #fff4e0; }
.wide { overflow-x: auto; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { font-size: 0.9em; word-break: break-all; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: 0.8em; color: #555; }
.meta, .note { color: #555; font-size: 0.9em; }
"""


# --- reading the run folder ---------------------------------------------------------------


def _owner(run: Path) -> str | None:
    """The command that wrote ``run`` (its run-folder marker), or None."""
    owner = run_owner(run)
    return owner["command"] if owner else None


def run_kind(run_dir: str | Path) -> str:
    """``"compare"`` or ``"mo-search"``; any other folder is a one-line ConfigError."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"RUN {run}: no such folder; {_WHAT}")
    owner = _owner(run)
    if owner == "compare" or (owner is None and (run / "compare.csv").is_file()):
        if not (run / "compare.csv").is_file():
            raise ConfigError(f"RUN {run}: this `nas compare` run has no compare.csv yet; "
                              "run the same `nas compare` command to finish it")
        return "compare"
    if owner == "mo-search" or (owner is None and (run / "trials.csv").is_file()):
        if not (run / "trials.csv").is_file():
            raise ConfigError(f"RUN {run}: this `nas mo-search` run has no trials.csv yet; "
                              "run the same `nas mo-search` command to finish it")
        return "mo-search"
    held = f"holds a `nas {owner}` run" if owner else "not a run folder"
    raise ConfigError(f"RUN {run}: {held}; {_WHAT}")


def _text(path: Path, base: Path) -> str | None:
    """The file's text, every absolute path in it relative to ``base``; None if unreadable."""
    try:
        return relative_paths(path.read_text(encoding="utf-8", errors="replace"), base)
    except OSError:
        return None


def _read_csv(path: Path, base: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows, every row padded to one width (a short or long row still shows)."""
    text = _text(path, base)
    if text is None:
        return [], []
    try:
        lines = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise ConfigError(f"{path}: not a readable CSV file ({exc})") from None
    lines = [line for line in lines if line]
    if not lines:
        return [], []
    width = max(len(line) for line in lines)
    header = lines[0] + [""] * (width - len(lines[0]))
    return header, [row + [""] * (width - len(row)) for row in lines[1:]]


def _notes(path: Path, base: Path) -> list[str]:
    """The prose of a markdown table file: its non-table, non-empty lines."""
    text = _text(path, base) or ""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("|")]


def _md_table(path: Path, base: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first markdown table in a file (none: empty)."""
    lines = [line.strip() for line in (_text(path, base) or "").splitlines()]
    table = [[c.strip() for c in line.strip("|").split("|")]
             for line in lines if line.startswith("|")]
    table = [row for row in table if not all(set(c) <= set("-: ") for c in row)]
    return (table[0], table[1:]) if table else ([], [])


# --- HTML pieces --------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _inline(text: str) -> str:
    """Escaped text with markdown `code` spans as <code> (safe: the text is escaped first)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _display(cell: str) -> str:
    """Fractions to 5 significant digits for reading; counts, text and extremes as written."""
    value = _number(cell)
    if value is None or value.is_integer() or not 1e-4 <= abs(value) < 1e6:
        return cell
    return f"{value:.5g}"


def html_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], *, rounded: bool = True
) -> str:
    """An HTML table of every row, every cell escaped. With ``rounded``, a number shows to
    5 significant digits and keeps its exact value in the cell's ``title`` (cells formatted
    already: ``rounded=False``); rows whose ``latency_noisy`` is true are marked."""
    noisy = list(header).index("latency_noisy") if "latency_noisy" in header else None
    out = ['<div class="wide"><table>', "<thead><tr>"]
    out += [f"<th>{_esc(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = [str(c) for c in row]
        busy = noisy is not None and noisy < len(cells) and cells[noisy].lower() == "true"
        out.append('<tr class="busy">' if busy else "<tr>")
        for cell in cells:
            shown = _display(cell) if rounded else cell
            cls = ' class="num"' if _number(cell) is not None else ""
            title = f' title="{_esc(cell)}"' if shown != cell else ""
            out.append(f"<td{cls}{title}>{_esc(shown)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _img(data: bytes, mime: str, alt: str) -> str:
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _figure(data: bytes, mime: str, caption: str) -> str:
    return f"<figure>{_img(data, mime, caption)}<figcaption>{_esc(caption)}</figcaption></figure>"


def _pareto_plots(run: Path) -> str:
    parts = []
    for path in sorted(run.glob("pareto_*.png")):
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if data.startswith(_PNG):
            parts.append(_figure(data, "image/png", path.name))
        else:
            parts.append(f'<p class="note">{_esc(path.name)}: not a readable PNG file</p>')
    return "".join(parts) or '<p class="note">no Pareto plots in this run</p>'


def _details(summary: str, content: str) -> str:
    """Raw material folded below what people read first."""
    return f"<details><summary>{_esc(summary)}</summary>{content}</details>"


class _Cells:
    """Cell plots (SVG, embedded) of genotypes, drawn once per architecture."""

    def __init__(self, folder: Path, base: Path) -> None:
        self.folder = folder
        self.base = base  # error messages name paths relative to it
        self.done: dict[str, str] = {}

    def html(self, genotype: Genotype) -> str:
        key = genotype.archid
        if key not in self.done:
            try:
                paths = plot_genotype(genotype, self.folder, stem=key, fmt="svg")
                self.done[key] = "".join(
                    _figure(p.read_bytes(), "image/svg+xml", f"{p.stem.rsplit('_', 1)[1]} cell")
                    for p in paths)
            except (NasError, OSError) as exc:
                why = relative_paths(str(exc), self.base)
                self.done[key] = f'<p class="note">cannot plot the cells: {_esc(why)}</p>'
        return self.done[key]


def _genotype_block(title: str, genotype: Genotype | None, source: str, cells: _Cells) -> str:
    head = f"<h3>{_esc(title)}</h3>"
    if genotype is None:
        return head + f'<p class="note">{_esc(source)}</p>'
    return (head + f'<p class="meta">{_esc(source)}; archid {_esc(genotype.archid)}</p>'
            f"<p><code>{_esc(genotype)}</code></p>" + cells.html(genotype))


def _spec_genotype(spec: str, roots: Sequence[Path]) -> Genotype | None:
    """A genotype from a table cell: a baseline name (``+transplant`` allowed), a DARTS
    string or a file (a relative one under one of ``roots``, the folders that tables name
    paths relative to); None when the cell names none of these."""
    from nas.spaces.baselines import TRANSPLANTS, resolve_genotype  # loads torch: only when needed

    spec = spec.strip()
    base, _, graft = spec.rpartition("+")
    if base and graft in TRANSPLANTS:
        spec, transplant = base, graft
    else:
        transplant = None
    spec = next((str(root / spec) for root in roots if spec and os.path.isfile(root / spec)), spec)
    try:
        return resolve_genotype(spec, transplant) if spec else None
    except (NasError, OSError):
        return None


# --- the two kinds of page ----------------------------------------------------------------


def _column(header: list[str], rows: list[list[str]], name: str) -> list[str]:
    if name not in header:
        return ["" for _ in rows]
    k = header.index(name)
    return [row[k] for row in rows]


def _typed(cell: str) -> object:
    """A compare.csv cell back as compare wrote it: None (empty), bool, int, float or text."""
    if cell == "":
        return None
    if cell in ("True", "False"):
        return cell == "True"
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def _formatted_table(header: list[str], rows: list[list[str]]) -> str:
    """compare.csv as compare.md formats it (:func:`nas.evaluate.table.table_cells`); a
    row whose values do not format (an edited CSV) shows its name only."""
    head = table_header()
    out = []
    for row in rows:
        values = {key: _typed(cell) for key, cell in zip(header, row)}
        try:
            out.append(table_cells(values))
        except (TypeError, ValueError):
            out.append([str(values.get("name") or ""), *[""] * (len(head) - 1)])
    return html_table(head, out, rounded=False)


def _notes_html(path: Path, base: Path) -> list[str]:
    return [f'<p class="note">{_inline(line)}</p>' for line in _notes(path, base)]


def _compare_body(run: Path, cells: _Cells, base: Path) -> list[str]:
    header, rows = _read_csv(run / "compare.csv", base)
    body = ["<h2>Results</h2>", _formatted_table(header, rows)]
    body += _notes_html(run / "compare.md", base)
    body.append("<h2>Cells</h2>")
    folders = {d.name: d for d in run.iterdir() if d.is_dir()}
    names = _column(header, rows, "name")
    specs = dict(zip(names, _column(header, rows, "genotype")))
    shown = []
    for name in [*names, *sorted(folders)]:
        if name in shown:
            continue
        folder = folders.get(name)
        trained = sorted(folder.glob("seed*/genotype.yaml")) if folder else []
        if folder is not None and (folder / "genotype.yaml").is_file():
            trained.insert(0, folder / "genotype.yaml")
        if trained:
            where = trained[0].relative_to(run)
            try:
                genotype, source = load_genotype(trained[0]), f"trained: {where}"
            except NasError as exc:
                why = relative_paths(str(exc), base)
                genotype, source = None, f"cannot read {where}: {why}"
        elif name in specs and (genotype := _spec_genotype(specs[name], (base, run))):
            source = f"from the table: {specs[name]}"
        else:
            continue  # a summary row (e.g. a group's mean) or a folder that is no entry
        shown.append(name)
        body.append(_genotype_block(name, genotype, source, cells))
    if not shown:
        body.append('<p class="note">no genotypes found in this run</p>')
    body += ["<h2>Pareto plots</h2>", _pareto_plots(run)]
    sig_header, sig_rows = _md_table(run / "significance.md", base)
    if sig_rows:  # written by nas compare when there are several training seeds
        body += ["<h2>Beyond seed noise? (exact permutation tests)</h2>",
                 html_table(sig_header, sig_rows)]
        body += _notes_html(run / "significance.md", base)
    body += ["<h2>Raw data</h2>",
             _details("compare.csv (every column, exact values)", html_table(header, rows))]
    return body


def _mo_body(run: Path, cells: _Cells, base: Path) -> list[str]:
    header, rows = _read_csv(run / "pareto.csv", base)
    trials_header, trials = _read_csv(run / "trials.csv", base)
    body = ["<h2>Pareto front</h2>"]
    if (run / "pareto.csv").is_file():
        md_header, md_rows = _md_table(run / "pareto.md", base)
        body.append(html_table(md_header, md_rows, rounded=False) if md_rows
                    else html_table(header, rows))
    else:
        body.append('<p class="note">no pareto.csv: no trial completed with an accuracy</p>')
    body += _notes_html(run / "pareto.md", base)
    body.append("<h2>Cells of the Pareto points</h2>")
    for trial, spec in zip(_column(header, rows, "trial"), _column(header, rows, "genotype")):
        path = run / "pareto" / f"trial_{trial}.yaml"
        genotype, source = None, f"no genotype for trial {trial}"
        if path.is_file():
            try:
                genotype, source = load_genotype(path), f"file: {path.relative_to(run)}"
            except NasError as exc:
                why = relative_paths(str(exc), base)
                source = f"cannot read {path.relative_to(run)}: {why}"
        if genotype is None and (parsed := _spec_genotype(spec, (base, run))) is not None:
            genotype, source = parsed, "from pareto.csv"
        body.append(_genotype_block(f"trial {trial}", genotype, source, cells))
    if not rows:
        body.append('<p class="note">no Pareto points</p>')
    body += ["<h2>Pareto plots</h2>", _pareto_plots(run), "<h2>Raw data</h2>"]
    if rows:
        body.append(_details("pareto.csv (every column, exact values)",
                             html_table(header, rows)))
    body.append(_details(f"trials.csv (all {len(trials)} trials)",
                         html_table(trials_header, trials)))
    return body


def render_report(run_dir: str | Path, relative_to: str | Path | None = None) -> str:
    """The HTML page of a compare or mo-search run folder (see the module docstring);
    paths on it are relative to ``relative_to`` (default: the run folder)."""
    run = Path(run_dir)
    kind = run_kind(run)
    base = Path(relative_to).expanduser() if relative_to is not None else run
    owner = run_owner(run)
    name = owner["config"] if owner else run.resolve().name
    title = f"nas {kind}: {name}"
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    where = relative_path(run, base)
    where = run.resolve().name if where == "." else where
    body = [f"<h1>{_esc(title)}</h1>",
            f'<p class="meta">run folder <code>{_esc(where)}</code>; report written '
            f"{_esc(when)} by <code>nas report</code></p>"]
    with tempfile.TemporaryDirectory(prefix="nas-report-") as tmp:
        cells = _Cells(Path(tmp), base)
        body += _compare_body(run, cells, base) if kind == "compare" else _mo_body(run, cells, base)
    config = _text(run / "config.yaml", base)
    if config is None:
        body.append('<p class="note">no config.yaml in the run folder</p>')
    else:
        body.append(_details("config.yaml", f"<pre>{_esc(config)}</pre>"))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_report(
    run_dir: str | Path, out: str | Path | None = None, relative_to: str | Path | None = None
) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN/report.html``), atomically;
    ``relative_to`` as in :func:`render_report`."""
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give the HTML file to write")
    page = render_report(run_dir, relative_to)
    try:
        atomic_write_text(path, page)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write ({exc.strerror or exc})") from None
    return path


# --- command line -------------------------------------------------------------------------


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``nas report`` subcommand (its handler: :func:`cmd_report`)."""
    p = subparsers.add_parser(
        "report", help=_DOC, description=_DOC[0].upper() + _DOC[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("example: nas report runs/compare/quick   (writes runs/compare/quick/report.html)\n"
                "         nas report runs/mo-search/quick --out front.html"),
    )
    p.add_argument("run", metavar="RUN", help="a `nas compare` or `nas mo-search` run folder")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html)")
    p.add_argument("--paths-relative-to", metavar="DIR", default=None,
                   help="name files on the page relative to DIR (default: RUN), e.g. the "
                        "experiment folder of committed results")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    print(write_report(args.run, args.out, args.paths_relative_to))
    return 0
