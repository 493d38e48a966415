"""The holdout: a seeded, stratified part of the training set; the test split is never read."""

from __future__ import annotations

import pytest
import torch

import nas.runtime
from nas.config import load_config
from nas.data import ImageTensors, holdout_split, load_dataset
from nas.errors import ConfigError
from nas.evaluate.train import TrainConfig, run_train

SMALL = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=16", "data.eval_batch_size=32", "data.cutout=2",
    "model.layers=3", "model.init_channels=4", "runtime.progress=false",
]


def _labelled(counts: list[int]) -> ImageTensors:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    # Each image carries its own index, so the two halves can be traced back.
    idx = torch.arange(len(labels))
    images = torch.stack([idx % 256, idx // 256], 1).to(torch.uint8).view(-1, 2, 1, 1)
    return ImageTensors(images, labels, len(counts), "toy", (0.5, 0.5), (0.25, 0.25))


def _ids(data: ImageTensors) -> set[int]:
    im = data.images.view(-1, 2).long()
    return set((im[:, 0] + 256 * im[:, 1]).tolist())


def test_holdout_is_a_stratified_seeded_partition():
    data = _labelled([100, 40, 10, 50])
    train, held = holdout_split(data, 0.2, seed=3)
    assert _ids(train).isdisjoint(_ids(held))
    assert _ids(train) | _ids(held) == set(range(200))
    # Stratified: each class gives round(0.2 · count) images.
    assert torch.bincount(held.labels, minlength=4).tolist() == [20, 8, 2, 10]
    assert torch.bincount(train.labels, minlength=4).tolist() == [80, 32, 8, 40]
    # Same seed, same split; another seed, another split.
    assert _ids(holdout_split(data, 0.2, seed=3)[1]) == _ids(held)
    assert _ids(holdout_split(data, 0.2, seed=4)[1]) != _ids(held)
    # Chosen at random within a class, not the first images of each class.
    class0 = _ids(held) & set(range(100))
    assert class0 != set(range(20)) and class0 != set(range(80, 100))


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1])
def test_holdout_share_out_of_range(share):
    with pytest.raises(ConfigError, match="holdout"):
        holdout_split(_labelled([5, 5]), share)


def test_holdout_training_never_loads_the_test_split(tmp_path, monkeypatch):
    loaded: list[str] = []

    def guarded(name, split="train", *args, **kwargs):
        loaded.append(split)
        if split == "test":
            raise AssertionError("the test split was loaded during a holdout run")
        return load_dataset(name, split, *args, **kwargs)

    monkeypatch.setattr(nas.runtime, "load_dataset", guarded)
    cfg = load_config(TrainConfig, None, [
        f"run_dir={tmp_path}", "optim.epochs=2", *SMALL, "holdout=0.25",
    ])
    [result] = run_train(cfg)
    assert loaded and set(loaded) == {"train"}
    assert result.test_acc is None
    assert result.val_acc is not None and 0.0 <= result.val_acc <= 1.0
    rows = [r for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if r]
    assert all('"test_acc"' not in r for r in rows)
    assert sum('"val_acc"' in r for r in rows) == 2


def test_without_holdout_the_test_split_is_evaluated(tmp_path, monkeypatch):
    loaded: list[str] = []

    def recording(name, split="train", *args, **kwargs):
        loaded.append(split)
        return load_dataset(name, split, *args, **kwargs)

    monkeypatch.setattr(nas.runtime, "load_dataset", recording)
    cfg = load_config(TrainConfig, None, [f"run_dir={tmp_path}", "optim.epochs=1", *SMALL])
    [result] = run_train(cfg)
    assert loaded == ["train", "test"]
    assert result.test_acc is not None and result.val_acc is None


def test_retraining_freezes_ssl_shifts_at_freeze_at(tmp_path):
    """ssl.freeze_at=0.5 of 4 epochs: displacements learn in epochs 0-1, then stay put."""
    from nas.evaluate.train import TrainJob
    from nas.ops import SparseShift2d

    cfg = load_config(TrainConfig, None, [
        f"run_dir={tmp_path}", "optim.epochs=4", *SMALL, "ssl.freeze_at=0.5",
        "model.genotype=Genotype(normal=[('ssl_conv', 0), ('ssl_conv', 1), ('ssl_conv', 0), "
        "('skip_connect', 2)], normal_concat=[2, 3], reduce=[('ssl_conv', 0), "
        "('max_pool_3x3', 1), ('ssl_conv', 2), ('skip_connect', 1)], reduce_concat=[2, 3])",
        "ssl.penalty=0.01", "optim.lr=0.5",
    ])
    job = TrainJob(cfg)
    shifts = [m for m in job.model.modules() if isinstance(m, SparseShift2d)]
    assert shifts

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for m in shifts for p in m.parameters()]

    moved = []
    for epoch in range(4):
        before = snapshot()
        job.start_epoch(epoch)
        for batch in job.batches():
            job.step(batch)
        moved.append(any(not torch.equal(a, b) for a, b in zip(before, snapshot())))
    assert moved == [True, True, False, False]
