"""Conversion of a trained model to its inference (deploy) form.

:func:`export_form` is the form every exporter sees (ONNX files of ``nas export`` and the
ONNX Runtime latency table alike).

Contract with the operators: any module that defines ``deploy_form(self) -> nn.Module``
is replaced by what it returns (DO-Conv folded, SSL integer shifts, BDSC binary masks).
The conversion works on a copy; the trained model is left untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from nas.ops.c2sp import C2spConv2d

__all__ = ["to_deploy", "deployable_modules", "export_form"]


def deployable_modules(model: nn.Module) -> list[str]:
    """Qualified names of the modules that ``to_deploy`` would replace."""
    return [name for name, m in model.named_modules() if hasattr(m, "deploy_form")]


def _convert(module: nn.Module) -> nn.Module:
    if hasattr(module, "deploy_form"):
        return module.deploy_form()
    for name, child in module.named_children():
        new = _convert(child)
        if new is not child:
            setattr(module, name, new)
    return module


@torch.no_grad()
def to_deploy(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every operator in its inference form."""
    was_training = model.training
    model.eval()
    try:
        deployed = _convert(copy.deepcopy(model))
    finally:
        model.train(was_training)
    return deployed.eval()


class _C2spPadConcat(nn.Module):
    """Export form of :class:`~nas.ops.c2sp.C2spConv2d`: its shift padding as pads and one
    concat (:meth:`~nas.ops.c2sp.C2spConv2d.shift_pad_concat`), then its convolution."""

    def __init__(self, conv: C2spConv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self.conv.shift_pad_concat(x)
        return self.conv._conv_forward(padded, self.conv.weight, self.conv.bias)


def export_form(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with C2sp's slice-assigned padding as pad + concat;
    ``model`` itself when it has no C2sp layer. Same outputs (the export check proves it)."""
    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, C2spConv2d) and not child.asymmetric:
                setattr(module, name, _C2spPadConcat(child))
            else:
                swap(child)

    model = model.eval()
    if not any(isinstance(m, C2spConv2d) and not m.asymmetric for m in model.modules()):
        return model
    copied = copy.deepcopy(model)
    swap(copied)
    return copied.eval()
