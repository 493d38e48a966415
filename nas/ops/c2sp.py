"""C2sp / C4sp: even-sized kernels with symmetric padding.

Paper: Wu et al., "Convolution with even-sized kernels and symmetric padding"
(NeurIPS 2019). An even kernel has no centre, so padding every channel on the same
side shifts the feature map by half a pixel per layer. The paper splits the input
channels into four groups and pads each one towards a different corner; the shifts
cancel over the groups and the output stays centred (at stride 1).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from nas.ops._registry import register_op

__all__ = ["C2spConv2d", "C2spReLUConvBN", "SHIFT_PAD_TABLE"]

#: Extra pixel per group in ``(top, bottom, left, right)`` order, as in the authors' code:
#: group 0 bottom-right, group 1 top-left, group 2 bottom-left, group 3 top-right.
#: (``F.pad`` takes ``(left, right, top, bottom)``; this table is never passed to it.)
SHIFT_PAD_TABLE: tuple[tuple[int, int, int, int], ...] = (
    (0, 1, 0, 1),
    (1, 0, 1, 0),
    (0, 1, 1, 0),
    (1, 0, 0, 1),
)
_ASYMMETRIC_PAD = (0, 1, 0, 1)  # plain C2: every group padded bottom-right


def _group_sizes(channels: int) -> tuple[int, int, int, int]:
    """Four consecutive groups; the first ``channels % 4`` get one extra (authors' code)."""
    base, extra = divmod(channels, 4)
    return tuple(base + (g < extra) for g in range(4))  # type: ignore[return-value]


class C2spConv2d(nn.Conv2d):
    """Even-kernel convolution with shift-symmetric padding (C2sp for K=2, C4sp for K=4).

    The input channels are split into four consecutive groups; group ``g`` is padded
    by ``K - 1`` pixels per axis with the larger share (``K/2``) on the sides flagged in
    :data:`SHIFT_PAD_TABLE` and ``K/2 - 1`` on the others. All groups are written into
    one zero buffer and a single dense ``conv2d`` (no padding of its own) runs over it,
    so the output size is ``ceil(H / stride)``. ``K = 4`` is our extension; the paper
    uses ``K = 2`` only. The symmetry holds at stride 1; at stride 2 it does not.

    Args:
        in_channels: input channels; a multiple of 4 makes the symmetry exact.
        out_channels: output channels.
        kernel_size: 2 (C2sp) or 4 (C4sp).
        stride: stride of the convolution.
        bias: add a learnable bias.
        asymmetric: pad every group bottom-right (plain C2/C4, the paper's baseline).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 2,
        stride: int = 1,
        bias: bool = False,
        asymmetric: bool = False,
    ) -> None:
        if kernel_size not in (2, 4):
            raise ValueError(f"C2spConv2d: kernel_size must be 2 or 4, got {kernel_size!r}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"C2spConv2d: channels must be positive, got {in_channels} -> {out_channels}"
            )
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=bias)
        self.asymmetric = asymmetric
        self.group_sizes = _group_sizes(in_channels)
        if in_channels % 4 and not asymmetric:
            warnings.warn(
                f"C2spConv2d: in_channels={in_channels} is not a multiple of 4; groups "
                f"{self.group_sizes} are uneven, so the padding symmetry is only approximate",
                UserWarning,
                stacklevel=2,
            )
        # (channel start, channel stop, row offset, col offset) of each group in the buffer.
        half = kernel_size // 2
        table = (_ASYMMETRIC_PAD,) * 4 if asymmetric else SHIFT_PAD_TABLE
        bounds = [0]
        for size in self.group_sizes:
            bounds.append(bounds[-1] + size)
        self._placement = tuple(
            (bounds[g], bounds[g + 1], half - 1 + top, half - 1 + left)
            for g, (top, _bottom, left, _right) in enumerate(table)
            if self.group_sizes[g] > 0
        )

    def shift_pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad each channel group towards its corner, all into one buffer of ``H + K - 1``."""
        k = self.kernel_size[0]
        if self.asymmetric:  # one side for all channels: a single F.pad (left, right, top, bottom)
            return F.pad(x, (k // 2 - 1, k // 2, k // 2 - 1, k // 2))
        n, c, h, w = x.shape
        fmt = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format
        )
        buf = torch.empty(
            (n, c, h + k - 1, w + k - 1), dtype=x.dtype, device=x.device, memory_format=fmt
        ).zero_()
        # Four block copies (one per group, not per channel) into the shared buffer.
        for start, stop, row, col in self._placement:
            buf[:, start:stop, row : row + h, col : col + w] = x[:, start:stop]
        return buf

    def shift_pad_concat(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`shift_pad` as one ``F.pad`` per channel group and one concat: the same
        tensor, without slice assignment. Exporters turn slice assignment into ScatterND
        nodes (2-4x slower in ONNX Runtime) and its backward is one masked copy per group,
        so the export form and the fused supernet use this one."""
        k = self.kernel_size[0]
        if self.asymmetric:
            return self.shift_pad(x)
        parts = [  # group rows row..row+H of a (H + K - 1) buffer: pad row above, K-1-row below
            F.pad(x[:, start:stop], (col, k - 1 - col, row, k - 1 - row))
            for start, stop, row, col in self._placement
        ]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shift-pad then one dense convolution with the even kernel."""
        return self._conv_forward(self.shift_pad(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", asymmetric=True" if self.asymmetric else "")


class C2spReLUConvBN(nn.Module):
    """DARTS-style candidate ``ReLU -> C2sp/C4sp conv -> BN`` mapping ``C -> C``."""

    def __init__(
        self, C: int, stride: int, affine: bool = True, kernel_size: int = 2, **kwargs
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            C2spConv2d(C, C, kernel_size, stride=stride, bias=False, **kwargs),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


@register_op("c2sp_conv_2x2")
def _c2sp_conv_2x2(C: int, stride: int, affine: bool = True, **kwargs) -> nn.Module:
    """ReLU -> C2sp 2x2 conv -> BN."""
    return C2spReLUConvBN(C, stride, affine, kernel_size=2, **kwargs)


@register_op("c4sp_conv_4x4")
def _c4sp_conv_4x4(C: int, stride: int, affine: bool = True, **kwargs) -> nn.Module:
    """ReLU -> C4sp 4x4 conv -> BN."""
    return C2spReLUConvBN(C, stride, affine, kernel_size=4, **kwargs)
