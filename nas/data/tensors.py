"""The dataset container: a whole split as uint8 tensors, with its statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nas.errors import DataError


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


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...],
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
