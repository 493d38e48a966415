"""A dataset in one ``.npz`` file: ``x``/``y`` train, ``x_test``/``y_test`` test."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nas.data.build import arrays_to_images, check_kwargs, finish, labels_tensor, one_line
from nas.data.tensors import ImageTensors, channel_stats
from nas.errors import DataError

logger = logging.getLogger(__name__)


def load_npz(path: Path, split: str, kw: dict[str, Any]) -> ImageTensors:
    """Arrays ``x``/``y`` are the train split, ``x_test``/``y_test`` the test split.

    A missing ``x_test`` for ``split="test"`` is an error rather than a silent
    held-out split, so reported test accuracy always means the file's own test set.
    Optional ``classes`` holds the class names.
    """
    check_kwargs("npz", kw, ("mean", "std"))
    if not path.is_file():
        raise DataError(f"npz dataset file not found: {path}")
    if not zipfile.is_zipfile(path):  # np.load would read a .npy array or guess a pickle
        raise DataError(f"npz dataset {path} is not an .npz archive; write it with numpy.savez")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read npz dataset {path}: {one_line(exc)}") from None
    with npz:
        keys = set(npz.files)
        xk, yk = ("x", "y") if split == "train" else ("x_test", "y_test")
        for k in ("x", "y", xk, yk):
            if k not in keys:
                raise DataError(f"npz dataset {path} has no key {k!r} needed for split={split} "
                                f"(keys: {', '.join(sorted(keys)) or 'none'})")
        try:
            x_train = npz["x"]
            y_all = [npz["y"]] + ([npz["y_test"]] if "y_test" in keys else [])
            classes = [str(c) for c in npz["classes"].tolist()] if "classes" in keys else None
            x = npz[xk]
            y = npz[yk]
        except Exception as exc:
            raise DataError(f"cannot read npz dataset {path}: {one_line(exc)}") from None
    what = f"npz {path.name}"
    train_images = arrays_to_images(x_train, what)
    images = train_images if split == "train" else arrays_to_images(x, what)
    labels = labels_tensor(y, what)
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels "
                        f"({xk}/{yk})")
    if split == "test" and images.shape[1:] != train_images.shape[1:]:
        raise DataError(f"{what}: test images {tuple(images.shape[1:])} differ from train "
                        f"{tuple(train_images.shape[1:])}")
    max_label = max((int(labels_tensor(a, what).max()) for a in y_all if np.size(a)), default=-1)
    num_classes = len(classes) if classes is not None else max_label + 1
    if classes is not None and max_label >= num_classes:
        raise DataError(f"{what}: label {max_label} but only {num_classes} class names")
    _, c, h, w = images.shape
    logger.info("npz %s (%s): %d images, %d channel(s), %dx%d, %d classes",
                path, split, images.shape[0], c, h, w, num_classes)
    stats = channel_stats(train_images)
    return finish(f"npz:{path}", images, labels, num_classes, stats, classes, kw)
