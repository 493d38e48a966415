"""osep: optimized separable convolution.

Paper: Wei et al., "Optimized Separable Convolution: Yet Another Efficient Convolution
Operator" (Algorithm 1). A ``K x K`` convolution is split into two grouped convolutions
(``K x K`` then ``1 x 1``, or ``K x 1`` then ``1 x K``) with a channel shuffle between
them. The group counts are chosen to minimise parameters subject to the *channel
condition* ``g1 * g2 <= C2 / gamma``, which (with ``gamma = 1``) keeps every output
channel connected to every input channel over the full ``K x K`` window: the volumetric
receptive field of the dense convolution is preserved at a fraction of its cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from nas.ops._registry import register_op

__all__ = ["OSepConv2d", "OSepSepConv", "solve_osep_groups", "channel_shuffle", "osep_params"]


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def osep_params(
    c_in: int, c2: int, c_out: int, k1_area: int, k2_area: int, g1: int, g2: int
) -> int:
    """Weights of the two grouped convolutions: ``C2*(C_in/g1)*|K1| + C_out*(C2/g2)*|K2|``."""
    return c2 * (c_in // g1) * k1_area + c_out * (c2 // g2) * k2_area


def solve_osep_groups(
    c_in: int, c2: int, c_out: int, k1_area: int, k2_area: int, gamma: float = 1.0
) -> tuple[int, int]:
    """Integer group counts ``(g1, g2)`` with the fewest parameters.

    Exhaustive search over divisor pairs: ``g1`` divides ``c_in`` and ``c2``, ``g2``
    divides ``c2`` and ``c_out``, and the channel condition ``g1 * g2 <= c2 / gamma``
    holds. On an exact parameter tie the larger ``g1`` wins (OPERATORS.md; tied pairs are
    equally far from the continuous optimum in ratio, ``g1 * g1' = g1*^2``), e.g.
    ``C = 18, K = 3`` ties ``(9, 2)`` with ``(18, 1)`` and gives the depthwise-separable
    ``(18, 1)``. This replaces the paper's ``ceil(C / n)`` rounding (Algorithm 1), which
    can violate the channel condition and yields groups that do not divide the channels.

    Args:
        c_in: input channels of the first convolution.
        c2: internal channels (output of the first, input of the second convolution).
        c_out: output channels of the second convolution.
        k1_area: ``kh * kw`` of the first kernel (9 for ``3x3``, 3 for ``3x1``).
        k2_area: ``kh * kw`` of the second kernel (1 for ``1x1``, 3 for ``1x3``).
        gamma: overlap coefficient; ``gamma < 1`` relaxes the channel condition and
            loses density (for experiments only).

    Returns:
        ``(g1, g2)``.
    """
    for name, value in (("c_in", c_in), ("c2", c2), ("c_out", c_out)):
        if int(value) != value or value < 1:
            raise ValueError(f"solve_osep_groups: {name} must be a positive integer, got {value}")
    if k1_area < 1 or k2_area < 1:
        raise ValueError(f"solve_osep_groups: kernel areas must be >= 1, got {k1_area}, {k2_area}")
    if not gamma > 0:
        raise ValueError(f"solve_osep_groups: gamma must be > 0, got {gamma}")
    limit = c2 / gamma * (1 + 1e-12)  # tolerance for float gamma; integers stay exact
    feasible = [
        (g1, g2)
        for g1 in _divisors(math.gcd(c_in, c2))
        for g2 in _divisors(math.gcd(c2, c_out))
        if g1 * g2 <= limit
    ]
    if not feasible:
        raise ValueError(f"solve_osep_groups: no group pair satisfies g1*g2 <= {c2}/{gamma}")
    # Fewest parameters; on an exact tie the larger g1 (OPERATORS.md).
    return min(
        feasible,
        key=lambda g: (osep_params(c_in, c2, c_out, k1_area, k2_area, *g), -g[0], -g[1]),
    )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle (reshape-transpose): channel ``b*(C/g) + a`` -> ``a*g + b``."""
    n, c, h, w = x.shape
    if groups <= 1 or groups == c:
        return x  # identity permutation
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class OSepConv2d(nn.Module):
    """Optimized separable convolution (osep, N = 2), an ``nn.Conv2d``-like layer.

    ``K x K`` grouped conv (``g1`` groups, takes the stride) -> channel shuffle with
    ``g1`` groups -> ``1 x 1`` grouped conv (``g2`` groups). With
    ``spatial_separable=True`` the kernels are ``K x 1`` (stride ``(s, 1)``) then
    ``1 x K`` (stride ``(1, s)``). Groups come from :func:`solve_osep_groups` unless
    given. With small ``C`` the solver returns ``(C, 1)`` and the layer is a
    depthwise-separable convolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: ``K`` (int or ``(kh, kw)``).
        stride: stride, applied in the first (spatial) convolution.
        padding: ``None`` for ``dilation * (K - 1) // 2`` per axis ("same" for odd K).
        dilation: dilation of the spatial kernel(s).
        bias: learnable bias on the second convolution.
        internal_channels: ``C2``; default ``min(in_channels, out_channels)``.
        gamma: overlap coefficient passed to the solver (``< 1`` breaks density).
        spatial_separable: use ``K x 1`` then ``1 x K`` instead of ``K x K`` then ``1 x 1``.
        groups: explicit ``(g1, g2)`` instead of the solver's choice.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        internal_channels: int | None = None,
        gamma: float = 1.0,
        spatial_separable: bool = False,
        groups: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(stride)
        dh, dw = _pair(dilation)
        ph, pw = _pair(padding) if padding is not None else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        c2 = internal_channels if internal_channels is not None else min(in_channels, out_channels)
        if spatial_separable:
            k1, s1, p1, d1 = (kh, 1), (sh, 1), (ph, 0), (dh, 1)
            k2, s2, p2, d2 = (1, kw), (1, sw), (0, pw), (1, dw)
        else:
            k1, s1, p1, d1 = (kh, kw), (sh, sw), (ph, pw), (dh, dw)
            k2, s2, p2, d2 = (1, 1), (1, 1), (0, 0), (1, 1)
        if groups is None:
            g1, g2 = solve_osep_groups(
                in_channels, c2, out_channels, k1[0] * k1[1], k2[0] * k2[1], gamma
            )
        else:
            g1, g2 = groups
            if in_channels % g1 or c2 % g1 or c2 % g2 or out_channels % g2:
                raise ValueError(
                    f"OSepConv2d: groups {groups} must divide channels "
                    f"({in_channels} -> {c2} -> {out_channels})"
                )
        self.in_channels, self.out_channels, self.internal_channels = in_channels, out_channels, c2
        self.kernel_size, self.stride = (kh, kw), (sh, sw)
        self.spatial_separable, self.gamma = spatial_separable, gamma
        self.g1, self.g2 = g1, g2
        self.conv1 = nn.Conv2d(in_channels, c2, k1, s1, p1, d1, groups=g1, bias=False)
        self.conv2 = nn.Conv2d(c2, out_channels, k2, s2, p2, d2, groups=g2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped spatial conv, shuffle so each second-conv group sees every first group."""
        return self.conv2(channel_shuffle(self.conv1(x), self.g1))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, internal_channels={self.internal_channels}, "
            f"groups=({self.g1}, {self.g2}), spatial_separable={self.spatial_separable}"
        )


class OSepSepConv(nn.Module):
    """o-DARTS candidate: DARTS ``sep_conv`` with each dw+pw pair replaced by one osep.

    ``ReLU -> osep(stride) -> BN -> ReLU -> osep(1) -> BN``, ``C -> C``.
    """

    def __init__(self, C: int, stride: int, affine: bool = True, kernel_size: int = 3, **kwargs):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            OSepConv2d(C, C, kernel_size, stride=stride, **kwargs),
            nn.BatchNorm2d(C, affine=affine),
            nn.ReLU(inplace=False),
            OSepConv2d(C, C, kernel_size, stride=1, **kwargs),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


@register_op("osep_conv_3x3")
def _osep_conv_3x3(C: int, stride: int, affine: bool = True, **kwargs) -> nn.Module:
    """ReLU -> osep 3x3 -> BN -> ReLU -> osep 3x3 -> BN."""
    return OSepSepConv(C, stride, affine, kernel_size=3, **kwargs)


@register_op("osep_conv_5x5")
def _osep_conv_5x5(C: int, stride: int, affine: bool = True, **kwargs) -> nn.Module:
    """ReLU -> osep 5x5 -> BN -> ReLU -> osep 5x5 -> BN."""
    return OSepSepConv(C, stride, affine, kernel_size=5, **kwargs)
