"""Config loading: YAML + dotted overrides into validated frozen dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from nas.config import DataConfig, load_config, parse_overrides
from nas.errors import ConfigError
from nas.run import RunDir
from nas.search.darts import SearchConfig


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
