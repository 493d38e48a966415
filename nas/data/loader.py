"""The batch loader: a whole dataset on the device, batched, augmented and sharded there."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from nas.data.augment import crop_flip_apply, crop_flip_draw, cutout_box, cutout_draw
from nas.data.tensors import ImageTensors
from nas.errors import ConfigError, DataError


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
                crop = crop_flip_draw(m, self.crop_padding, self.flip, gen, dev)
                if self.cutout > 0:
                    centres = cutout_draw(m, h, w, gen, dev)
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
                img = crop_flip_apply(img, self.crop_padding, self.flip, *crop)
            x = img.to(dtype=torch.float32, memory_format=fmt)
            x.mul_(self._scale).add_(self._shift)
            if self.augment and self.cutout > 0:
                cy, cx = (t[start:stop] for t in centres) if sharded else centres
                x.masked_fill_(cutout_box(cy, cx, h, w, self.cutout), 0.0)
            yield x, lab
