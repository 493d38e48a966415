"""Datasets as whole uint8 tensors, and a batched on-device loader with augmentation.

Why tensors instead of ``torch.utils.data.Dataset``: the CNN-cell datasets used in
NAS (CIFAR, Fashion-MNIST) fit in a few hundred MB as uint8, so the whole set
can live on the accelerator.  Augmentation (random crop with zero padding,
horizontal flip, cutout) is then a handful of batched tensor ops per batch, and
the input pipeline never waits on Python workers or PIL.

Public API:

- :class:`ImageTensors` - a dataset held as ``images`` (uint8 N×C×H×W) and
  ``labels`` (int64 N) plus its normalisation statistics.
- :func:`load_dataset` - ``cifar10``, ``cifar100``, ``fashion_mnist``,
  ``fashion_mnist_sample`` (shipped with the package), ``synthetic``,
  ``npz:PATH`` / ``PATH.npz`` and ``imagefolder:PATH``.
- :func:`search_split` - DARTS's split of the training set into the halves
  that train the weights and the architecture.
- :class:`BatchLoader` - deterministic, resumable batches, augmented on device.
- :func:`random_crop_flip`, :func:`cutout` - the vectorised augmentations,
  public so that tests and benchmarks can check them against a manual crop.
- :func:`torchvision_loader` - the conventional PIL + ``DataLoader`` pipeline
  over the same data, the reference that benchmarks compare against.
- :func:`read_idx` - a numpy reader for the IDX files of (Fashion-)MNIST.

Cutout is applied *after* normalisation and zeroes the normalised values, as in
DARTS (``ToTensor -> Normalize -> Cutout``); crop padding is zero in pixel
space (black), as torchvision's ``RandomCrop(padding=...)`` does.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import logging
import math
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.errors import ConfigError, DataError

__all__ = [
    "ImageTensors",
    "load_dataset",
    "search_split",
    "holdout_split",
    "BatchLoader",
    "random_crop_flip",
    "cutout",
    "torchvision_loader",
    "read_idx",
    "default_root",
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

logger = logging.getLogger(__name__)

DATASET_FORMS = (
    "cifar10, cifar100, fashion_mnist, fashion_mnist_sample, synthetic, "
    "npz:PATH (or a path ending in .npz), imagefolder:PATH"
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_RESOURCE = "fashion_mnist_sample.npz"

# Per-channel statistics of the training sets, in [0, 1] units (population std).
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)
CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)
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

_SPLITS = ("train", "test")
_IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
)


# --------------------------------------------------------------------------- container


@dataclass(frozen=True)
class ImageTensors:
    """A whole image-classification split as tensors.

    ``images`` stay uint8 (4x smaller than float, so whole datasets fit on the
    device); conversion to normalised float happens per batch in
    :class:`BatchLoader`.  ``mean``/``std`` are per channel in [0, 1] units and
    always come from the *training* split, so train and test normalise alike.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        im, lb = self.images, self.labels
        if not isinstance(im, torch.Tensor) or im.dtype != torch.uint8 or im.dim() != 4:
            raise DataError(f"{self.name}: images must be a uint8 N×C×H×W tensor, got "
                            f"{getattr(im, 'dtype', type(im))} {tuple(getattr(im, 'shape', ()))}")
        if not isinstance(lb, torch.Tensor) or lb.dtype != torch.int64 or lb.dim() != 1:
            raise DataError(f"{self.name}: labels must be an int64 vector, got "
                            f"{getattr(lb, 'dtype', type(lb))} {tuple(getattr(lb, 'shape', ()))}")
        if lb.shape[0] != im.shape[0]:
            raise DataError(f"{self.name}: {im.shape[0]} images but {lb.shape[0]} labels")
        c = im.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"{self.name}: mean/std need {c} values (one per channel), got "
                            f"{len(self.mean)}/{len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise DataError(f"{self.name}: std must be positive, got {self.std}")
        if self.num_classes < 1:
            raise DataError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.classes)} class names for "
                            f"{self.num_classes} classes")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image: what a network's stem needs to know."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def subset(self, indices: torch.Tensor | Sequence[int] | slice) -> ImageTensors:
        """The same dataset restricted to ``indices`` (ints, bool mask or slice); statistics
        are kept, since they describe the training distribution."""
        if isinstance(indices, slice):
            return dataclasses.replace(self, images=self.images[indices],
                                       labels=self.labels[indices])
        idx = torch.as_tensor(indices).to(self.images.device)
        idx = idx.nonzero().flatten() if idx.dtype == torch.bool else idx.to(torch.long)
        return dataclasses.replace(self, images=self.images.index_select(0, idx),
                                   labels=self.labels.index_select(0, idx))

    def to(self, device: torch.device | str) -> ImageTensors:
        """A copy on ``device`` (no copy if already there)."""
        device = torch.device(device)
        return dataclasses.replace(self, images=self.images.to(device),
                                   labels=self.labels.to(device))


# --------------------------------------------------------------------------- helpers


def default_root() -> Path:
    """Where torchvision datasets are looked for: ``$NAS_DATA`` or ``~/.cache/nas/data``."""
    env = os.environ.get("NAS_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/nas/data").expanduser()


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...],
                                                                     tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units, in float64 chunks (no full float copy)."""
    n, c = images.shape[0], images.shape[1]
    if n == 0:
        raise DataError("cannot compute mean/std of an empty dataset")
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, chunk):  # loop over chunks of thousands of images, not samples
        x = images[i:i + chunk].to(device="cpu", dtype=torch.float64)
        s += x.sum(dim=(0, 2, 3))
        s2 += x.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = s / count
    var = (s2 / count - mean.square()).clamp_min(0)
    std = var.sqrt() / 255.0
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant channel: leave unscaled
    return tuple(float(v) for v in mean / 255.0), tuple(float(v) for v in std)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ConfigError(f"data split must be one of {', '.join(_SPLITS)}, got {split!r}")
    return split


def _check_kwargs(loader: str, kw: dict[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(kw) - set(allowed))
    if extra:
        ok = ", ".join(allowed) if allowed else "none"
        raise ConfigError(f"dataset {loader} does not take {', '.join(extra)} (options: {ok})")


def _stats_override(kw: dict[str, Any], channels: int) -> tuple[tuple[float, ...] | None,
                                                                 tuple[float, ...] | None]:
    def one(key: str) -> tuple[float, ...] | None:
        v = kw.get(key)
        if v is None:
            return None
        vals = (float(v),) * channels if isinstance(v, (int, float)) else tuple(float(t) for t in v)
        if len(vals) != channels:
            raise ConfigError(f"data.{key} needs {channels} values, got {len(vals)}")
        return vals

    return one("mean"), one("std")


def _labels_tensor(y: np.ndarray | Sequence[int] | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.array(y))  # copy: npz/IDX buffers are read-only
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{what}: labels must be a 1-D integer array, got "
                        f"{t.dtype} {tuple(t.shape)}")
    t = t.to(torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"{what}: labels must be >= 0, found {int(t.min())}")
    return t


def _finish(name: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
            train_stats: tuple[tuple[float, ...], tuple[float, ...]],
            classes: Sequence[str] | None, kw: dict[str, Any]) -> ImageTensors:
    """Build the container, applying user mean/std overrides."""
    mean, std = _stats_override(kw, images.shape[1])
    if labels.numel() and int(labels.max()) >= num_classes:
        raise DataError(f"{name}: label {int(labels.max())} >= num_classes {num_classes}")
    return ImageTensors(
        images=images.contiguous(),
        labels=labels,
        num_classes=int(num_classes),
        name=name,
        mean=mean or train_stats[0],
        std=std or train_stats[1],
        classes=tuple(str(c) for c in classes) if classes is not None else None,
    )


# --------------------------------------------------------------------------- loaders


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
    split = _check_split(split)
    root_path = Path(root).expanduser() if root is not None else default_root()
    raw = name.strip()
    key = raw.lower().replace("-", "_")
    if key.startswith("npz:"):
        return _load_npz(Path(raw[4:]).expanduser(), split, kw)
    if key.startswith("imagefolder:"):
        return _load_imagefolder(Path(raw[len("imagefolder:"):]).expanduser(), split, kw)
    if key.endswith(".npz"):
        return _load_npz(Path(raw).expanduser(), split, kw)
    if key in ("cifar10", "cifar100"):
        return _load_cifar(key, split, root_path, download, kw)
    if key in ("fashion_mnist", "fashionmnist"):
        return _load_fashion_mnist(split, root_path, download, kw)
    if key == "fashion_mnist_sample":
        return _load_sample(split, kw)
    if key == "synthetic":
        return _load_synthetic(split, kw)
    raise ConfigError(f"unknown dataset {name!r}; valid: {DATASET_FORMS}")


def _load_cifar(key: str, split: str, root: Path, download: bool,
                kw: dict[str, Any]) -> ImageTensors:
    _check_kwargs(key, kw, ("mean", "std"))
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
        raise DataError(f"{key} {split} split {how} under {root} ({_one_line(exc)}); {hint}"
                        ) from None
    # .data is N×32×32×3 uint8 numpy: one permute, no per-image PIL round trip.
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    stats = (CIFAR10_MEAN, CIFAR10_STD) if key == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return _finish(key, images, labels, len(ds.classes), stats, ds.classes, kw)


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
        raise DataError(f"cannot read IDX file {path}: {_one_line(exc)}") from None
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


def _load_fashion_mnist(split: str, root: Path, download: bool,
                        kw: dict[str, Any]) -> ImageTensors:
    _check_kwargs("fashion_mnist", kw, ("mean", "std", "debian_dir"))
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
        return _finish("fashion_mnist", images, labels, 10, stats, FASHION_MNIST_CLASSES, kw)
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
        labels = _labels_tensor(y, "fashion_mnist")
        return _finish("fashion_mnist", images, labels, 10, stats, FASHION_MNIST_CLASSES, kw)
    # 3. torchvision download.
    if download:
        from torchvision import datasets

        try:
            ds = datasets.FashionMNIST(str(root), train=train, download=True)
        except Exception as exc:
            raise DataError(
                f"fashion_mnist download to {root} failed ({_one_line(exc)}); provide the data "
                f"with data.root=PATH containing FashionMNIST/raw/, or install Debian's "
                f"dataset-fashion-mnist ({DEBIAN_FASHION_MNIST})"
            ) from None
        images = ds.data.to(torch.uint8).unsqueeze(1)
        labels = ds.targets.to(torch.int64)
        return _finish("fashion_mnist", images, labels, 10, stats, FASHION_MNIST_CLASSES, kw)
    raise DataError(
        f"fashion_mnist {split} split not found under {root}/FashionMNIST/raw or {debian} and "
        f"download is off; pass data.root=PATH containing FashionMNIST/raw/, install Debian's "
        f"dataset-fashion-mnist, or set data.download=true"
    )


def _arrays_to_images(x: np.ndarray, what: str) -> torch.Tensor:
    """N×H×W or N×H×W×C (or unambiguous N×C×H×W) integer array -> uint8 N×C×H×W."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"{what}: images must be uint8 (0..255), got {x.dtype}; "
                            f"convert with (x * 255).round().astype(np.uint8)")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{what}: integer images must lie in 0..255")
        x = x.astype(np.uint8)
    if x.ndim == 3:
        t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    elif x.ndim == 4 and x.shape[1] in (1, 3, 4):
        logger.info("%s: reading %s as N×C×H×W", what, x.shape)
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise DataError(f"{what}: images must be N×H×W or N×H×W×C with C in 1, 3, 4; "
                        f"got shape {x.shape}")
    return t.contiguous()


def _load_npz(path: Path, split: str, kw: dict[str, Any]) -> ImageTensors:
    """Arrays ``x``/``y`` are the train split, ``x_test``/``y_test`` the test split.

    A missing ``x_test`` for ``split="test"`` is an error rather than a silent
    held-out split, so reported test accuracy always means the file's own test set.
    Optional ``classes`` holds the class names.
    """
    _check_kwargs("npz", kw, ("mean", "std"))
    if not path.is_file():
        raise DataError(f"npz dataset file not found: {path}")
    if not zipfile.is_zipfile(path):  # np.load would read a .npy array or guess a pickle
        raise DataError(f"npz dataset {path} is not an .npz archive; write it with numpy.savez")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read npz dataset {path}: {_one_line(exc)}") from None
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
            raise DataError(f"cannot read npz dataset {path}: {_one_line(exc)}") from None
    what = f"npz {path.name}"
    train_images = _arrays_to_images(x_train, what)
    images = train_images if split == "train" else _arrays_to_images(x, what)
    labels = _labels_tensor(y, what)
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels "
                        f"({xk}/{yk})")
    if split == "test" and images.shape[1:] != train_images.shape[1:]:
        raise DataError(f"{what}: test images {tuple(images.shape[1:])} differ from train "
                        f"{tuple(train_images.shape[1:])}")
    max_label = max((int(_labels_tensor(a, what).max()) for a in y_all if np.size(a)), default=-1)
    num_classes = len(classes) if classes is not None else max_label + 1
    if classes is not None and max_label >= num_classes:
        raise DataError(f"{what}: label {max_label} but only {num_classes} class names")
    _, c, h, w = images.shape
    logger.info("npz %s (%s): %d images, %d channel(s), %dx%d, %d classes",
                path, split, images.shape[0], c, h, w, num_classes)
    stats = _channel_stats(train_images)
    return _finish(f"npz:{path}", images, labels, num_classes, stats, classes, kw)


def _load_sample(split: str, kw: dict[str, Any]) -> ImageTensors:
    _check_kwargs("fashion_mnist_sample", kw, ("mean", "std"))
    res = importlib.resources.files("nas.assets").joinpath(SAMPLE_RESOURCE)
    try:
        with importlib.resources.as_file(res) as p, np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataError(f"embedded sample nas/assets/{SAMPLE_RESOURCE} unreadable "
                        f"({_one_line(exc)}); reinstall the package") from None
    xk, yk = ("x", "y") if split == "train" else ("x_test", "y_test")
    train_images = _arrays_to_images(arrays["x"], "fashion_mnist_sample")
    images = train_images if split == "train" else _arrays_to_images(arrays[xk],
                                                                       "fashion_mnist_sample")
    labels = _labels_tensor(arrays[yk], "fashion_mnist_sample")
    classes = [str(c) for c in arrays["classes"].tolist()]
    return _finish("fashion_mnist_sample", images, labels, len(classes),
                   _channel_stats(train_images), classes, kw)


def _as_size(v: Any, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    try:
        h, w = (int(t) for t in v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an int or (height, width), got {v!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"{what} must be positive, got {v!r}")
    return h, w


#: Decoding this many files or more shows a progress bar (a real tree takes minutes).
_BAR_MIN_FILES = 1000


def _progress(paths: Sequence[str], desc: str) -> Iterator[str]:
    """``paths``, behind a tqdm bar on a large tree; none under ``nas -q`` (TQDM_DISABLE=1)
    nor on the torchrun ranks other than 0 (every rank loads the data)."""
    from tqdm.auto import tqdm

    quiet = (len(paths) < _BAR_MIN_FILES or os.environ.get("TQDM_DISABLE") == "1"
             or os.environ.get("RANK", "0") != "0")
    return iter(tqdm(paths, desc=desc, unit="img", disable=quiet, leave=False,
                     dynamic_ncols=True))


#: The check before the full walk: a tree that is not a dataset fails in milliseconds.
_PEEK_ENTRIES = 256  # entries looked at per class folder
_PEEK_DEPTH = 2  # class/<a>/<b>/image.png still counts (the walk recurses)
_LAYOUT = "PATH/<class>/<image files>, or PATH/train/<class>/... (and PATH/test/<class>/...)"


def _shows_an_image(folder: Path) -> bool:
    """Whether an image file is among the first :data:`_PEEK_ENTRIES` entries of
    ``folder`` and its sub-folders down to :data:`_PEEK_DEPTH` levels (breadth first)."""
    budget = _PEEK_ENTRIES
    queue = [(folder, 0)]
    while queue:
        current, depth = queue.pop(0)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    budget -= 1
                    if budget < 0:
                        return False
                    try:
                        if entry.name.lower().endswith(_IMAGE_EXTENSIONS) and entry.is_file():
                            return True
                        if depth < _PEEK_DEPTH and entry.is_dir():
                            queue.append((Path(entry.path), depth + 1))
                    except OSError:  # e.g. a dangling link: not an image
                        continue
        except OSError:  # unreadable sub-folder: the walk skips it too
            continue
    return False


def _check_class_tree(folder: Path, what: str) -> None:
    """Cheaply confirm ``folder`` holds class folders of images before the full walk (which
    follows links and may wander e.g. /proc for minutes); a one-line DataError otherwise."""
    try:
        with os.scandir(folder) as entries:
            listed = [(entry.name, entry.is_dir()) for entry in entries]
    except OSError as exc:
        raise DataError(f"{what}: cannot list {folder} ({exc.strerror or exc})") from None
    classes = sorted(name for name, is_dir in listed if is_dir)
    if not classes:
        files = sorted(name for name, _ in listed)
        found = f"{len(files)} files, e.g. {files[0]}" if files else "it is empty"
        raise DataError(f"{what}: no class folders in {folder} ({found}); expected {_LAYOUT}")
    for name in classes:
        if not _shows_an_image(folder / name):
            raise DataError(
                f"{what}: class folder {folder / name} has no image files "
                f"({', '.join(_IMAGE_EXTENSIONS)}) among its first {_PEEK_ENTRIES} entries; "
                f"expected {_LAYOUT}"
            )


def _pick_mode(paths: Sequence[str], what: str) -> str:
    """"L" if every image is greyscale, else "RGB" (reads headers only: PIL is lazy)."""
    from PIL import Image

    grey_modes = {"1", "L", "LA", "I", "I;16", "F"}
    try:
        modes = set()
        for p in _progress(paths, f"{what}: reading headers"):
            with Image.open(p) as im:
                modes.add(im.mode)
    except Exception as exc:
        raise DataError(f"{what}: cannot open image ({_one_line(exc)})") from None
    return "L" if modes <= grey_modes else "RGB"


def _decode_images(paths: Sequence[str], image_size: tuple[int, int] | None, mode: str,
                   what: str) -> torch.Tensor:
    """Decode every file once into one uint8 N×C×H×W tensor in PIL ``mode``."""
    from PIL import Image

    try:
        arrays = []
        for p in _progress(paths, f"{what}: decoding"):  # per file by nature; once per load
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert(mode)))
    except Exception as exc:
        raise DataError(f"{what}: cannot decode image ({_one_line(exc)})") from None
    sizes = Counter(a.shape[:2] for a in arrays)
    if image_size is None and len(sizes) > 1:
        common = ", ".join(f"{h}x{w}" for (h, w), _ in sizes.most_common(3))
        raise DataError(f"{what}: images have different sizes ({common}, ...); "
                        f"pass data.image_size=N to resize them")
    target = image_size or next(iter(sizes))
    out = torch.empty((len(arrays), 1 if mode == "L" else 3, *target), dtype=torch.uint8)
    from torchvision.transforms.v2 import functional as TF

    for i, a in enumerate(arrays):
        t = torch.from_numpy(a.copy())
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        if tuple(t.shape[1:]) != tuple(target):
            t = TF.resize(t, list(target), antialias=True)
        out[i] = t
    return out


def _load_imagefolder(path: Path, split: str, kw: dict[str, Any]) -> ImageTensors:
    """``PATH/train/<class>/*`` + ``PATH/test/<class>/*``, or ``PATH/<class>/*`` (train only).

    The test split uses the train split's class list, so indices agree even if
    a class is missing from test.  Statistics come from the train images, so
    loading ``test`` also decodes ``train`` unless ``mean``/``std`` are given.
    """
    _check_kwargs("imagefolder", kw, ("mean", "std", "image_size"))
    from torchvision.datasets.folder import find_classes, make_dataset

    if not path.is_dir():
        raise DataError(f"imagefolder directory not found: {path}")
    split_layout = (path / "train").is_dir()
    train_dir = path / "train" if split_layout else path
    if split == "test" and not (path / "test").is_dir():
        raise DataError(f"imagefolder {path} has no test/ subfolder needed for split=test")
    image_size = _as_size(kw["image_size"], "data.image_size") if kw.get("image_size") else None
    what = f"imagefolder {path}"
    _check_class_tree(train_dir, what)
    if split == "test":
        _check_class_tree(path / "test", what)
    try:
        classes, class_to_idx = find_classes(str(train_dir))
    except Exception as exc:
        raise DataError(f"imagefolder {train_dir}: {_one_line(exc)}") from None

    def scan(folder: Path) -> tuple[list[str], list[int]]:
        try:
            samples = make_dataset(str(folder), class_to_idx, extensions=_IMAGE_EXTENSIONS,
                                   allow_empty=True)
        except Exception as exc:
            raise DataError(f"imagefolder {folder}: {_one_line(exc)}") from None
        if not samples:
            raise DataError(f"imagefolder {folder}: no images with extensions "
                            f"{', '.join(_IMAGE_EXTENSIONS)}")
        return [s[0] for s in samples], [s[1] for s in samples]

    folder = path / "test" if split == "test" else train_dir
    files, targets = scan(folder)
    train_files = files if split == "train" else scan(train_dir)[0]
    # One colour mode for both splits, so train and test have the same channels.
    mode = _pick_mode(train_files if split == "train" else [*train_files, *files], what)
    images = _decode_images(files, image_size, mode, what)
    mean, std = _stats_override(kw, images.shape[1])
    if split == "train":
        stats = _channel_stats(images)
    elif mean is not None and std is not None:
        stats = (mean, std)
    else:
        size = (int(images.shape[2]), int(images.shape[3]))
        stats = _channel_stats(_decode_images(train_files, image_size or size, mode, what))
    labels = torch.as_tensor(targets, dtype=torch.int64)
    _, c, h, w = images.shape
    logger.info("imagefolder %s (%s): %d images, %d channel(s), %dx%d, %d classes",
                folder, split, len(files), c, h, w, len(classes))
    return _finish(f"imagefolder:{path}", images, labels, len(classes), stats, classes, kw)


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


def _load_synthetic(split: str, kw: dict[str, Any]) -> ImageTensors:
    """Seeded, learnable toy data for tests: a class template plus Gaussian noise.

    Train and test share templates (``seed``) but draw different samples.
    ``num_samples`` defaults to 512 (train) / 128 (test).
    """
    _check_kwargs("synthetic", kw, ("mean", "std", "num_samples", "num_classes", "image_size",
                                    "channels", "seed"))
    num_classes = int(kw.get("num_classes", 10))
    channels = int(kw.get("channels", 3))
    size = _as_size(kw.get("image_size", 32), "data.image_size")
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
    return _finish("synthetic", images, labels, num_classes, _channel_stats(train), classes, kw)


# --------------------------------------------------------------------------- splitting


def search_split(data: ImageTensors, portion: float = 0.5,
                 seed: int = 0) -> tuple[ImageTensors, ImageTensors]:
    """DARTS's search split: ``portion`` of the training set trains the weights, the
    rest (disjoint) trains the architecture.  A seeded permutation, so class
    order in the source files does not bias either half."""
    if not 0.0 < float(portion) < 1.0:
        raise ConfigError(f"search split portion must be in (0, 1), got {portion}")
    n = len(data)
    n_train = int(math.floor(n * float(portion)))
    if n_train < 1 or n_train >= n:
        raise ConfigError(f"search split portion {portion} of {n} samples leaves an empty half")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return data.subset(perm[:n_train]), data.subset(perm[n_train:])


def holdout_split(data: ImageTensors, share: float,
                  seed: int = 0) -> tuple[ImageTensors, ImageTensors]:
    """Split a training set into (train, holdout), stratified by class and seeded.

    Each class gives ``round(share · count)`` of its images to the holdout, chosen by a
    seeded permutation, so the holdout has the class mix of the training set and the
    same ``seed`` always holds out the same images.  Model selection (the multi-objective
    trials) is scored on the holdout, so the test split never chooses an architecture.
    """
    if not 0.0 < float(share) < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {share}")
    labels = data.labels.cpu()
    n = labels.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    order = perm[torch.sort(labels[perm], stable=True).indices]  # by class, random within
    counts = torch.bincount(labels, minlength=data.num_classes)
    starts = torch.cumsum(counts, 0) - counts
    ordered_labels = labels[order]
    rank = torch.arange(n) - starts[ordered_labels]  # position within its class
    per_class = torch.round(counts.double() * float(share)).long()
    in_holdout = rank < per_class[ordered_labels]
    held, kept = order[in_holdout].sort().values, order[~in_holdout].sort().values
    if held.numel() == 0 or kept.numel() == 0:
        raise ConfigError(f"holdout {share} of {n} training images leaves an empty split")
    return data.subset(kept), data.subset(held)


# --------------------------------------------------------------------------- augmentation


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool = True,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip``, any dtype.

    The batch is zero-padded once; each output pixel is then gathered from
    ``padded[b, c, oy[b] + i, ox[b] + j]`` (``ox[b] + W-1-j`` when flipped), so
    crop and flip are one gather.  Returns ``(out, oy, ox, flipped)`` so tests
    can rebuild each crop by hand.
    """
    oy, ox, flipped = _crop_flip_draw(images.shape[0], padding, flip, generator, images.device)
    return _crop_flip_apply(images, padding, flip, oy, ox, flipped), oy, ox, flipped


def _crop_flip_draw(b: int, padding: int, flip: bool, generator: torch.Generator | None,
                    dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random part of :func:`random_crop_flip` for ``b`` images: offsets and flips.

    Apart from the pixels, so that a rank can draw for the whole global batch (keeping
    the stream every rank shares) and crop only its own shard."""
    if padding > 0:
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    else:
        oy = torch.zeros(b, dtype=torch.long, device=dev)
        ox = torch.zeros(b, dtype=torch.long, device=dev)
    if flip:
        flipped = torch.rand(b, generator=generator, device=dev) < 0.5
    else:
        flipped = torch.zeros(b, dtype=torch.bool, device=dev)
    return oy, ox, flipped


def _crop_flip_apply(images: torch.Tensor, padding: int, flip: bool, oy: torch.Tensor,
                     ox: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    b, c, h, w = images.shape
    if padding == 0 and not flip:
        return images
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding > 0 else images
    wp = padded.shape[3]
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h  # B×H
    cols = ox[:, None] + torch.where(flipped[:, None], w - 1 - ar_w, ar_w)  # B×W
    lin = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.reshape(b, c, -1), 2, lin).view(b, c, h, w)


def _cutout_draw(b: int, h: int, w: int, generator: torch.Generator | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Box centres of :func:`cutout` for ``b`` images."""
    cy = torch.randint(0, h, (b,), generator=generator, device=device)
    cx = torch.randint(0, w, (b,), generator=generator, device=device)
    return cy, cx


def _cutout_box(cy: torch.Tensor, cx: torch.Tensor, h: int, w: int,
                length: int) -> torch.Tensor:
    """B×1×H×W bool mask of DARTS's cutout box: rows ``[cy - L//2, cy + L//2)`` clipped."""
    device = cy.device
    half = length // 2
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    rows = (ys >= (cy - half)[:, None]) & (ys < (cy + half)[:, None])
    cols = (xs >= (cx - half)[:, None]) & (xs < (cx + half)[:, None])
    return rows[:, None, :, None] & cols[:, None, None, :]


def _cutout_mask(b: int, h: int, w: int, length: int, generator: torch.Generator | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B×1×H×W bool mask of DARTS's cutout box, and its centres."""
    cy, cx = _cutout_draw(b, h, w, generator, device)
    return _cutout_box(cy, cx, h, w, length), cy, cx


def cutout(x: torch.Tensor, length: int, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched DARTS Cutout: zero a ``length``-sided square (clipped at the borders)
    centred at a uniform random pixel, per sample, all channels.  Out of place;
    returns ``(out, cy, cx)``."""
    b, _, h, w = x.shape
    mask, cy, cx = _cutout_mask(b, h, w, length, generator, x.device)
    return x.masked_fill(mask, 0), cy, cx


class BatchLoader:
    """Batches of a whole on-device dataset, normalised and optionally augmented.

    The data moves to ``device`` once, as uint8.  Each batch is one index gather,
    then (``augment=True``) one crop+flip gather on uint8, conversion to
    float32, an in-place normalisation and an in-place cutout mask - no
    per-sample Python, no host syncs.  ``augment=False`` disables all three
    augmentations, cutout included.  Cutout zeroes *normalised* values (DARTS).

    Order and augmentation come from a ``torch.Generator`` on the data device,
    re-seeded at the start of each pass from ``(seed, epoch)``: a resumed run
    that calls ``set_epoch(e)`` gets exactly the batches of epoch ``e``.  Each
    pass advances the epoch by one, so forgetting ``set_epoch`` still gives a
    new order every epoch.  (CPU and CUDA generators give different streams.)

    Data parallel (``world_size > 1``): ``batch_size`` is the *global* batch.  Every
    rank holds the data and draws the same order and augmentation for each global batch,
    then takes its own contiguous shard of it (sizes differ by at most one), so the
    shards of ranks ``0..world_size-1``, concatenated, are exactly the batch a single
    process would get.  A last global batch with fewer images than ranks is dropped
    when ``shuffle`` (training: every rank must take every step), and leaves the ranks
    past its end without that batch otherwise (evaluation sums over ranks anyway).
    """

    def __init__(self, data: ImageTensors, batch_size: int, *, shuffle: bool = True,
                 augment: bool = False, crop_padding: int = 4, flip: bool = True,
                 cutout: int = 0, drop_last: bool = False, device: torch.device | str = "cpu",
                 seed: int = 0, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ConfigError(f"rank {rank} out of range for world_size {world_size}")
        if int(crop_padding) < 0:
            raise ConfigError(f"crop_padding must be >= 0, got {crop_padding}")
        if int(cutout) < 0:
            raise ConfigError(f"cutout must be >= 0, got {cutout}")
        if len(data) == 0:
            raise DataError(f"{data.name}: cannot batch an empty dataset")
        self.device = torch.device(device)
        moved = data.to(self.device)
        self.data = moved
        self.images = moved.images.contiguous()
        self.labels = moved.labels
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.channels_last = bool(channels_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        dev = self.images.device
        mean = torch.tensor(data.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std)  # x = img * scale + shift == (img/255 - mean)/std
        self._shift = -mean / std
        self._generator = torch.Generator(device=dev)
        self._epoch = 0

    @property
    def epoch(self) -> int:
        """The epoch the next pass will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (its order and augmentation)."""
        self._epoch = int(epoch)
        self._generator.manual_seed(self._seed_for(self._epoch))

    def _seed_for(self, epoch: int) -> int:
        return int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
                   >> np.uint64(1))

    def __len__(self) -> int:
        if self.world_size == 1:
            return self._num_global()
        return sum(1 for i in range(self._num_global()) if self._keeps(self._size_of(i)))

    def _num_global(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _size_of(self, i: int) -> int:
        """Images in global batch ``i``."""
        return min(len(self.data), (i + 1) * self.batch_size) - i * self.batch_size

    def _shard(self, m: int) -> tuple[int, int]:
        """This rank's ``[start, stop)`` within a global batch of ``m`` images."""
        w, r = self.world_size, self.rank
        return (m * r) // w, (m * (r + 1)) // w

    def _keeps(self, m: int) -> bool:
        """Whether this rank yields a global batch of ``m`` images (see the class doc)."""
        if self.shuffle and m < self.world_size:
            return False
        start, stop = self._shard(m)
        return stop > start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        gen = self._generator
        gen.manual_seed(self._seed_for(epoch))
        n = len(self.data)
        dev = self.images.device
        _, _, h, w = self.images.shape
        sharded = self.world_size > 1
        order = torch.randperm(n, generator=gen, device=dev) if self.shuffle else None
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for i in range(self._num_global()):
            lo, hi = i * self.batch_size, min(n, (i + 1) * self.batch_size)
            m = hi - lo
            start, stop = self._shard(m) if sharded else (0, m)
            # every rank draws for the whole global batch: the stream stays shared
            if self.augment:
                crop = _crop_flip_draw(m, self.crop_padding, self.flip, gen, dev)
                if self.cutout > 0:
                    centres = _cutout_draw(m, h, w, gen, dev)
            if sharded and not self._keeps(m):
                continue
            if order is None:
                img, lab = self.images[lo + start:lo + stop], self.labels[lo + start:lo + stop]
            else:
                idx = order[lo + start:lo + stop]
                # index_select: a plain row copy, ~20x faster than advanced indexing on CPU
                img, lab = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            if self.augment:
                if sharded:
                    crop = tuple(t[start:stop] for t in crop)
                img = _crop_flip_apply(img, self.crop_padding, self.flip, *crop)
            x = img.to(dtype=torch.float32, memory_format=fmt)
            x.mul_(self._scale).add_(self._shift)
            if self.augment and self.cutout > 0:
                cy, cx = (t[start:stop] for t in centres) if sharded else centres
                x.masked_fill_(_cutout_box(cy, cx, h, w, self.cutout), 0.0)
            yield x, lab


# --------------------------------------------------------------------------- reference


class _Cutout:
    """Per-sample tensor Cutout for the reference pipeline (DARTS semantics)."""

    def __init__(self, length: int) -> None:
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        cy = int(torch.randint(0, h, ()))
        cx = int(torch.randint(0, w, ()))
        half = self.length // 2
        y1, y2 = max(cy - half, 0), min(cy + half, h)
        x1, x2 = max(cx - half, 0), min(cx + half, w)
        img = img.clone()
        img[:, y1:y2, x1:x2] = 0.0
        return img


class _PILDataset(torch.utils.data.Dataset):
    """Serves an :class:`ImageTensors` as PIL images through torchvision transforms."""

    def __init__(self, data: ImageTensors, transform: Any) -> None:
        self.hwc = data.images.cpu().permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.cpu().numpy()
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        a = self.hwc[i]
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
        return self.transform(img), int(self.labels[i])


def torchvision_loader(data: ImageTensors, batch_size: int, augment: bool = False,
                       cutout: int = 0, num_workers: int = 2, *, shuffle: bool = True,
                       crop_padding: int = 4, flip: bool = True, drop_last: bool = False,
                       seed: int = 0, pin_memory: bool = False
                       ) -> torch.utils.data.DataLoader:
    """The conventional pipeline (PIL ``RandomCrop(padding)``, ``RandomHorizontalFlip``,
    ``ToTensor``, ``Normalize``, then Cutout) over the same data, on CPU workers.

    Benchmarks time it against :class:`BatchLoader`; same semantics, including
    ``augment=False`` disabling cutout.
    """
    from torchvision import transforms as T

    _, h, w = data.shape
    steps: list[Any] = []
    if augment:
        if crop_padding > 0:
            steps.append(T.RandomCrop((h, w), padding=crop_padding))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(data.mean, data.std)]
    if augment and cutout > 0:
        steps.append(_Cutout(cutout))
    ds = _PILDataset(data, T.Compose(steps))
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        drop_last=drop_last, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )
