"""Count the aten calls that make the host wait for the device, with their call stacks.

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
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from dispatch import SYNC_OPS, is_host_sync, optimizer_steps  # noqa: E402  (one definition)

__all__ = ["HostSyncCounter", "SYNC_OPS", "optimizer_steps"]


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
        if is_host_sync(func, args, self._ignore):
            self.calls.append(str(func))
            if self._keep_stacks:
                self.stacks.append("".join(traceback.format_stack(limit=12)[:-1]))
        return func(*args, **kwargs)
