"""The conventional PIL + ``DataLoader`` pipeline over an :class:`~nas.data.ImageTensors`:
the reference the data benchmarks time :class:`~nas.data.BatchLoader` against."""

from __future__ import annotations

from typing import Any

import torch

from nas.data import ImageTensors


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
