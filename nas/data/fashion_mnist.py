"""Fashion-MNIST: torchvision's layout, Debian's IDX files, or the embedded sample."""

from __future__ import annotations

import gzip
import importlib.resources
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data.build import arrays_to_images, check_kwargs, finish, labels_tensor, one_line
from nas.data.tensors import ImageTensors, channel_stats
from nas.errors import DataError

logger = logging.getLogger(__name__)


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


SAMPLE_RESOURCE = "fashion_mnist_sample.npz"


FASHION_MNIST_MEAN = (0.28604060,)


FASHION_MNIST_STD = (0.35302424,)


FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, with numpy.

    Layout: two zero bytes, a type code, the number of dimensions, then one
    big-endian int32 per dimension and the data in C order.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        buf = path.read_bytes()
        if head == b"\x1f\x8b":
            buf = gzip.decompress(buf)  # one zlib call: ~2x faster than GzipFile.read
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {one_line(exc)}") from None
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in types:
        raise DataError(f"{path} is not an IDX file (bad magic {buf[:4].hex()})")
    ndim = buf[3]
    if len(buf) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(types[buf[2]])
    count = math.prod(dims)
    offset = 4 + 4 * ndim
    if len(buf) - offset != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says {dims} but holds "
                        f"{len(buf) - offset} data bytes")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def _idx_file(folder: Path, stem: str) -> Path | None:
    for cand in (folder / f"{stem}.gz", folder / stem):
        if cand.is_file():
            return cand
    return None


def load_fashion_mnist(split: str, root: Path, download: bool,
                       kw: dict[str, Any]) -> ImageTensors:
    check_kwargs("fashion_mnist", kw, ("mean", "std", "debian_dir"))
    train = split == "train"
    stats = (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    # 1. torchvision layout under root (root/FashionMNIST/raw/...).
    ds = None
    if (root / "FashionMNIST").is_dir():  # only then pay torchvision's import
        from torchvision import datasets

        try:
            ds = datasets.FashionMNIST(str(root), train=train, download=False)
        except RuntimeError:
            ds = None
    if ds is not None:
        images = ds.data.to(torch.uint8).unsqueeze(1)
        labels = ds.targets.to(torch.int64)
        return finish("fashion_mnist", images, labels, 10, stats, FASHION_MNIST_CLASSES, kw)
    # 2. Debian's dataset-fashion-mnist package (IDX gz files).
    debian = Path(kw.get("debian_dir") or DEBIAN_FASHION_MNIST)
    prefix = "train" if train else "t10k"
    img_file = _idx_file(debian, f"{prefix}-images-idx3-ubyte")
    lab_file = _idx_file(debian, f"{prefix}-labels-idx1-ubyte")
    if img_file is not None and lab_file is not None:
        x = read_idx(img_file)
        y = read_idx(lab_file)
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.dtype != np.uint8:
            raise DataError(f"fashion_mnist files in {debian} have unexpected shapes "
                            f"{x.shape} {x.dtype} / {y.shape}")
        logger.info("fashion_mnist %s: read %d images from %s", split, x.shape[0], debian)
        images = torch.from_numpy(x).unsqueeze(1)
        labels = labels_tensor(y, "fashion_mnist")
        return finish("fashion_mnist", images, labels, 10, stats, FASHION_MNIST_CLASSES, kw)
    # 3. torchvision download.
    if download:
        from torchvision import datasets

        try:
            ds = datasets.FashionMNIST(str(root), train=train, download=True)
        except Exception as exc:
            raise DataError(
                f"fashion_mnist download to {root} failed ({one_line(exc)}); provide the data "
                f"with data.root=PATH containing FashionMNIST/raw/, or install Debian's "
                f"dataset-fashion-mnist ({DEBIAN_FASHION_MNIST})"
            ) from None
        images = ds.data.to(torch.uint8).unsqueeze(1)
        labels = ds.targets.to(torch.int64)
        return finish("fashion_mnist", images, labels, 10, stats, FASHION_MNIST_CLASSES, kw)
    raise DataError(
        f"fashion_mnist {split} split not found under {root}/FashionMNIST/raw or {debian} and "
        f"download is off; pass data.root=PATH containing FashionMNIST/raw/, install Debian's "
        f"dataset-fashion-mnist, or set data.download=true"
    )


def load_sample(split: str, kw: dict[str, Any]) -> ImageTensors:
    check_kwargs("fashion_mnist_sample", kw, ("mean", "std"))
    res = importlib.resources.files("nas.assets").joinpath(SAMPLE_RESOURCE)
    try:
        with importlib.resources.as_file(res) as p, np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataError(f"embedded sample nas/assets/{SAMPLE_RESOURCE} unreadable "
                        f"({one_line(exc)}); reinstall the package") from None
    xk, yk = ("x", "y") if split == "train" else ("x_test", "y_test")
    train_images = arrays_to_images(arrays["x"], "fashion_mnist_sample")
    images = train_images if split == "train" else arrays_to_images(arrays[xk],
                                                                       "fashion_mnist_sample")
    labels = labels_tensor(arrays[yk], "fashion_mnist_sample")
    classes = [str(c) for c in arrays["classes"].tolist()]
    return finish("fashion_mnist_sample", images, labels, len(classes),
                   channel_stats(train_images), classes, kw)
