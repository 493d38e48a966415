"""Pointing `nas compare` at a search without editing YAML: ``entries.NAME=VALUE``.

YAML list items cannot be overridden by position on a command line, so an entry is
addressed by its name; a missing default search folder is a one-line error naming the
override to use, raised before anything is trained or any run folder is made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.cli.configs import resolve_config
from nas.cli.main import main
from nas.config import load_config
from nas.errors import ConfigError
from nas.evaluate.compare import CompareConfig, check_members, expand_entries, run_compare
from nas.genotype import save_genotype
from nas.spaces.baselines import BASELINES


def _load(name: str, *overrides: str) -> CompareConfig:
    return load_config(CompareConfig, resolve_config(name, "compare"), list(overrides))


def _genotypes(cfg: CompareConfig) -> dict[str, str]:
    return {e.name: e.genotype for e in cfg.entries}


def test_entry_named_on_the_command_line_gets_the_genotype():
    default = _genotypes(_load("darts_cifar10"))
    cfg = _load("darts_cifar10", "entries.searched=runs/search/pcdarts_cifar10")
    assert _genotypes(cfg) == {**default, "searched": "runs/search/pcdarts_cifar10"}
    assert [e.name for e in cfg.entries] == list(default)  # order kept


def test_any_key_of_an_entry_by_name():
    cfg = _load("darts_cifar10", "entries.searched.genotype=DARTS_V1",
                "entries.O_DARTS.init_channels=36", "seeds=[0]")
    entries = {e.name: e for e in cfg.entries}
    assert entries["searched"].genotype == "DARTS_V1"
    assert entries["O_DARTS"].init_channels == 36 and entries["O_DARTS"].genotype == "O_DARTS"
    # the default entry list (no YAML) is addressable too
    cfg = load_config(CompareConfig, None, ["entries.DARTS_V2.init_channels=8"])
    assert [(e.name, e.init_channels) for e in cfg.entries] == [("DARTS_V2", 8)]


def test_unknown_entry_name_lists_the_names():
    with pytest.raises(ConfigError) as err:
        _load("darts_cifar10", "entries.serched=runs/search/x")
    msg = str(err.value)
    assert "\n" not in msg and "'serched'" in msg
    assert "entries: searched, DARTS_V1, DARTS_V2, PC_DARTS, P_DARTS, O_DARTS" in msg


def test_unknown_key_of_an_entry_names_it():
    with pytest.raises(ConfigError, match="unknown key 'entries\\[0\\].bogus'"):
        _load("darts_cifar10", "entries.searched.bogus=1")


def test_a_search_run_folder_is_the_genotype(tmp_path):
    one = tmp_path / "one"
    save_genotype(BASELINES["DARTS_V2"], one / "genotype.yaml")
    members = expand_entries(_load("quick", f"entries.searched={one}").entries)
    assert members[0].entry.genotype == str(one / "genotype.yaml")
    check_members(members, "quick")
    seeds = tmp_path / "seeds"  # a multi-seed search: one entry per seed
    for seed in (0, 3):
        save_genotype(BASELINES["DARTS_V1"], seeds / f"seed{seed}" / "genotype.yaml")
    (seeds / "summary.md").write_text("seeds\n")
    members = expand_entries(_load("quick", f"entries.searched={seeds}").entries)
    assert [m.entry.name for m in members] == ["searched_s0", "searched_s3", "DARTS_V2"]
    check_members(members, "quick")


def test_missing_default_search_names_the_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    cfg = _load("darts_cifar10", "run_dir=cmp")
    with pytest.raises(ConfigError) as err:
        run_compare(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "runs/search/darts_cifar10" in msg
    assert "nas compare darts_cifar10 entries.searched=RUN_DIR" in msg
    assert not (tmp_path / "cmp").exists()  # refused before the run folder


@pytest.mark.parametrize("config", ["darts_cifar10", "fashion_mnist", "quick"])
def test_cli_shipped_configs_without_their_search_exit_2_with_one_line(
        config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "compare", config]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"nas compare {config} entries.searched=RUN_DIR" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_a_bad_genotype_in_a_later_entry_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_genotype(BASELINES["DARTS_V2"], Path("g.yaml"))
    cfg = _load("quick", "entries.searched=g.yaml", "entries.DARTS_V2=NOT_A_CELL", "run_dir=c")
    with pytest.raises(ConfigError, match="^entries.DARTS_V2: genotype 'NOT_A_CELL'"):
        run_compare(cfg)
    assert not Path("c").exists()
