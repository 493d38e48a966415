"""metrics.csv and every plot are written to a temp file and renamed: a failure (or a kill)
part-way through leaves the previous file intact and no temp file behind."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from nas.evaluate.compare import pareto_figure
from nas.plots import plot_alphas, plot_cell
from nas.run import RunDir, atomic_savefig
from nas.spaces.baselines import BASELINES

OLD = b"previous contents\n"


class Crash(Exception):
    """Stands in for a kill or a full disk in the middle of a write."""


def _half_written_savefig(self: Figure, fname, *args, **kwargs) -> None:
    """Writes a few bytes where it was told to, then dies."""
    if isinstance(fname, (str, Path)):
        Path(fname).write_bytes(b"\x89PNG half")
    else:
        fname.write(b"\x89PNG half")
    raise Crash


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_metrics_csv_survives_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = RunDir(tmp_path)
    run.log_metrics({"epoch": 0, "train_loss": 1.5})
    before = (tmp_path / "metrics.csv").read_bytes()

    def die(self, rows):
        raise Crash

    monkeypatch.setattr(csv.DictWriter, "writerows", die)
    with pytest.raises(Crash):
        run.log_metrics({"epoch": 1, "train_loss": 1.2})
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_metrics_csv_content(tmp_path: Path):
    run = RunDir(tmp_path)
    run.log_metrics({"epoch": 0, "a": 1})
    run.log_metrics({"epoch": 1, "a": 2, "b": 3})
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows == [{"epoch": "0", "a": "1", "b": ""}, {"epoch": "1", "a": "2", "b": "3"}]


def _alphas(path: Path) -> None:
    plot_alphas(["a", "b"], {"normal": [[0.5, 0.5]], "reduce": [[0.2, 0.8]], "epoch": 0}, path)


def _pareto(path: Path) -> None:
    rows = [{"name": "x", "acc_mean": 0.5, "acc_std": 0.01, "seeds": 2, "params_M": 1.0},
            {"name": "y", "acc_mean": 0.6, "acc_std": 0.0, "seeds": 1, "params_M": 2.0}]
    atomic_savefig(pareto_figure(rows, "params_M", "parameters (M)"), path, dpi=50)


def _cell(path: Path) -> None:
    plot_cell(BASELINES["DARTS_V2"], "normal", path)


def _figure(path: Path) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    atomic_savefig(fig, path, dpi=50)


PLOTTERS = {"alphas": _alphas, "pareto": _pareto, "cell": _cell, "figure": _figure}


@pytest.mark.parametrize("name", PLOTTERS)
def test_plot_replaces_file_whole(name: str, tmp_path: Path):
    path = tmp_path / "plot.png"
    path.write_bytes(OLD)
    PLOTTERS[name](path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", PLOTTERS)
def test_plot_failure_keeps_previous_file(name: str, tmp_path: Path, monkeypatch):
    path = tmp_path / "plot.png"
    path.write_bytes(OLD)
    monkeypatch.setattr(Figure, "savefig", _half_written_savefig)
    with pytest.raises(Crash):
        PLOTTERS[name](path)
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []
