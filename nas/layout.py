"""The DARTS network geometry, in one place: channels, reductions and spatial sizes per
cell. The evaluation network, the supernet, the latency tables and the cost term all build
from :func:`cell_layout`. Torch-free (the CLI reads it before torch loads).
"""

from __future__ import annotations

import dataclasses

__all__ = ["Shape", "CellLayout", "NetworkLayout", "cell_layout"]

Shape = tuple[int, int, int, int]  # (C, stride, H, W) of an edge's input


def _half(hw: tuple[int, int]) -> tuple[int, int]:
    return (hw[0] + 1) // 2, (hw[1] + 1) // 2  # stride-2 ops: ceil(H / 2)


@dataclasses.dataclass(frozen=True)
class CellLayout:
    """Channels and spatial sizes of one cell: inputs ``s0``, ``s1``, its nodes (``C``
    channels at ``out``) and its output (``C_out`` channels, the nodes concatenated)."""

    reduction: bool
    reduction_prev: bool
    C_prev_prev: int
    C_prev: int
    C: int
    C_out: int
    s0: tuple[int, int]
    s1: tuple[int, int]
    out: tuple[int, int]

    def edge_shape(self, index: int) -> Shape:
        """(C, stride, H, W) of an edge reading state ``index`` (0, 1: the cell inputs)."""
        if self.reduction and index < 2:
            return (self.C, 2, *self.s1)
        return (self.C, 1, *self.out)


@dataclasses.dataclass(frozen=True)
class NetworkLayout:
    """Every cell of a DARTS network: the evaluation network, the supernet, the latency
    tables and the cost term all read it from :func:`cell_layout`."""

    C_stem: int
    cells: tuple[CellLayout, ...]
    image_hw: tuple[int, int]

    @property
    def C_out(self) -> int:
        """Channels into the classifier."""
        return self.cells[-1].C_out if self.cells else self.C_stem

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.cells[-1].out if self.cells else self.image_hw

    def edge_shapes(self, steps: int) -> list[list[Shape]]:
        """Per cell, per supernet edge (node by node, inputs in order): (C, stride, H, W)."""
        return [[c.edge_shape(j) for i in range(steps) for j in range(2 + i)] for c in self.cells]


def cell_layout(
    C: int,
    layers: int,
    multiplier: int,
    reduce_multiplier: int | None = None,
    stem_multiplier: int = 3,
    image_hw: tuple[int, int] = (32, 32),
) -> NetworkLayout:
    """The DARTS geometry: a ``stem_multiplier``·C stem, reductions at 1/3 and 2/3 depth
    with channels doubled there; ``multiplier``: nodes concatenated per normal cell
    (``reduce_multiplier`` per reduction cell, default the same)."""
    reduce_multiplier = multiplier if reduce_multiplier is None else reduce_multiplier
    hw = (int(image_hw[0]), int(image_hw[1]))
    C_stem = stem_multiplier * C
    C_pp, C_p, C_curr = C_stem, C_stem, C
    hw_pp = hw_p = hw
    reduction_prev = False
    cells = []
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
        out = _half(hw_p) if reduction else hw_p
        C_out = (reduce_multiplier if reduction else multiplier) * C_curr
        cells.append(CellLayout(reduction, reduction_prev, C_pp, C_p, C_curr, C_out,
                                hw_pp, hw_p, out))
        C_pp, C_p = C_p, C_out
        hw_pp, hw_p = hw_p, out
        reduction_prev = reduction
    return NetworkLayout(C_stem, tuple(cells), hw)
