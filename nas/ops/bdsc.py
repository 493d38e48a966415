"""BDSC: balance decoupling spatial convolution (AAAI, "Decoupling Spatial Convolution").

A ``K×K`` convolution is decoupled into a float ``1×1`` convolution ``C_in -> S = p·C_in``
followed by a ``K×K`` convolution ``S -> C_out`` whose kernel is a learned *binary* spatial
configuration ``Q̃ = α(o)·sign(Q)`` (XNOR-Net scaling, ``α(o) = mean|Q[o]|``). Training keeps
a float latent ``Q`` and passes gradients straight through the binarisation. At inference the
binary kernel becomes a ``{0,1}`` mask, so the spatial accumulation is additions only::

    α·(Σ₊ z − Σ₋ z) = 2α·Σ_{M=1} z − α·Σ_all z

Storage: ``C_in·S`` floats + ``C_out·S·K²`` bits + ``C_out`` floats (see ``OPERATORS.md``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nas.ops._registry import register_op

__all__ = ["BDSCConv2d", "BDSCDeploy2d", "clamp_bdsc_", "binarize_ste"]

_FLOAT_BYTES = 4


class _BinarizeSTE(torch.autograd.Function):
    """``Q -> α(o)·sign(Q)`` with ``sign(0) = +1``; backward is the identity (``∂L/∂Q = ∂L/∂Q̃``).

    The paper trains the binary configuration with a straight-through estimator; the latent
    ``Q`` is kept in ``[-1, 1]`` by clamping after each optimizer step instead of by a gradient
    mask, so the backward pass is a plain pass-through.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        alpha = q.abs().mean(dim=tuple(range(1, q.dim())), keepdim=True)
        return torch.where(q >= 0, alpha, -alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def binarize_ste(q: torch.Tensor) -> torch.Tensor:
    """Binary kernel ``α(o)·sign(Q)`` per output channel ``o``, straight-through gradient."""
    return _BinarizeSTE.apply(q)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BDSCConv2d(nn.Module):
    """Training form of BDSC: float ``1×1`` conv, then a binary-configured ``K×K`` conv.

    Args:
        in_channels, out_channels: as in :class:`torch.nn.Conv2d`.
        kernel_size: ``K`` of the spatial (binary) convolution.
        stride: applied to the ``K×K`` convolution.
        padding: of the ``K×K`` convolution; ``None`` means ``K // 2`` ("same" at stride 1).
        expansion: ``p``; the intermediate width is ``S = round(p·C_in)`` (at least 1).
        bias: add a float bias after the ``K×K`` convolution.

    ``Q`` is clamped to ``[-1, 1]`` once at init; afterwards call :func:`clamp_bdsc_` after
    every optimizer step (the paper clamps at the start of each iteration). ``forward`` never
    modifies ``Q``. No nonlinearity sits between the two convolutions, as in the paper.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        expansion: float = 1.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if expansion <= 0:
            raise ValueError(f"BDSC expansion must be > 0, got {expansion}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        if padding is None:
            padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        self.padding = _pair(padding)
        self.expansion = expansion
        self.mid_channels = max(1, int(math.floor(expansion * in_channels + 0.5)))

        self.pointwise = nn.Conv2d(in_channels, self.mid_channels, 1, bias=False)
        self.Q = nn.Parameter(torch.empty(out_channels, self.mid_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MSRA (He) init of both kernels; ``Q`` is then clamped to ``[-1, 1]`` (paper)."""
        nn.init.kaiming_normal_(self.pointwise.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.Q, mode="fan_out", nonlinearity="relu")
        with torch.no_grad():
            self.Q.clamp_(-1.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()

    def binary_weight(self) -> torch.Tensor:
        """The forward kernel ``Q̃ = α(o)·sign(Q)`` (straight-through gradient to ``Q``)."""
        return binarize_ste(self.Q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pointwise(x)
        return F.conv2d(z, self.binary_weight(), self.bias, self.stride, self.padding)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the latent ``Q`` to ``[-1, 1]`` in place (call after the optimizer step)."""
        self.Q.clamp_(-1.0, 1.0)

    def model_bytes(self) -> int:
        """Training-form storage: every parameter as a 4-byte float."""
        return _FLOAT_BYTES * sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def deploy_form(self) -> BDSCDeploy2d:
        """Inference form with ``{0,1}`` masks; equals this module's output (see module doc)."""
        return BDSCDeploy2d.from_training(self)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, mid_channels={self.mid_channels}, "
            f"bias={self.bias is not None}"
        )


class BDSCDeploy2d(nn.Module):
    """Inference form of BDSC: float ``1×1`` conv, then ``2α·conv(z, M) − α·boxsum(z)``.

    ``mask`` is a bool ``{0,1}`` buffer (``M = [Q ≥ 0]``), ``alpha`` one float per output.
    The box sum runs over all ``S`` channels and the ``K×K`` window with the same padding
    and stride, so the spatial accumulation needs additions only; the only multiplies are
    by ``2α`` and ``α`` per output. Stored size: :meth:`model_bytes` (masks at one bit).
    """

    mask: torch.Tensor
    alpha: torch.Tensor

    def __init__(
        self,
        pointwise: nn.Conv2d,
        mask: torch.Tensor,
        alpha: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
    ) -> None:
        super().__init__()
        self.pointwise = pointwise
        self.register_buffer("mask", mask.to(torch.bool))
        self.register_buffer("alpha", alpha.detach().clone().reshape(-1))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.stride = stride
        self.padding = padding
        self.kernel_size = (int(mask.shape[2]), int(mask.shape[3]))

    @classmethod
    @torch.no_grad()
    def from_training(cls, m: BDSCConv2d) -> BDSCDeploy2d:
        """Build from a trained :class:`BDSCConv2d` (its ``Q`` is read, not modified).

        Keeps the trained module's dtype and device (a float64 or bf16 model deploys as one).
        """
        w = m.pointwise.weight
        pw = nn.Conv2d(m.in_channels, m.mid_channels, 1, bias=False, device=w.device, dtype=w.dtype)
        pw.weight.copy_(w)
        q = m.Q.detach()
        alpha = q.abs().mean(dim=(1, 2, 3))
        return cls(pw, q >= 0, alpha, m.bias, m.stride, m.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pointwise(x)
        pos = F.conv2d(z, self.mask.to(z.dtype), None, self.stride, self.padding)
        box_kernel = z.new_ones(1, 1, *self.kernel_size)
        box = F.conv2d(z.sum(dim=1, keepdim=True), box_kernel, None, self.stride, self.padding)
        a = self.alpha.to(z.dtype).view(1, -1, 1, 1)
        out = 2 * a * pos - a * box
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).view(1, -1, 1, 1)
        return out

    def model_bytes(self) -> int:
        """Float params × 4 bytes + mask bits / 8 (rounded up) + ``α`` × 4 bytes."""
        floats = sum(p.numel() for p in self.parameters()) + self.alpha.numel()
        return _FLOAT_BYTES * floats + math.ceil(self.mask.numel() / 8)


@torch.no_grad()
def clamp_bdsc_(model: nn.Module) -> None:
    """Clamp the latent ``Q`` of every :class:`BDSCConv2d` in ``model`` to ``[-1, 1]``.

    Call after each optimizer step (the paper clamps at the start of each iteration); the
    forward pass never clamps, so autograd never sees an in-place change of ``Q``.
    """
    latents = [m.Q for m in model.modules() if isinstance(m, BDSCConv2d)]
    if latents:  # two multi-tensor ops for every layer, not one clamp per layer
        torch._foreach_clamp_min_(latents, -1.0)
        torch._foreach_clamp_max_(latents, 1.0)


@register_op("bdsc_conv_3x3")
def _bdsc_conv_3x3(C: int, stride: int, affine: bool, expansion: float = 1.0) -> nn.Module:
    """DARTS candidate: ReLU → BDSC 3×3 (stride on the spatial conv) → BN."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        BDSCConv2d(C, C, 3, stride=stride, padding=1, expansion=expansion),
        nn.BatchNorm2d(C, affine=affine),
    )
