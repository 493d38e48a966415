"""SSL: sparse shift layer with quantization-aware shift learning ("All You Need is a Few Shifts").

Each channel ``c`` has a learned real displacement ``(α_c, β_c)``: ``α`` horizontal (columns),
``β`` vertical (rows), stored as ``displacement[:, 0]`` and ``displacement[:, 1]``. The forward
pass applies the *rounded* (integer) shift, so training sees exactly what inference computes::

    O[c, i, j] = I[c, i + round(β_c), j + round(α_c)]      (zero outside the map)

with ``round`` half away from zero. The backward pass gives the input the inverse integer
shift of the incoming gradient and the displacements the bilinear-interpolation gradient of the
paper's Eq. 6, evaluated at the real displacement (mean of the one-sided derivatives at an exact
integer, where the bilinear derivative jumps). A penalty on ``(α, β)`` drives most shifts to
zero, which is what makes the layer sparse (:func:`ssl_penalty`, :func:`ssl_sparsity`).

Shifts are index arithmetic (one ``gather``), never interpolation, and never a loop over
channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from nas.autograd import grad_wanted
from nas.errors import ConfigError
from nas.ops._registry import register_op

__all__ = [
    "SparseShift2d",
    "IntegerShift2d",
    "round_half_away",
    "integer_shift",
    "ssl_penalty",
    "ssl_sparsity",
    "displacement_parameters",
    "set_shifts_frozen",
    "shift_freeze_epoch",
    "apply_shift_freeze",
    "grouped_shift_init",
]


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero (``torch.round`` rounds half to even, which the paper does not)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _shift_index(
    h: int, w: int, dx: torch.Tensor, dy: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat source index ``(i + dy[c])·w + (j + dx[c])`` (clamped into the map) and where
    it falls outside the map, both ``(C, H, W)``: a dozen small ops, no host sync."""
    ar = torch.arange(max(h, w), device=device)
    rows = ar[:h] + dy.to(device, torch.long).view(-1, 1)  # (C, H)
    cols = ar[:w] + dx.to(device, torch.long).view(-1, 1)  # (C, W)
    rows_in, cols_in = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    outside = (rows != rows_in).unsqueeze(2) | (cols != cols_in).unsqueeze(1)
    index = (rows_in * w).unsqueeze(2) + cols_in.unsqueeze(1)
    return index, outside


def _gather_shift(x: torch.Tensor, index: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    out = flat.gather(2, index.view(1, c, h * w).expand(n, c, h * w)).view(n, c, h, w)
    return out.masked_fill(outside, 0)


def integer_shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``O[n, c, i, j] = x[n, c, i + dy[c], j + dx[c]]``, zero outside the map.

    ``dx``, ``dy``: integer tensors of shape ``(C,)``. One ``gather`` over a flattened map with
    per-channel index arithmetic; no interpolation and no Python loop over channels.
    """
    index, outside = _shift_index(x.shape[2], x.shape[3], dx, dy, x.device)
    return _gather_shift(x, index, outside)


def _unshift(grad: torch.Tensor, index: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`_gather_shift` (the inverse integer shift of ``grad``): every
    in-map output position came from exactly one input position, so scattering the in-map
    gradient back with a sum is exact (the outside ones add zeros) and needs no new index."""
    n, c, h, w = grad.shape
    src = grad.masked_fill(outside, 0).reshape(n, c, h * w)
    out = torch.zeros_like(src).scatter_add_(2, index.view(1, c, h * w).expand(n, c, h * w), src)
    return out.view(n, c, h, w)


def _displacement_grad(x: torch.Tensor, grad: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Bilinear-interpolation gradient of ``Σ grad·O`` w.r.t. ``(α, β)`` (paper Eq. 6).

    With ``α = a0 + ta`` and ``β = b0 + tb`` (integer part, fraction), the relaxed output is the
    bilinear blend of ``I`` at rows ``b0, b0+1`` and columns ``a0, a0+1``, so

        ∂O/∂α = (1−tb)·(I[b0, a0+1] − I[b0, a0]) + tb·(I[b0+1, a0+1] − I[b0+1, a0])
        ∂O/∂β = (1−ta)·(I[b0+1, a0] − I[b0, a0]) + ta·(I[b0+1, a0+1] − I[b0, a0+1]).

    At an exact integer ``α`` the derivative jumps; the mean of the left and right derivatives
    is the central difference ``(I[·, α+1] − I[·, α−1]) / 2`` (likewise for ``β``). Each term is
    a per-channel correlation ``Σ_{n,i,j} grad·shift(I, dy, dx)`` at an offset within one
    step of ``(b0, a0)``: the input is zero-padded by one, shifted by ``(b0, a0)`` once, and
    the nine correlations of that 3x3 neighbourhood are one product and one sum over a
    windowed view; no loop over channels or offsets.
    """
    acc = torch.promote_types(torch.promote_types(x.dtype, grad.dtype), torch.float32)
    d = disp.detach().to(acc)
    base = torch.floor(d)
    frac = d - base  # (C, 2): [ta, tb]
    shift = base.long()
    n, c, h, w = x.shape
    padded = F.pad(x.to(acc), (1, 1, 1, 1))
    index, outside = _shift_index(h + 2, w + 2, shift[:, 0], shift[:, 1], x.device)
    moved = _gather_shift(padded, index, outside)  # moved[i+1+u, j+1+v] = I[i+b0+u, j+a0+v]
    windows = moved.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 3, 3, H, W), a view
    corr = (windows * grad.to(acc)[:, :, None, None]).sum(dim=(0, 4, 5))  # (C, 3(u), 3(v))
    # [:, 0]: rows u, columns v (for α); [:, 1]: rows v, columns u (for β)
    both = torch.stack((corr, corr.transpose(1, 2)), dim=1)  # (C, 2, 3, 3)
    central = (both[..., 2] - both[..., 0]) * 0.5  # (C, 2, 3): over the other axis
    right = both[..., 2] - both[..., 1]
    slope = torch.where(frac.unsqueeze(-1) == 0, central, right)
    # blend the rows at the other axis' offsets 0 and +1 by its fraction (tb for α, ta for β)
    return torch.lerp(slope[..., 1], slope[..., 2], frac.flip(1)).to(disp.dtype)


class QuantizedShift(torch.autograd.Function):
    """Rounded shift forward; inverse-shift input grad; bilinear displacement grad (Eq. 6)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        shifts = round_half_away(disp.detach()).long()
        index, outside = _shift_index(x.shape[2], x.shape[3], shifts[:, 0], shifts[:, 1], x.device)
        ctx.want_disp = ctx.needs_input_grad[1]
        keep = ctx.want_disp
        ctx.save_for_backward(x if keep else None, disp if keep else None, index, outside)
        return _gather_shift(x, index, outside)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, disp, index, outside = ctx.saved_tensors
        grad_x = grad_d = None
        if grad_wanted(ctx, 0):
            grad_x = _unshift(grad, index, outside)
        if ctx.want_disp and grad_wanted(ctx, 1):
            grad_d = _displacement_grad(x, grad, disp)
        return grad_x, grad_d


def grouped_shift_init(channels: int, kernel_size: int = 3) -> torch.Tensor:
    """Grouped shift init (paper Eq. 2): ``g = floor(c·K²/C)``, ``β = floor(g/K) − K//2``,
    ``α = g mod K − K//2`` (``−1`` for ``K = 3``). Returns ``(C, 2)`` as ``[α, β]``."""
    k = int(kernel_size)
    c = torch.arange(channels, dtype=torch.long)
    g = torch.div(c * k * k, channels, rounding_mode="floor")
    beta = torch.div(g, k, rounding_mode="floor") - k // 2
    alpha = g % k - k // 2
    return torch.stack((alpha, beta), dim=1).float()


class SparseShift2d(nn.Module):
    """Sparse shift layer: per-channel learned displacement, applied as an integer shift.

    Args:
        channels: number of channels (input = output).
        init: ``"grouped"`` (paper's grouped shift over a ``kernel_size`` window) or ``"zeros"``.
        kernel_size: window of the grouped init.

    Attributes:
        displacement: ``(C, 2)`` parameter, column 0 = ``α`` (columns), column 1 = ``β`` (rows).
        frozen: when ``True`` the displacements receive no gradient (from the forward pass or
            from :func:`ssl_penalty`), for the paper's last phase with fixed shifts.
    """

    def __init__(self, channels: int, init: str = "grouped", kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        if init == "grouped":
            disp = grouped_shift_init(channels, kernel_size)
        elif init in ("zeros", "zero"):
            disp = torch.zeros(channels, 2)
        else:
            raise ConfigError(f"SparseShift2d init must be 'grouped' or 'zeros', got {init!r}")
        self.init = init
        self.displacement = nn.Parameter(disp)
        self.frozen = False

    def integer_shifts(self) -> torch.Tensor:
        """``(C, 2)`` long tensor of the rounded shifts ``[round(α), round(β)]``."""
        return round_half_away(self.displacement.detach()).long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        disp = self.displacement.detach() if self.frozen else self.displacement
        return QuantizedShift.apply(x, disp)

    @torch.no_grad()
    def deploy_form(self) -> IntegerShift2d:
        """Inference form: the rounded shifts as an integer buffer, indexing-only forward."""
        return IntegerShift2d(self.integer_shifts())

    def extra_repr(self) -> str:
        return f"{self.channels}, init={self.init!r}, frozen={self.frozen}"


class IntegerShift2d(nn.Module):
    """Deployed sparse shift: integer ``shifts`` buffer ``(C, 2)`` as ``[dx, dy]``; no params."""

    shifts: torch.Tensor

    def __init__(self, shifts: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("shifts", shifts.detach().to(torch.long).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return integer_shift(x, self.shifts[:, 0], self.shifts[:, 1])

    def extra_repr(self) -> str:
        return f"{self.shifts.shape[0]}"


def _shift_layers(model: nn.Module) -> list[SparseShift2d]:
    return [m for m in model.modules() if isinstance(m, SparseShift2d)]


def displacement_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The SSL displacement parameters, to exclude from weight decay (they have their own
    penalty, :func:`ssl_penalty`, as in the paper)."""
    return [m.displacement for m in _shift_layers(model)]


def ssl_penalty(model: nn.Module, norm: str = "l2") -> torch.Tensor:
    """Shift sparsity penalty ``R(α, β)`` summed over all SSL layers (multiply by ``λ``).

    ``"l2"`` (default, the paper's CIFAR setting): ``Σ(α² + β²)``, no ½, so the paper's
    ``λ = 1e-4 … 5e-4`` carries over. ``"l1"``: ``Σ(|α| + |β|)``. Frozen layers contribute
    their value without gradient.
    """
    if norm not in ("l1", "l2"):
        raise ConfigError(f"ssl_penalty norm must be 'l1' or 'l2', got {norm!r}")
    layers = _shift_layers(model)
    if not layers:
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    # one concatenation and two reductions for all layers (not two ops per layer)
    d = torch.cat([(m.displacement.detach() if m.frozen else m.displacement).reshape(-1)
                   for m in layers])
    return d.abs().sum() if norm == "l1" else d.pow(2).sum()


@torch.no_grad()
def ssl_sparsity(model: nn.Module) -> float:
    """Share of channels whose rounded shift is ``(0, 0)`` over all SSL layers (training or
    deploy form); ``0.0`` when the model has none. Syncs with the device: call once per log."""
    shifts = [m.integer_shifts() for m in _shift_layers(model)]
    shifts += [m.shifts for m in model.modules() if isinstance(m, IntegerShift2d)]
    if not shifts:
        return 0.0
    all_shifts = torch.cat([s.to("cpu") for s in shifts])
    return float((all_shifts == 0).all(dim=1).float().mean())


def set_shifts_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) every SSL layer's displacements, e.g. for the last 25 % of training.

    A frozen layer detaches its displacements in ``forward`` and in :func:`ssl_penalty`, so
    they never get a gradient again; freezing also drops any stored gradient. ``torch.optim``
    skips parameters whose ``grad`` is ``None``, so neither momentum nor weight decay can move
    them. ``requires_grad`` stays ``True`` on purpose: the search passes every weight to
    ``backward(inputs=...)`` and ``autograd.grad``, which reject tensors that need no grad.
    """
    for m in _shift_layers(model):
        m.frozen = bool(frozen)
        if frozen:
            m.displacement.grad = None


def shift_freeze_epoch(epochs: int, freeze_at: float) -> int:
    """First (0-based) epoch with frozen shifts: ``ceil(freeze_at * epochs)``.

    Rounding up lets the shifts learn for at least ``freeze_at`` of training (0.75 of 64
    epochs: epochs 0-47 learn, 48-63 are frozen); ``freeze_at = 1`` never freezes.
    """
    if not 0.0 < freeze_at <= 1.0:
        raise ConfigError(f"SSL freeze_at must be in (0, 1], got {freeze_at}")
    return math.ceil(round(freeze_at * epochs, 9))  # round: 0.7 * 10 is 7.000000000000001


def apply_shift_freeze(
    model: nn.Module, epoch: int, epochs: int, freeze_at: float | None
) -> bool:
    """Freeze the SSL displacements for epoch ``epoch`` (0-based) of ``epochs``; call at the
    start of every epoch. Returns whether they are frozen.

    Frozen iff ``freeze_at`` is set and ``epoch >= shift_freeze_epoch(epochs, freeze_at)``;
    otherwise unfrozen. The state depends on the epoch alone (it is not in the checkpoint),
    so a resumed run freezes or unfreezes exactly as an uninterrupted one.
    """
    frozen = freeze_at is not None and epoch >= shift_freeze_epoch(epochs, freeze_at)
    set_shifts_frozen(model, frozen)
    return frozen


@register_op("ssl_conv")
def _ssl_conv(C: int, stride: int, affine: bool, expansion: int = 1) -> nn.Module:
    """DARTS candidate: ReLU → 1×1 (C→eC) → BN → ReLU → SSL → 1×1 (eC→C, stride) → BN.

    At ``e = 1`` it costs ``2C²`` weights, about what ``sep_conv_3x3`` costs (``2C² + 18C``).
    """
    mid = int(round(expansion * C))
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, mid, 1, bias=False),
        nn.BatchNorm2d(mid, affine=affine),
        nn.ReLU(inplace=False),
        SparseShift2d(mid),
        nn.Conv2d(mid, C, 1, stride=stride, bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )
