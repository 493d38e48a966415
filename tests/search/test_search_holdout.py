"""A search with ``holdout`` never sees the held-out images (what an MO darts trial scores on)."""

from __future__ import annotations

import torch

from nas.config import load_config
from nas.data import holdout_split
from nas.run import RunDir
from nas.runtime import load_splits
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob

TINY = [
    "data.name=synthetic",
    "data.options={num_samples: 48, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=8", "space.steps=2", "space.multiplier=2",
    "space.ops=[none, skip_connect, sep_conv_3x3]", "model.init_channels=4", "model.layers=3",
    "runtime.progress=false",
]


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.flatten().tolist()) for x in images.cpu()}


def test_search_leaves_the_holdout_out(tmp_path):
    cfg = load_config(SearchConfig, None, [*TINY, "holdout=0.25", "holdout_seed=3"])
    job = SearchJob(cfg, RunDir(tmp_path))
    seen = _rows(job.train_loader.data.images) | _rows(job.val_loader.data.images)
    full, _ = load_splits(cfg.data, test=False)
    kept, held = holdout_split(full, 0.25, seed=3)
    assert len(seen) == len(kept) == 36
    assert seen == _rows(kept.images) and seen.isdisjoint(_rows(held.images))
