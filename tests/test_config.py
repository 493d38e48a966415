"""Config loading: YAML + dotted overrides into validated frozen dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from nas.config import DataConfig, load_config, parse_overrides
from nas.errors import ConfigError
from nas.run import RunDir
from nas.search.config import SearchConfig


def test_overrides_nest_and_parse_yaml_scalars():
    tree = parse_overrides(["optim.lr=0.1", "data.name=cifar10", "arch.betas=[0.1, 0.2]"])
    assert tree == {
        "optim": {"lr": 0.1}, "data": {"name": "cifar10"}, "arch": {"betas": [0.1, 0.2]}
    }


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  epochs: 7\ndata:\n  name: synthetic\n")
    cfg = load_config(SearchConfig, path, ["optim.lr=0.5", "arch.order=second"])
    assert cfg.name == "mine" and cfg.optim.epochs == 7 and cfg.optim.lr == 0.5
    assert cfg.arch.order == "second" and cfg.arch.betas == (0.5, 0.999)
    assert cfg.data.name == "synthetic"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.epochs=abc", "optim.epochs: expected an integer"),
        ("arch.order=third", "arch.order: got 'third'"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("nope=1", "unknown key 'nope'"),
        ("optim=3", "optim: expected a mapping"),
        ("badoverride", "key=value"),
    ],
)
def test_errors_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(SearchConfig, None, [override])


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SearchConfig, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(SearchConfig, tmp_path / "missing.yaml")


def test_run_dir_metrics_and_atomic_checkpoint(tmp_path):
    run = RunDir(tmp_path / "r")
    for epoch in range(3):
        run.log_metrics({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.read_metrics()] == [0, 1]
    assert (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0] == "epoch,loss"
    run.save_checkpoint({"epoch": 2, "cfg": DataConfig().name})
    assert run.load_checkpoint() == {"epoch": 2, "cfg": "cifar10"}
    assert not list((tmp_path / "r").glob("*.tmp"))


@dataclasses.dataclass(frozen=True)
class _Item:
    name: str
    size: int = 1


@dataclasses.dataclass(frozen=True)
class _Listing:
    items: list[_Item] = dataclasses.field(default_factory=lambda: [_Item("a"), _Item("b")])
    tags: list[str] = dataclasses.field(default_factory=list)


def test_named_list_entries_take_overrides_by_name(tmp_path):
    path = tmp_path / "listing.yaml"
    path.write_text("items: [{name: a, size: 2}, {name: b}]\n")
    cfg = load_config(_Listing, path, ["items.b.size=5"])
    assert cfg.items == [_Item("a", 2), _Item("b", 5)]
    assert load_config(_Listing, None, ["items.a.size=3"]).items == [_Item("a", 3), _Item("b")]
    # a whole list still replaces the list; plain lists are untouched by the by-name rule
    assert load_config(_Listing, path, ["items=[{name: c}]"]).items == [_Item("c")]
    assert load_config(_Listing, path, ["tags=[x]"]).tags == ["x"]
    with pytest.raises(ConfigError, match=r"no entry named 'z' \(entries: a, b\)"):
        load_config(_Listing, path, ["items.z.size=1"])
    # _Item names no OVERRIDE_KEY: a bare value says which form to use
    with pytest.raises(ConfigError, match=r"items\.a\.KEY=VALUE"):
        load_config(_Listing, path, ["items.a=4"])
    with pytest.raises(ConfigError, match="cannot be renamed"):
        load_config(_Listing, path, ["items.a.name=q"])
