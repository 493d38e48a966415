"""TensorBoard event files: scalars per epoch, α entropy + heatmap, purge on resume."""

from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nas.tensorboard import TensorBoardLog, alpha_entropy


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_alpha_entropy_bounds():
    assert alpha_entropy([[0.25] * 4, [0.25] * 4]) == pytest.approx(math.log(4))
    assert alpha_entropy([[1.0, 0.0, 0.0]]) == pytest.approx(0.0, abs=1e-9)


def test_scalars_alphas_and_figures_are_readable(tmp_path):
    tb = TensorBoardLog(tmp_path)
    ops = ["none", "skip_connect", "sep_conv_3x3"]
    uniform = [[1 / 3] * 3] * 2
    for epoch in (1, 2):
        tb.scalars({"epoch": epoch, "train_loss": 2.0 / epoch, "val_acc": 0.1 * epoch,
                    "lr": 0.025, "genotype": "not a number", "stopped": False,
                    "bad": float("nan")}, step=epoch)
        tb.alphas(ops, {"epoch": epoch - 1, "normal": uniform, "reduce": uniform}, step=epoch)
    tb.close()
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert {"train_loss", "val_acc", "lr", "alpha_entropy/normal"} <= set(tags["scalars"])
    assert "genotype" not in tags["scalars"] and "stopped" not in tags["scalars"]
    assert "bad" not in tags["scalars"]
    assert [(e.step, e.value) for e in acc.Scalars("train_loss")] == [(1, 2.0), (2, 1.0)]
    assert acc.Scalars("alpha_entropy/normal")[0].value == pytest.approx(math.log(3), rel=1e-6)
    assert len(acc.Images("alphas")) == 2


def test_resume_purges_the_tail_after_the_checkpoint(tmp_path):
    tb = TensorBoardLog(tmp_path)
    for epoch in (1, 2, 3):
        tb.scalars({"train_loss": float(epoch)}, step=epoch)
    tb.close()
    tb = TensorBoardLog(tmp_path, purge_step=3)  # resumed from the checkpoint after epoch 2
    tb.scalars({"train_loss": 30.0}, step=3)
    tb.close()
    assert [(e.step, e.value) for e in _events(tmp_path).Scalars("train_loss")] == [
        (1, 1.0), (2, 2.0), (3, 30.0)]


def test_disabled_writes_nothing(tmp_path):
    tb = TensorBoardLog(tmp_path / "run", enabled=False)
    tb.scalars({"train_loss": 1.0}, step=1)
    tb.close()
    assert not (tmp_path / "run").exists()
