"""The DARTS evaluation network (CIFAR form) built from a :class:`~nas.genotype.Genotype`.

Same constructor, structure and parameter count as the official DARTS ``NetworkCIFAR``:
a 3x stem, ``layers`` cells with reductions at 1/3 and 2/3 depth, drop path on
non-identity edges, and an auxiliary head after the second reduction.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.genotype import Genotype
from nas.layout import cell_layout
from nas.ops import OPS
from nas.ops.primitives import FactorizedReduce, Identity, ReLUConvBN

__all__ = ["NetworkCIFAR", "Cell", "AuxiliaryHeadCIFAR", "drop_path", "make_stem"]


def make_stem(in_channels: int, C_out: int) -> nn.Sequential:
    """The DARTS CIFAR stem: 3x3 conv and BN."""
    return nn.Sequential(nn.Conv2d(in_channels, C_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(C_out))


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples of a branch with probability ``drop_prob`` (rescaling the rest).

    A 0-dim tensor ``drop_prob`` (what a compiled network passes) always draws the mask: at
    probability 0 it is all ones and the branch passes unchanged.
    """
    if not isinstance(drop_prob, torch.Tensor) and drop_prob <= 0.0:
        return x
    if isinstance(drop_prob, torch.Tensor):
        keep = (1.0 - drop_prob).to(x.dtype)
        mask = torch.bernoulli(keep.expand(x.shape[0], 1, 1, 1))
    else:
        keep = 1.0 - drop_prob
        mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """One evaluation cell: two preprocessed inputs, ``steps`` nodes of two edges each."""

    def __init__(
        self,
        genotype: Genotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.reduction = reduction
        self._steps = len(edges) // 2
        self._concat = tuple(concat)
        self.multiplier = len(concat)
        self._indices = tuple(index for _, index in edges)
        self._ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and index < 2 else 1, True) for name, index in edges
        )

    @property
    def droppable(self) -> int:
        """How many of the cell's edges drop path applies to (all but identities)."""
        return sum(not isinstance(op, Identity) for op in self._ops)

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        drop_prob: float | torch.Tensor,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``masks``: this cell's drop-path masks, already rescaled, ``(droppable, N, 1, 1,
        1)`` (what :class:`NetworkCIFAR` passes); without them each edge draws its own."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        active = self.training and (isinstance(drop_prob, torch.Tensor) or drop_prob > 0.0)
        k = 0
        for i in range(self._steps):
            branches = []
            for j in (2 * i, 2 * i + 1):
                op = self._ops[j]
                h = op(states[self._indices[j]])
                if active and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob) if masks is None else h * masks[k].to(h.dtype)
                    k += 1
                branches.append(h)
            states.append(branches[0] + branches[1])
        return torch.cat([states[i] for i in self._concat], dim=1)


def _drop_masks(x: torch.Tensor, count: int, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """``count`` drop-path masks for the batch of ``x``, rescaled by ``1 / keep``: one draw
    for the whole network instead of four ops per edge (the same distribution as
    :func:`drop_path`'s)."""
    shape = (count, x.shape[0], 1, 1, 1)
    if isinstance(drop_prob, torch.Tensor):
        keep = (1.0 - drop_prob).to(x.dtype)
        return torch.bernoulli(keep.expand(shape)) / keep
    keep = 1.0 - drop_prob
    return torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep).div_(keep)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS auxiliary classifier for 8x8 maps; smaller maps (28x28 inputs) pool adaptively."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        self.small_pool = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        x = self.pool(x) if min(x.shape[-2:]) >= 8 else self.small_pool(x)
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


class NetworkCIFAR(nn.Module):
    """DARTS evaluation network.

    ``forward`` returns the logits; in training mode with ``auxiliary=True`` it returns
    ``(logits, aux_logits)``. Set ``drop_path_prob`` (the training loop ramps it).

    Under ``torch.compile`` the probability reaches the cells as a 0-dim buffer, not a
    Python float: a float is a constant of the compiled graph, so each epoch's new value
    would recompile it, and after dynamo's recompile limit the network would run eagerly.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        genotype: Genotype,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self.drop_path_prob = 0.0
        self.genotype = genotype
        layout = cell_layout(C, layers, len(genotype.normal_concat),
                             len(genotype.reduce_concat), stem_multiplier)
        self.stem = make_stem(in_channels, layout.C_stem)
        self.cells = nn.ModuleList(
            Cell(genotype, c.C_prev_prev, c.C_prev, c.C, c.reduction, c.reduction_prev)
            for c in layout.cells
        )
        self._aux_pos = 2 * layers // 3
        C_aux = layout.cells[self._aux_pos].C_out if self._aux_pos < layers else layout.C_stem
        C_prev = layout.C_out
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    @property
    def drop_path_prob(self) -> float:
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        self._drop_path_prob = float(value)
        with torch.no_grad():
            self._drop_prob.fill_(self._drop_path_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits_aux = None
        drop_prob = self._drop_prob if torch.compiler.is_compiling() else self.drop_path_prob
        s0 = s1 = self.stem(x)
        masks = None
        if self.training and (isinstance(drop_prob, torch.Tensor) or drop_prob > 0.0):
            counts = [cell.droppable for cell in self.cells]  # ops may have been swapped
            masks = _drop_masks(x, sum(counts), drop_prob).split(counts)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop_prob, None if masks is None else masks[i])
            if i == self._aux_pos and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits
