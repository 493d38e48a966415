"""Dataset names to loaders, as torchvision keeps a registry of its models, and
:func:`load_dataset`, the one entry point that reads them."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from nas.data.cifar import load_cifar
from nas.data.fashion_mnist import load_fashion_mnist, load_sample
from nas.data.imagefolder import load_imagefolder
from nas.data.npz import load_npz
from nas.data.synthetic import load_synthetic
from nas.data.tensors import ImageTensors
from nas.errors import ConfigError

__all__ = ["DATASETS", "PATH_DATASETS", "DATASET_FORMS", "default_root", "load_dataset"]

#: ``loader(split, root, download, kw)`` of a dataset known by name.
NamedLoader = Callable[[str, Path, bool, dict[str, Any]], ImageTensors]
#: ``loader(path, split, kw)`` of a dataset given as ``<form>:PATH``.
PathLoader = Callable[[Path, str, dict[str, Any]], ImageTensors]

SPLITS = ("train", "test")


def _local(load: Callable[[str, dict[str, Any]], ImageTensors]) -> NamedLoader:
    """A loader that reads no ``root`` and downloads nothing, as a :data:`NamedLoader`."""
    def named(split: str, root: Path, download: bool, kw: dict[str, Any]) -> ImageTensors:
        return load(split, kw)

    return named


DATASETS: dict[str, NamedLoader] = {
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
    "fashion_mnist": load_fashion_mnist,
    "fashion_mnist_sample": _local(load_sample),
    "synthetic": _local(load_synthetic),
}
_ALIASES = {"fashionmnist": "fashion_mnist"}
PATH_DATASETS: dict[str, PathLoader] = {"npz": load_npz, "imagefolder": load_imagefolder}

DATASET_FORMS = (
    f"{', '.join(DATASETS)}, npz:PATH (or a path ending in .npz), imagefolder:PATH"
)


def default_root() -> Path:
    """Where torchvision datasets are looked for: ``$NAS_DATA`` or ``~/.cache/nas/data``."""
    env = os.environ.get("NAS_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/nas/data").expanduser()


def load_dataset(name: str, split: str = "train", root: str | os.PathLike[str] | None = None,
                 download: bool = True, **kw: Any) -> ImageTensors:
    """Load a dataset split as uint8 tensors.

    ``name`` is one of :data:`DATASET_FORMS`.  ``root`` is where torchvision
    datasets live (default :func:`default_root`); ``download`` allows
    torchvision to fetch CIFAR / Fashion-MNIST when they are missing.  Every
    loader accepts ``mean=`` / ``std=`` to override the statistics; other
    keyword arguments are loader specific (``image_size`` for imagefolder;
    ``num_samples``, ``num_classes``, ``image_size``, ``channels``, ``seed``
    for synthetic; ``debian_dir`` for fashion_mnist).
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dataset name must be a non-empty string; valid: {DATASET_FORMS}")
    if split not in SPLITS:
        raise ConfigError(f"data split must be one of {', '.join(SPLITS)}, got {split!r}")
    raw = name.strip()
    form, sep, rest = raw.partition(":")
    if sep and form.lower() in PATH_DATASETS:
        return PATH_DATASETS[form.lower()](Path(rest).expanduser(), split, kw)
    if raw.lower().endswith(".npz"):
        return PATH_DATASETS["npz"](Path(raw).expanduser(), split, kw)
    key = raw.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid: {DATASET_FORMS}")
    root_path = Path(root).expanduser() if root is not None else default_root()
    return DATASETS[key](split, root_path, download, kw)
