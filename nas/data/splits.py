"""Seeded splits of a training set: DARTS's search halves and a stratified holdout."""

from __future__ import annotations

import math

import torch

from nas.data.tensors import ImageTensors
from nas.errors import ConfigError


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
