"""Depthwise convolution with a backward pass built from fast CPU kernels.

On CPU, oneDNN's depthwise backward is fast for 3x3 kernels without dilation; for the 5x5
and dilated kernels of ``sep_conv_5x5`` and ``dil_conv_*`` it takes a generic path 10-50x
slower than the forward (measured on one core, 64x64x8x8, 5x5, dilation 2: forward 0.2 ms,
backward 10-15 ms; 5x5 without dilation is slow too in the default memory format), which
then dominates a supernet step. Both gradients are forward convolutions in disguise, and
the forward kernels are fast for every size:

- input gradient: the output gradient, scattered into a zero map of the input's size when
  strided, convolved with the flipped kernel;
- weight gradient: ``∂L/∂w[c, i, j] = Σ_n Σ_{h,w} x̄[n, c, s·h + d·i, s·w + d·j]·g[n, c, h, w]``
  (``x̄`` the padded input) is a depthwise convolution over the ``N·C`` maps of ``x̄`` whose
  kernels are the output gradients (dilated by the stride ``s``, output strided by the
  dilation ``d``), summed over the batch.

Only "same" padding (``2·padding = dilation·(k − 1)``) on the CPU is rewritten; anything
else uses ``F.conv2d`` and its own backward unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from nas.autograd import grad_wanted

__all__ = ["depthwise_conv2d", "pointwise_conv2d", "uses_fast_backward"]


def uses_fast_backward(
    x: Tensor, weight: Tensor, stride: tuple[int, int], padding, dilation: tuple[int, int]
) -> bool:
    """Whether :func:`depthwise_conv2d` rewrites the backward for this convolution: on the
    CPU, for the cases where oneDNN's own is slow (dilated kernels; kernels other than 3x3
    in the default memory format)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    if not isinstance(padding, tuple) or weight.shape[1] != 1 or x.shape[1] != weight.shape[0]:
        return False
    kh, kw = weight.shape[2:]
    if 2 * padding[0] != dilation[0] * (kh - 1) or 2 * padding[1] != dilation[1] * (kw - 1):
        return False  # not "same" padding
    if dilation != (1, 1):
        return True
    return (kh, kw) != (3, 3) and not _channels_last(x)


def _input_grad(grad: Tensor, weight: Tensor, size, stride, padding, dilation) -> Tensor:
    """``∂L/∂x``: the (zero-upsampled) output gradient convolved with the flipped kernel."""
    if stride != (1, 1):
        full = grad.new_zeros((*grad.shape[:2], *size))
        full[:, :, :: stride[0], :: stride[1]] = grad
        grad = full
    return F.conv2d(grad, weight.flip(2, 3), None, 1, padding, dilation, grad.shape[1])


def _weight_grad(x: Tensor, grad: Tensor, kernel, stride, padding, dilation) -> Tensor:
    """``∂L/∂w``: one depthwise convolution over the ``N·C`` padded input maps with the
    output gradients as kernels, summed over the batch."""
    n, c = x.shape[:2]
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    maps = xp.reshape(1, n * c, *xp.shape[2:])
    kernels = grad.reshape(n * c, 1, *grad.shape[2:])
    out = F.conv2d(maps, kernels, None, dilation, 0, stride, n * c)
    out = out[:, :, : kernel[0], : kernel[1]].reshape(n, c, *kernel)
    return out.sum(0).unsqueeze(1)


class _DepthwiseConv(torch.autograd.Function):
    """Forward: ``F.conv2d``. Backward: the rewritten rules of the module doc."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation)
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        grad_x = grad_w = None
        if grad_wanted(ctx, 0):
            grad_x = _input_grad(grad, weight, x.shape[2:], stride, padding, dilation)
        if grad_wanted(ctx, 1):  # not in the architecture step's backward(inputs=alphas)
            kernel = tuple(weight.shape[2:])
            grad_w = _weight_grad(x, grad, kernel, stride, padding, dilation)
        return grad_x, grad_w, None, None, None


def depthwise_conv2d(
    x: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """Depthwise ``F.conv2d`` (``groups = channels``, no bias) with the fast CPU backward
    where :func:`uses_fast_backward` says so; plain ``F.conv2d`` otherwise."""
    if uses_fast_backward(x, weight, stride, padding, dilation):
        return _DepthwiseConv.apply(x, weight, stride, padding, dilation)
    return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])


def _channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def pointwise_conv2d(x: Tensor, weight: Tensor, groups: int) -> Tensor:
    """A 1x1 stride-1 convolution without bias: a batched matrix product on the CPU in the
    default memory format (oneDNN's 1x1 backward is several times slower there on small
    maps), ``F.conv2d`` otherwise."""
    if x.device.type != "cpu" or _channels_last(x):
        return F.conv2d(x, weight, None, 1, 0, 1, groups)
    n, c, h, w = x.shape
    o = weight.shape[0]
    w3 = weight.reshape(groups, o // groups, c // groups)
    # bmm over (sample, group) directly: one copy of the small weight per sample (none for
    # a dense conv), where matmul's broadcasting adds reshapes in both directions
    if groups == 1:
        wb = w3.expand(n, o, c)
    else:
        wb = w3.unsqueeze(0).expand(n, *w3.shape).contiguous().view(n * groups, *w3.shape[1:])
    y = torch.bmm(wb, x.reshape(n * groups, c // groups, h * w))
    return y.view(n, o, h, w)
