"""DO-Conv: depthwise over-parameterized convolution (Cao et al., "DO-Conv: Depthwise
Over-parameterized Convolutional Layer", IEEE TIP 2022).

A convolution kernel ``W`` is trained as the composition of a depthwise kernel
``D = I + D'`` and a conventional kernel ``W``.  The extra parameters change the training
dynamics (the paper's point) but not the function class, so at inference the composition is
folded once into a plain :class:`torch.nn.Conv2d`.  Training uses the paper's *kernel
composition*: ``W'[o, i, s] = sum_d D[i, s, d] * W[o, i, d]``, one ``einsum`` per forward,
then one ``conv2d``; no Python loop over channels.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from nas.ops._registry import register_op
from nas.ops.primitives import SepConv

__all__ = ["DOConv2d"]

_IntOr2 = int | tuple[int, int]


def _fp32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``device`` (no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _tiled_identity(mn: int, d_mul: int) -> Tensor:
    """``(mn, d_mul)``: ``d_mul // mn`` blocks ``eye(mn)`` side by side, then zero columns."""
    blocks, rest = divmod(d_mul, mn)
    return torch.cat([torch.eye(mn)] * blocks + [torch.zeros(mn, rest)], dim=1)


class DOConv2d(nn.Module):
    """Depthwise over-parameterized ``Conv2d`` (DO-Conv, or DO-DConv when depthwise).

    Args mirror :class:`torch.nn.Conv2d`; ``padding=None`` means "same" for odd kernels
    (``dilation * (K - 1) // 2``).  ``groups`` must be 1 (DO-Conv) or
    ``in_channels == out_channels`` (DO-DConv, over-parameterizing each channel's depthwise
    kernel); the paper's DO-GConv pairs channels differently and is not offered.
    ``d_mul`` (default ``M*N``, must be ``>= M*N``) is the depth multiplier of the paper.

    Parameters: ``W`` ``(C_out, C_in/groups, D_mul)`` and ``D_prime`` ``(C_in, M*N, D_mul)``,
    zero-initialised so the layer starts as ``D = I``.  The identity ``I`` is a
    non-persistent buffer ``D_eye`` of shape ``(M*N, D_mul)``, broadcast over channels, not
    a parameter, so parameter counts are honest: ``C = 64, K = 3`` gives 42,048 (training)
    and 36,864 (deployed).  ``I`` holds ``D_mul // (M*N)`` whole ``eye(M*N)`` blocks side by
    side and zeros in the last ``D_mul mod (M*N)`` columns (paper Sec. 4.5, identity "as much
    as possible"), so at init ``W'[o, i, s] = sum_k W[o, i, k*M*N + s]`` over the blocks.
    A ``1x1`` kernel is not over-parameterized (``D`` would be one scalar per input channel,
    which a plain conv absorbs): ``W`` is then ``(C_out, C_in/groups, 1)`` and ``D_prime``
    is ``None``.

    ``W`` is uniform with ``nn.Conv2d``'s bound divided by ``sqrt(D_mul // (M*N))``, so the
    initial ``W'`` (a sum over the identity blocks) has the variance of the conv it replaces;
    the zero-identity columns get the same distribution so ``D'`` there is not stuck at zero.
    Use :meth:`from_conv` to start from a given conv exactly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOr2,
        stride: _IntOr2 = 1,
        padding: _IntOr2 | None = None,
        dilation: _IntOr2 = 1,
        groups: int = 1,
        bias: bool = False,
        d_mul: int | None = None,
    ) -> None:
        super().__init__()
        if groups != 1 and not (groups == in_channels == out_channels):
            raise ValueError(
                "DOConv2d supports groups=1 (DO-Conv) or groups=in_channels=out_channels "
                f"(DO-DConv); got groups={groups}, in={in_channels}, out={out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        self.groups = groups
        M, N = self.kernel_size
        if padding is None:
            if M % 2 == 0 or N % 2 == 0:
                raise ValueError(f"padding=None ('same') needs an odd kernel; got {M}x{N}")
            padding = (self.dilation[0] * (M - 1) // 2, self.dilation[1] * (N - 1) // 2)
        self.padding = _pair(padding)
        mn = M * N
        self.overparameterized = mn > 1
        if not self.overparameterized:
            d_mul = 1  # 1x1: plain conv, nothing to over-parameterize
        elif d_mul is None:
            d_mul = mn
        elif d_mul < mn:
            raise ValueError(f"d_mul must be >= M*N = {mn}; got {d_mul}")
        self.d_mul = d_mul

        self.W = nn.Parameter(torch.empty(out_channels, in_channels // groups, d_mul))
        if self.overparameterized:
            self.D_prime: nn.Parameter | None = nn.Parameter(torch.zeros(in_channels, mn, d_mul))
            self.register_buffer("D_eye", _tiled_identity(mn, d_mul), persistent=False)
        else:
            self.register_parameter("D_prime", None)
            self.D_eye = None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``W'`` starts with ``nn.Conv2d``'s default init variance, ``D' = 0``."""
        fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        # kaiming_uniform_(a=sqrt(5)) as nn.Conv2d does, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        # shrunk by sqrt(#identity blocks): W' sums that many independent columns of W.
        bound = 1.0 / math.sqrt(fan_in * self.identity_blocks) if fan_in > 0 else 0.0
        with torch.no_grad():
            self.W.uniform_(-bound, bound)
            if self.D_prime is not None:
                self.D_prime.zero_()
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @property
    def identity_blocks(self) -> int:
        """How many whole ``eye(M*N)`` blocks ``I`` holds (``D_mul // (M*N)``; 1 for ``1x1``)."""
        return self.d_mul // (self.kernel_size[0] * self.kernel_size[1])

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, d_mul: int | None = None) -> DOConv2d:
        """A DOConv2d computing what ``conv`` computes (up to rounding when ``D_mul >= 2*M*N``).

        The kernel is split evenly over the identity blocks of ``W``, whose sum is ``W'``.
        """
        if conv.padding_mode != "zeros":
            raise ValueError(f"only padding_mode='zeros' is supported; got {conv.padding_mode!r}")
        padding = conv.padding
        if isinstance(padding, str):
            padding = (0, 0) if padding == "valid" else None  # 'same' -> odd-kernel same
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            d_mul=d_mul,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        mn = layer.kernel_size[0] * layer.kernel_size[1]
        blocks = layer.identity_blocks
        with torch.no_grad():  # split the kernel evenly over the identity blocks; W' sums them
            w = conv.weight.flatten(2) / blocks
            layer.W[..., : blocks * mn].copy_(w.repeat(1, 1, blocks))
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def composed_weight(self) -> Tensor:
        """The conv kernel ``W' = (I + D') o W``, ``(C_out, C_in/groups, M, N)``, in fp32.

        Composed with autocast disabled: in bf16, ``1 + D'`` rounds to ``1`` while ``D'`` is
        small (early training), which would erase the over-parameterization.
        """
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if self.D_prime is None:
            return self.W.reshape(shape)
        dtype = torch.promote_types(self.W.dtype, torch.float32)  # fp32, or fp64 if given
        with _fp32_region(self.W.device):
            D = self.D_prime.to(dtype) + self.D_eye.to(dtype)
            W = self.W.to(dtype)
            if self.groups == 1:  # DO-Conv: W'[o,i,s] = sum_d D[i,s,d] W[o,i,d]
                Wp = torch.einsum("isd,oid->ois", D, W)
            else:  # DO-DConv, per channel: W'[c,0,s] = sum_d D[c,s,d] W[c,0,d]
                Wp = torch.einsum("csd,cod->cos", D, W)
        return Wp.reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.composed_weight().to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.no_grad()
    def deploy_form(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with ``W'`` folded in once; same outputs (``nas.deploy``)."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
        ).to(device=self.W.device, dtype=self.W.dtype)
        conv.weight.copy_(self.composed_weight())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv.train(self.training)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, d_mul={self.d_mul}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


def _do_dconv(
    C: int, kernel_size: int, stride: int, padding: int, dilation: int, d_mul: int | None = None
) -> DOConv2d:
    """Depthwise factory for DARTS blocks: a DO-DConv in place of the depthwise conv."""
    return DOConv2d(C, C, kernel_size, stride, padding, dilation, groups=C, d_mul=d_mul)


@register_op("do_conv_3x3")
def _do_conv_3x3(C: int, stride: int, affine: bool, d_mul: int | None = None) -> nn.Module:
    """ReLU -> DO-Conv 3x3 -> BN (pre-activation, as DARTS's ReLUConvBN)."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        DOConv2d(C, C, 3, stride=stride, padding=1, d_mul=d_mul),
        nn.BatchNorm2d(C, affine=affine),
    )


@register_op("do_sep_conv_3x3")
def _do_sep_conv_3x3(C: int, stride: int, affine: bool, d_mul: int | None = None) -> nn.Module:
    """DARTS ``sep_conv_3x3`` whose two depthwise convs are DO-DConvs."""
    return SepConv(C, C, 3, stride, 1, affine=affine, depthwise=partial(_do_dconv, d_mul=d_mul))
