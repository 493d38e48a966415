"""Batched augmentation (crop with zero padding, flip, DARTS cutout) as tensor ops.

Cutout zeroes *normalised* values, as DARTS does (``ToTensor -> Normalize -> Cutout``);
crop padding is zero in pixel space (black), as torchvision's ``RandomCrop(padding=...)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool = True,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip``, any dtype.

    The batch is zero-padded once; each output pixel is then gathered from
    ``padded[b, c, oy[b] + i, ox[b] + j]`` (``ox[b] + W-1-j`` when flipped), so
    crop and flip are one gather.  Returns ``(out, oy, ox, flipped)`` so tests
    can rebuild each crop by hand.
    """
    oy, ox, flipped = crop_flip_draw(images.shape[0], padding, flip, generator, images.device)
    return crop_flip_apply(images, padding, flip, oy, ox, flipped), oy, ox, flipped


def crop_flip_draw(b: int, padding: int, flip: bool, generator: torch.Generator | None,
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


def crop_flip_apply(images: torch.Tensor, padding: int, flip: bool, oy: torch.Tensor,
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


def cutout_draw(b: int, h: int, w: int, generator: torch.Generator | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Box centres of :func:`cutout` for ``b`` images."""
    cy = torch.randint(0, h, (b,), generator=generator, device=device)
    cx = torch.randint(0, w, (b,), generator=generator, device=device)
    return cy, cx


def cutout_box(cy: torch.Tensor, cx: torch.Tensor, h: int, w: int,
               length: int) -> torch.Tensor:
    """B×1×H×W bool mask of DARTS's cutout box: rows ``[cy - L//2, cy + L//2)`` clipped."""
    device = cy.device
    half = length // 2
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    rows = (ys >= (cy - half)[:, None]) & (ys < (cy + half)[:, None])
    cols = (xs >= (cx - half)[:, None]) & (xs < (cx + half)[:, None])
    return rows[:, None, :, None] & cols[:, None, None, :]


def cutout_mask(b: int, h: int, w: int, length: int, generator: torch.Generator | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B×1×H×W bool mask of DARTS's cutout box, and its centres."""
    cy, cx = cutout_draw(b, h, w, generator, device)
    return cutout_box(cy, cx, h, w, length), cy, cx


def cutout(x: torch.Tensor, length: int, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched DARTS Cutout: zero a ``length``-sided square (clipped at the borders)
    centred at a uniform random pixel, per sample, all channels.  Out of place;
    returns ``(out, cy, cx)``."""
    b, _, h, w = x.shape
    mask, cy, cx = cutout_mask(b, h, w, length, generator, x.device)
    return x.masked_fill(mask, 0), cy, cx
