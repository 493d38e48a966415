"""CLI surface: every subcommand is wired, plot writes files, errors exit 2."""

from __future__ import annotations

import pytest

from nas.cli import build_parser, main


def test_all_commands_present():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"search", "mo-search", "train", "deploy", "compare", "plot", "quickstart"} <= set(
        sub.choices
    )


def test_plot_baseline_and_string(tmp_path, capsys):
    assert main(["plot", "DARTS_V2", "--out", str(tmp_path), "--format", "svg"]) == 0
    assert (tmp_path / "DARTS_V2_normal.svg").stat().st_size > 0
    assert (tmp_path / "DARTS_V2_reduce.svg").stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["plot", "NOT_A_BASELINE"],
        ["plot", "Genotype(normal=__import__('os').system('true'), normal_concat=[2])"],
        ["deploy", "/nonexistent/run"],
        ["train", "quick", "model.genotype=DARTS_V9"],
    ],
)
def test_bad_input_exits_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
