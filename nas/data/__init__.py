"""Datasets as whole uint8 tensors, and a batched on-device loader with augmentation.

Why tensors instead of ``torch.utils.data.Dataset``: the CNN-cell datasets used in
NAS (CIFAR, Fashion-MNIST) fit in a few hundred MB as uint8, so the whole set
can live on the accelerator.  Augmentation (random crop with zero padding,
horizontal flip, cutout) is then a handful of batched tensor ops per batch, and
the input pipeline never waits on Python workers or PIL.

The package, one job per module:

- ``tensors``: :class:`ImageTensors`, a split held as ``images`` (uint8 N×C×H×W) and
  ``labels`` (int64 N) plus its normalisation statistics.
- ``registry``: :func:`load_dataset` and the name → loader tables behind it
  (:data:`DATASET_FORMS`); the loaders: ``cifar``, ``fashion_mnist`` (with the embedded
  sample and :func:`read_idx`), ``npz``, ``imagefolder``, ``synthetic``; ``build``, what
  they share.
- ``splits``: :func:`search_split` (DARTS's weight/architecture halves) and
  :func:`holdout_split` (the stratified model-selection holdout).
- ``augment``: :func:`random_crop_flip`, :func:`cutout`, the vectorised augmentations,
  public so that tests and benchmarks can check them against a manual crop.
- ``loader``: :class:`BatchLoader`, deterministic, resumable, sharded batches.

The conventional PIL + ``DataLoader`` pipeline the benchmarks compare against lives with
them, in ``benchmarks/_pil_loader.py``.
"""

from nas.data.augment import cutout, random_crop_flip
from nas.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from nas.data.fashion_mnist import (
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    SAMPLE_RESOURCE,
    read_idx,
)
from nas.data.loader import BatchLoader
from nas.data.registry import DATASET_FORMS, DATASETS, PATH_DATASETS, default_root, load_dataset
from nas.data.splits import holdout_split, search_split
from nas.data.tensors import ImageTensors

__all__ = [
    "ImageTensors",
    "load_dataset",
    "search_split",
    "holdout_split",
    "BatchLoader",
    "random_crop_flip",
    "cutout",
    "read_idx",
    "default_root",
    "DATASETS",
    "PATH_DATASETS",
    "DATASET_FORMS",
    "DEBIAN_FASHION_MNIST",
    "SAMPLE_RESOURCE",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FASHION_MNIST_CLASSES",
]
