"""CIFAR-10 and CIFAR-100 through torchvision, read straight into tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data.build import check_kwargs, finish, one_line
from nas.data.tensors import ImageTensors
from nas.errors import DataError

# Per-channel statistics of the training sets, in [0, 1] units (population std).
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)


CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)


CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)


def load_cifar(key: str, split: str, root: Path, download: bool,
               kw: dict[str, Any]) -> ImageTensors:
    check_kwargs(key, kw, ("mean", "std"))
    folder = "cifar-10-batches-py" if key == "cifar10" else "cifar-100-python"
    hint = (f"provide the data with data.root=PATH containing the torchvision folder {folder}/ "
            f"(or set NAS_DATA), or set data.download=true with network access")
    if not download and not (root / folder).is_dir():  # fail fast, without importing torchvision
        raise DataError(f"{key} not found: no {folder}/ under {root} and download is off; {hint}")
    from torchvision import datasets

    cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except Exception as exc:  # torchvision raises RuntimeError, urllib OSError/URLError
        how = "download failed" if download else "unreadable"
        raise DataError(f"{key} {split} split {how} under {root} ({one_line(exc)}); {hint}"
                        ) from None
    # .data is N×32×32×3 uint8 numpy: one permute, no per-image PIL round trip.
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    stats = (CIFAR10_MEAN, CIFAR10_STD) if key == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return finish(key, images, labels, len(ds.classes), stats, ds.classes, kw)
