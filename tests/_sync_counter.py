"""Count the aten calls that make the host wait for the device (shared by tests and benchmarks).

On CUDA these copy a value to the host (``.item()``, ``bool(t)``, ``float(t)``) or must
learn a data-dependent size before they can allocate their output (``nonzero``, boolean
indexing, ``masked_select``): the CPU thread stops until the GPU has caught up, so a step
with any of them cannot run ahead of the device. On CPU they cost nothing, but they are
the same calls, so counting them on CPU finds the syncs a CUDA run would pay for.

Usage::

    with HostSyncCounter() as c:
        job.step(batch)
    assert c.count == 0, c.calls

``calls`` holds one ``"op.overload"`` name per sync, in order (``c.summary()`` groups them).

Some tensors stay on the host in a GPU run too, and reading them syncs nothing: Adam's
``step`` counters (torch keeps them on the CPU unless ``capturable``/``fused``), read with
``.item()`` every step. Pass them as ``ignore`` (``optimizer_steps(opt)`` lists them)::

    with HostSyncCounter(ignore=optimizer_steps(job.architect.optimizer)) as c: ...
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SYNC_OPS", "optimizer_steps"]

_aten = torch.ops.aten

#: ops that always read a value or a data-dependent size back to the host
SYNC_OPS = frozenset({
    _aten._local_scalar_dense.default,  # .item(), float(t), int(t), bool(t)
    _aten.item.default,
    _aten.is_nonzero.default,
    _aten.equal.default,
    _aten.nonzero.default,
    _aten.masked_select.default,
    _aten.unique_consecutive.default,
    _aten._unique2.default,
})  # fmt: skip

#: ops that sync only when one of their indices is a boolean (mask) tensor
_INDEX_OPS = frozenset({
    _aten.index.Tensor,
    _aten.index_put.default,
    _aten.index_put_.default,
    _aten._index_put_impl_.default,
})  # fmt: skip


def _ptr(t: Any) -> int | None:
    return t.data_ptr() if isinstance(t, torch.Tensor) else None


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)
        for t in (indices or ())
    )


def optimizer_steps(*optimizers: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The ``step`` tensors in the optimizers' state (created by their first step)."""
    return [
        state["step"]
        for opt in optimizers
        for state in opt.state.values()
        if isinstance(state.get("step"), torch.Tensor)
    ]


class HostSyncCounter(TorchDispatchMode):
    """A dispatch mode that counts host syncs in the code it wraps (eager aten calls).

    Args:
        ignore: tensors whose reads are not syncs (they live on the host in a GPU run too).
        stacks: also keep a short Python stack per sync (``c.stacks``) to find its caller.

    Calls inside a compiled graph run as one opaque kernel and are not seen; calls that
    dynamo makes while tracing are (they run on fake tensors, which never sync): measure
    compiled code after its first call.
    """

    def __init__(self, ignore: Iterable[torch.Tensor] = (), stacks: bool = False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.stacks: list[str] = []
        self._keep_stacks = stacks
        self._ignore = {t.data_ptr() for t in ignore}

    @property
    def count(self) -> int:
        """How many syncs were seen."""
        return len(self.calls)

    def summary(self) -> dict[str, int]:
        """Syncs per op name."""
        return dict(collections.Counter(self.calls))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS and args and _ptr(args[0]) in self._ignore:
            return func(*args, **kwargs)
        if func in SYNC_OPS or (func in _INDEX_OPS and _has_bool_index(args)):
            self.calls.append(str(func))
            if self._keep_stacks:
                self.stacks.append("".join(traceback.format_stack(limit=12)[:-1]))
        return func(*args, **kwargs)
