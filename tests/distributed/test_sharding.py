"""In-process pieces of data parallelism: shards of the global batch, rank-0-only run folders,
the one-line errors (no process group needed)."""

from __future__ import annotations

import pytest
import torch

from nas import distributed
from nas.data import BatchLoader, load_dataset
from nas.errors import ConfigError
from nas.run import RunDir


def _data(n: int):
    return load_dataset("synthetic", "train", num_samples=n, image_size=8, channels=3,
                        num_classes=3)


def _loader(data, batch: int, rank: int = 0, world: int = 1, train: bool = True) -> BatchLoader:
    return BatchLoader(data, batch, shuffle=train, augment=train, crop_padding=2, cutout=4,
                       seed=3, rank=rank, world_size=world)


@pytest.mark.parametrize("n, batch, world", [(21, 8, 2), (24, 8, 2), (22, 9, 3), (17, 8, 2)])
def test_shards_of_a_global_batch_are_the_single_process_batch(n, batch, world):
    """Order, crop, flip and cutout of every rank's shard are those of the same images in
    the single-process batch; a last batch smaller than the world is dropped in training."""
    data = _data(n)
    for epoch in (0, 1):
        single = _loader(data, batch)
        single.set_epoch(epoch)
        expected = list(single)
        ranks = []
        for rank in range(world):
            loader = _loader(data, batch, rank, world)
            loader.set_epoch(epoch)
            ranks.append(list(loader))
            assert len(ranks[-1]) == len(loader)
        assert len({len(r) for r in ranks}) == 1  # every rank takes every step
        short = n % batch and n % batch < world
        assert len(ranks[0]) == len(expected) - (1 if short else 0)
        for i, parts in enumerate(zip(*ranks)):
            sizes = [y.shape[0] for _, y in parts]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
            x = torch.cat([x for x, _ in parts])
            y = torch.cat([y for _, y in parts])
            assert torch.equal(x, expected[i][0]) and torch.equal(y, expected[i][1])


def test_evaluation_shards_cover_the_split_once():
    data = _data(13)
    whole = torch.cat([y for _, y in _loader(data, 4, train=False)])
    shards = [torch.cat([y for _, y in _loader(data, 4, r, 3, train=False)]) for r in range(3)]
    assert sum(len(s) for s in shards) == 13  # the last batch of 1 goes to one rank only
    # batch by batch, rank by rank: the concatenation in batch order is the whole split
    batches = [list(_loader(data, 4, r, 3, train=False)) for r in range(3)]
    assert len(batches[0]) == 3 and len(batches[2]) == 4
    assert torch.equal(torch.sort(torch.cat(shards)).values, torch.sort(whole).values)


def test_single_process_helpers_are_no_ops():
    t = torch.ones(3)
    distributed.average_([t, None], 5)
    distributed.all_reduce_sum_(t)
    distributed.barrier()
    assert torch.equal(t, torch.ones(3))
    assert distributed.current() == distributed.SINGLE
    assert distributed.gather_object({"a": 1}) is None
    assert distributed.check_batch_size(7) == 7


def test_one_line_errors_under_a_world(monkeypatch):
    monkeypatch.setattr(distributed, "current", lambda: distributed.World(1, 2, 1, 2))
    with pytest.raises(ConfigError, match=r"data.batch_size \(7\) must be divisible .* \(2\)"):
        distributed.check_batch_size(7)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ConfigError, match="runtime.sync_bn needs CUDA"):
        distributed.convert_sync_batchnorm(net, torch.device("cpu"), True)
    assert distributed.convert_sync_batchnorm(net, torch.device("cpu"), False) is net


def test_launch_environment_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR is not set"):
        with distributed.session(torch.device("cpu")):
            pass
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x' is not an integer"):
        with distributed.session(torch.device("cpu")):
            pass
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: a plain run
    with distributed.session(torch.device("cpu")) as world:
        assert world == distributed.SINGLE


def test_read_only_run_dir_writes_nothing(tmp_path):
    path = tmp_path / "run"
    view = RunDir(path, read_only=True)
    assert not path.exists() and not view.writes
    view.attach_log()
    view.save_config("a: 1\n")
    view.log_metrics({"epoch": 0})
    view.truncate_metrics(0)
    view.save_checkpoint({"epoch": 1})
    view.write_text("x.txt", "x")
    view.write_bytes("y.bin", b"y")
    assert not path.exists()
    assert view.load_checkpoint() is None  # it still reads
    real = RunDir(path)
    real.save_checkpoint({"epoch": 2})
    assert RunDir(path, read_only=True).load_checkpoint()["epoch"] == 2


def test_main_process_from_the_launch_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "3")
    assert distributed.is_main_process()  # not launched: a plain run prints
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert not distributed.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert distributed.is_main_process()
