"""Conversion of a trained model to its inference (deploy) form.

Contract with the operators: any module that defines ``deploy_form(self) -> nn.Module``
is replaced by what it returns (DO-Conv folded, SSL integer shifts, BDSC binary masks).
The conversion works on a copy; the trained model is left untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["to_deploy", "deployable_modules"]


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
