"""What a search config needs timed: the (op, shape) pairs ``nas search``'s cost term looks
up in a latency table (:mod:`nas.cost.table`), and the image shape of a config's data.
What an mo-search config needs is :func:`nas.search.mo.trial.mo_requirements`.
"""

from __future__ import annotations

from nas.config import DataConfig
from nas.cost.table import OpKey
from nas.runtime import load_splits
from nas.search.config import SearchConfig
from nas.search.supernet.model import Supernet

__all__ = ["data_shape", "search_requirements"]

#: image shape and classes of the named datasets, so a table builds without their files
#: (on the target device, which rarely holds the data set)
_KNOWN_DATA = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "fashion_mnist": ((1, 28, 28), 10),
    "fashionmnist": ((1, 28, 28), 10),
    "fashion_mnist_sample": ((1, 28, 28), 10),
}


def data_shape(data: DataConfig) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and classes of the training images: known for the named datasets,
    otherwise read from the data (``load_splits``)."""
    key = data.name.strip().lower().replace("-", "_")
    if key in _KNOWN_DATA:
        return _KNOWN_DATA[key]
    train, _ = load_splits(data, test=False)
    C, H, W = train.shape
    return (int(C), int(H), int(W)), int(train.num_classes)


def search_requirements(
    cfg: SearchConfig, shape: tuple[int, int, int], num_classes: int
) -> set[OpKey]:
    """Every (op, shape) the cost term of ``nas search`` looks up: all ops of the space at
    the supernet's per-edge shapes (``Supernet.edge_shapes``)."""
    space = cfg.space.build()
    net = Supernet(space, num_classes, cfg.model.init_channels, cfg.model.layers,
                   in_channels=shape[0], stem_multiplier=cfg.model.stem_multiplier, fused=False)
    return {OpKey(op, *s) for row in net.edge_shapes(shape[1:]) for s in row for op in space.ops}
