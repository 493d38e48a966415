"""Seeded, learnable toy data for tests and smoke runs."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nas.data.build import as_size, check_kwargs, finish
from nas.data.tensors import ImageTensors, channel_stats
from nas.errors import ConfigError


def _synthetic_arrays(n: int, num_classes: int, size: tuple[int, int], channels: int,
                      seed: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class templates (from ``seed``) plus per-sample shift and noise (from ``stream``)."""
    h, w = size
    g = torch.Generator().manual_seed(seed)
    # Smooth, clearly distinct templates: coarse random grids upsampled to the image size.
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed * 1_000_003 + stream)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    x = templates[labels] * 160.0 + 48.0
    x = x + torch.randn(x.shape, generator=g) * 24.0
    return x.round().clamp(0, 255).to(torch.uint8), labels.to(torch.int64)


def load_synthetic(split: str, kw: dict[str, Any]) -> ImageTensors:
    """Seeded, learnable toy data for tests: a class template plus Gaussian noise.

    Train and test share templates (``seed``) but draw different samples.
    ``num_samples`` defaults to 512 (train) / 128 (test).
    """
    check_kwargs("synthetic", kw, ("mean", "std", "num_samples", "num_classes", "image_size",
                                    "channels", "seed"))
    num_classes = int(kw.get("num_classes", 10))
    channels = int(kw.get("channels", 3))
    size = as_size(kw.get("image_size", 32), "data.image_size")
    seed = int(kw.get("seed", 0))
    default_n = 512 if split == "train" else 128
    n = int(kw.get("num_samples") or default_n)
    if num_classes < 1 or channels < 1 or n < 1:
        raise ConfigError("synthetic data needs num_classes, channels and num_samples >= 1")
    images, labels = _synthetic_arrays(n, num_classes, size, channels, seed,
                                       0 if split == "train" else 1)
    train = images if split == "train" else _synthetic_arrays(
        int(kw.get("num_samples") or 512), num_classes, size, channels, seed, 0)[0]
    classes = [f"class_{i}" for i in range(num_classes)]
    return finish("synthetic", images, labels, num_classes, channel_stats(train), classes, kw)
