"""The architecture step's ``backward(inputs=alphas)`` must not pay for SSL's displacement
gradient (the eight-offset correlation) that it would throw away: the shift asks the
autograd engine whether that gradient is used."""

from __future__ import annotations

import torch

import nas.ops.ssl as ssl


def _count_displacement_grads(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = ssl._displacement_grad

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ssl, "_displacement_grad", counted)
    return calls


def _loss(shift: ssl.SparseShift2d, alpha: torch.Tensor) -> torch.Tensor:
    x = torch.randn(2, 8, 6, 6)
    return (shift(x * alpha) ** 2).sum()


def test_backward_to_other_inputs_skips_the_displacement_gradient(monkeypatch) -> None:
    torch.manual_seed(0)
    calls = _count_displacement_grads(monkeypatch)
    shift = ssl.SparseShift2d(8)
    alpha = torch.ones((), requires_grad=True)
    _loss(shift, alpha).backward(inputs=[alpha])
    assert calls == []
    assert alpha.grad is not None and shift.displacement.grad is None


def test_plain_backward_computes_it(monkeypatch) -> None:
    torch.manual_seed(0)
    calls = _count_displacement_grads(monkeypatch)
    shift = ssl.SparseShift2d(8)
    alpha = torch.ones((), requires_grad=True)
    _loss(shift, alpha).backward()
    assert calls == [1]
    assert shift.displacement.grad is not None
