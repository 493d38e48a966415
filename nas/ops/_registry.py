"""Name -> builder registry of candidate operations (DARTS ``OPS`` compatible).

Builders take ``(C, stride, affine, **kwargs)`` and return a module mapping
``C -> C`` channels; ``stride=2`` halves the spatial size (ceil).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterator, Mapping

from torch import nn

from nas.errors import UnknownOpError

__all__ = ["OPS", "register_op", "create_op", "list_ops", "op_family"]

OpBuilder = Callable[..., nn.Module]


class _Registry(Mapping[str, OpBuilder]):
    """Read-only mapping view; ``OPS[name]`` raises :class:`UnknownOpError` on a miss."""

    def __init__(self) -> None:
        self._builders: dict[str, OpBuilder] = {}
        self._family: dict[str, str] = {}

    def __getitem__(self, name: str) -> OpBuilder:
        try:
            return self._builders[name]
        except KeyError:
            raise UnknownOpError(
                f"unknown op {name!r}; known ops: {', '.join(sorted(self._builders))}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


OPS = _Registry()


def register_op(name: str) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator registering ``builder`` under ``name``; duplicates are a ValueError."""

    def wrap(builder: OpBuilder) -> OpBuilder:
        if name in OPS._builders:
            raise ValueError(f"op {name!r} is already registered")
        OPS._builders[name] = builder
        OPS._family[name] = builder.__module__.rsplit(".", 1)[-1]
        return builder

    return wrap


def create_op(name: str, C: int, stride: int = 1, affine: bool = True, **kwargs) -> nn.Module:
    """Build op ``name``; ``None`` kwargs are dropped so builder defaults hold."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return OPS[name](C, stride, affine, **kwargs)


def list_ops(pattern: str = "*", family: str | None = None) -> list[str]:
    """Sorted op names matching an fnmatch ``pattern`` and, optionally, a module family."""
    names = [n for n in OPS if fnmatch.fnmatch(n, pattern)]
    if family is not None:
        names = [n for n in names if OPS._family[n] == family]
    return sorted(names)


def op_family(name: str) -> str:
    """Module family (``darts``, ``c2sp``, ...) of a registered op."""
    OPS[name]  # raises UnknownOpError
    return OPS._family[name]


@functools.cache
def is_parameter_free(name: str) -> bool:
    """Whether op ``name`` has no learned parameters at stride 1 (``none``, ``skip_connect``,
    the pools): the ops that win a collapsed DARTS normal cell before the convolutions
    have trained. Read off the op itself, so a newly registered op is classed too."""
    return not any(True for _ in OPS[name](4, 1, False).parameters())
