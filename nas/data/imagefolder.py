"""A folder of class folders of image files, decoded once into tensors."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data.build import as_size, check_kwargs, finish, one_line, stats_override
from nas.data.tensors import ImageTensors, channel_stats
from nas.errors import DataError

logger = logging.getLogger(__name__)


_IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
)


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
        raise DataError(f"{what}: cannot open image ({one_line(exc)})") from None
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
        raise DataError(f"{what}: cannot decode image ({one_line(exc)})") from None
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


def load_imagefolder(path: Path, split: str, kw: dict[str, Any]) -> ImageTensors:
    """``PATH/train/<class>/*`` + ``PATH/test/<class>/*``, or ``PATH/<class>/*`` (train only).

    The test split uses the train split's class list, so indices agree even if
    a class is missing from test.  Statistics come from the train images, so
    loading ``test`` also decodes ``train`` unless ``mean``/``std`` are given.
    """
    check_kwargs("imagefolder", kw, ("mean", "std", "image_size"))
    from torchvision.datasets.folder import find_classes, make_dataset

    if not path.is_dir():
        raise DataError(f"imagefolder directory not found: {path}")
    split_layout = (path / "train").is_dir()
    train_dir = path / "train" if split_layout else path
    if split == "test" and not (path / "test").is_dir():
        raise DataError(f"imagefolder {path} has no test/ subfolder needed for split=test")
    image_size = as_size(kw["image_size"], "data.image_size") if kw.get("image_size") else None
    what = f"imagefolder {path}"
    _check_class_tree(train_dir, what)
    if split == "test":
        _check_class_tree(path / "test", what)
    try:
        classes, class_to_idx = find_classes(str(train_dir))
    except Exception as exc:
        raise DataError(f"imagefolder {train_dir}: {one_line(exc)}") from None

    def scan(folder: Path) -> tuple[list[str], list[int]]:
        try:
            samples = make_dataset(str(folder), class_to_idx, extensions=_IMAGE_EXTENSIONS,
                                   allow_empty=True)
        except Exception as exc:
            raise DataError(f"imagefolder {folder}: {one_line(exc)}") from None
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
    mean, std = stats_override(kw, images.shape[1])
    if split == "train":
        stats = channel_stats(images)
    elif mean is not None and std is not None:
        stats = (mean, std)
    else:
        size = (int(images.shape[2]), int(images.shape[3]))
        stats = channel_stats(_decode_images(train_files, image_size or size, mode, what))
    labels = torch.as_tensor(targets, dtype=torch.int64)
    _, c, h, w = images.shape
    logger.info("imagefolder %s (%s): %d images, %d channel(s), %dx%d, %d classes",
                folder, split, len(files), c, h, w, len(classes))
    return finish(f"imagefolder:{path}", images, labels, len(classes), stats, classes, kw)
