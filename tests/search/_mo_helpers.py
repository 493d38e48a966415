"""Shared tiny settings for the multi-objective search tests (seconds per trial on CPU)."""

from __future__ import annotations

from pathlib import Path

from nas.config import load_config
from nas.search.mo.trial import MOConfig

TINY = [
    "data.name=synthetic",
    "data.options={num_samples: 40, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "space.ops=[none, skip_connect, max_pool_3x3, sep_conv_3x3, c2sp_conv_2x2, ssl_conv, "
    "bdsc_conv_3x3, osep_conv_3x3, do_conv_3x3]",
    "space.steps=2",
    "space.multiplier=2",
    "budget.epochs=1",
    "budget.init_channels=4",
    "budget.layers=3",
    "latency.repeats=2",
    "population_size=2",
]


def tiny_cfg(run: Path, *extra: str) -> MOConfig:
    return load_config(MOConfig, None, [f"run_dir={run}", *TINY, *extra])
