"""The standard DARTS candidate operations (Liu et al., "DARTS: Differentiable Architecture
Search", ICLR 2019).

Module structure, attribute names and constructor signatures follow the DARTS reference
implementation, so a network built from these blocks has exactly the published parameter
count (DARTS_V2, ``C = 36``, 20 layers: 3.35 M) and can load its state dicts.  Two
extensions, both inactive in the reference setting: :class:`FactorizedReduce` accepts odd
spatial sizes (output ``ceil(H/2)``, like every other stride-2 op) and odd ``C_out``, and
:class:`SepConv` / :class:`DilConv` take a ``depthwise`` factory so paper operators can swap
the depthwise convolution (DO-Conv's ``do_sep_conv_3x3``) without duplicating the block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops._registry import register_op

__all__ = [
    "DepthwiseFactory",
    "depthwise_conv",
    "ReLUConvBN",
    "DilConv",
    "SepConv",
    "Identity",
    "Zero",
    "FactorizedReduce",
]

#: ``(channels, kernel_size, stride, padding, dilation) -> module`` building a depthwise conv.
DepthwiseFactory = Callable[[int, int, int, int, int], nn.Module]


def depthwise_conv(C: int, kernel_size: int, stride: int, padding: int, dilation: int) -> nn.Conv2d:
    """Plain depthwise ``nn.Conv2d`` without bias: the DARTS default ``depthwise`` factory."""
    return nn.Conv2d(
        C, C, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C, bias=False
    )


class ReLUConvBN(nn.Module):
    """ReLU -> Conv -> BN (DARTS preprocessing block); pre-activation as in the reference code."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (DARTS ``dil_conv_*``)."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
        depthwise: DepthwiseFactory = depthwise_conv,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            depthwise(C_in, kernel_size, stride, padding, dilation),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked ReLU -> depthwise -> pointwise -> BN units (DARTS ``sep_conv_*``).

    As in the reference code the first depthwise conv takes the stride and the first unit
    keeps ``C_in`` channels; the second unit maps to ``C_out``.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
        depthwise: DepthwiseFactory = depthwise_conv,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            depthwise(C_in, kernel_size, stride, padding, 1),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            depthwise(C_in, kernel_size, 1, padding, 1),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Identity(nn.Module):
    """``skip_connect`` at stride 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the op's output (strided when ``stride > 1``).

    Multiplying by zero (rather than allocating) keeps dtype, device and memory format, and
    matches the reference implementation.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class FactorizedReduce(nn.Module):
    """ReLU -> two 1x1 stride-2 convs on ``x`` and on ``x`` shifted by one pixel -> concat -> BN.

    The DARTS reduction used by ``skip_connect`` at stride 2 and for cell preprocessing.  The
    shifted branch sees the odd pixels the first branch skips.  On odd ``H`` (or ``W``) the
    shifted input is zero-padded by one row (column) at the end so both branches give
    ``ceil(H/2)``; on even sizes nothing is padded and the op is the reference one.  An odd
    ``C_out`` gives the first branch the extra channel.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        h, w = x.shape[-2:]
        shifted = x[:, :, 1:, 1:]
        if h % 2 or w % 2:
            shifted = F.pad(shifted, (0, w % 2, 0, h % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


@register_op("none")
def _none(C: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


@register_op("skip_connect")
def _skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


@register_op("max_pool_3x3")
def _max_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("avg_pool_3x3")
def _avg_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_op("sep_conv_3x3")
def _sep_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 3, stride, 1, affine=affine)


@register_op("sep_conv_5x5")
def _sep_conv_5x5(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 5, stride, 2, affine=affine)


@register_op("sep_conv_7x7")
def _sep_conv_7x7(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 7, stride, 3, affine=affine)


@register_op("dil_conv_3x3")
def _dil_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 3, stride, 2, 2, affine=affine)


@register_op("dil_conv_5x5")
def _dil_conv_5x5(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 5, stride, 4, 2, affine=affine)


@register_op("conv_7x1_1x7")
def _conv_7x1_1x7(C: int, stride: int, affine: bool) -> nn.Module:
    # Reference order: the 1x7 conv first (stride on W), then the 7x1 (stride on H).
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )
