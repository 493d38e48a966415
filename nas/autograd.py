"""Helpers the custom ``torch.autograd.Function`` s share (SSL's shift, the fused supernet's
grouped convolution): skip the gradients a backward pass will not use."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["grad_wanted"]


def grad_wanted(ctx: Any, i: int) -> bool:
    """Whether this backward pass uses the gradient of input ``i``: ``needs_input_grad`` says
    only that the input requires grad; with ``backward(inputs=...)`` or ``autograd.grad``
    the engine may never use it. Asks the engine where it can, else assumes it is used."""
    if not ctx.needs_input_grad[i]:
        return False
    will_run = getattr(torch._C, "_will_engine_execute_node", None)
    node = ctx.next_functions[i][0]
    if will_run is None or node is None or torch.compiler.is_compiling():
        return True
    try:
        return bool(will_run(node))
    except RuntimeError:  # e.g. a leaf under autograd.grad(): not supported, assume used
        return True
