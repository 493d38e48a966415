"""Resuming :func:`nas.loop.fit` from a checkpoint whatever device the job runs on.

There is no GPU here, so a job whose ``device`` says ``meta`` stands in for a CUDA job: the
old code loaded the checkpoint onto ``job.device``, which put the RNG states (and Adam's
``step`` counters) on that device; ``torch.set_rng_state`` refuses anything but a CPU
ByteTensor, and a ``step`` on the GPU makes every optimizer step sync with the host.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas import loop
from nas.loop import fit
from nas.run import RunDir


class TinyJob:
    """A 4->3 linear classifier on 8 fixed points, Adam, two batches per epoch.

    ``device`` is what :func:`fit` reads; the model itself always lives on the CPU.
    """

    def __init__(self, device: str = "cpu") -> None:
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = nn.Linear(4, 3)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(8, 4, generator=g)
        self.y = torch.randint(0, 3, (8,), generator=g)

    def start_epoch(self, epoch: int) -> None:
        pass

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.x[:4], self.y[:4]), (self.x[4:], self.y[4:])]

    def num_batches(self) -> int:
        return 2

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y = batch
        x = x + 0.1 * torch.randn_like(x)  # draws from the global RNG: a resume must restore it
        out = self.model(x)
        loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss, (out.argmax(1) == y).sum(), len(y)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {}

    def should_stop(self) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def _fit(job: TinyJob, run: RunDir, epochs: int) -> int:
    return fit(job, run, epochs, progress=False, tensorboard=False)


def test_resume_on_another_device_restores_rng_and_weights(tmp_path):
    run = RunDir(tmp_path / "run")
    first = TinyJob()
    assert _fit(first, run, 1) == 1
    saved = run.load_checkpoint()
    torch.manual_seed(123)  # anything but the saved state
    resumed = TinyJob(device="meta")
    assert _fit(resumed, run, 1) == 1  # finished: restores, trains nothing
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    for a, b in zip(first.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_adam_step_stays_a_cpu_tensor_after_resume(tmp_path):
    run = RunDir(tmp_path / "run")
    assert _fit(TinyJob(), run, 1) == 1
    resumed = TinyJob(device="meta")
    _fit(resumed, run, 1)
    states = list(resumed.optimizer.state.values())
    assert states
    for state in states:
        # where a fresh (non-fused, non-capturable) Adam keeps it: no host sync per step
        assert state["step"].device.type == "cpu" and float(state["step"]) == 2.0
        assert state["exp_avg"].device.type == "cpu"  # cast to its parameter's device


def test_rng_setters_get_cpu_byte_tensors(tmp_path, monkeypatch):
    """With CUDA faked present, the saved GPU states too reach their setter on the CPU."""
    gpu_state = torch.arange(16, dtype=torch.uint8)
    real_state = loop.rng_state
    monkeypatch.setattr(loop, "rng_state", lambda: {**real_state(), "cuda": [gpu_state]})
    run = RunDir(tmp_path / "run")
    assert _fit(TinyJob(), run, 1) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the resume trains nothing

    seen: dict[str, Any] = {}
    real_set = torch.set_rng_state

    def set_cpu(state: torch.Tensor) -> None:
        assert state.device.type == "cpu" and state.dtype == torch.uint8, state
        seen["torch"] = state
        real_set(state)

    def set_cuda(states: list[torch.Tensor]) -> None:
        for s in states:
            assert s.device.type == "cpu" and s.dtype == torch.uint8, s
        seen["cuda"] = states

    monkeypatch.setattr(torch, "set_rng_state", set_cpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_cuda)
    _fit(TinyJob(device="meta"), run, 1)
    assert "torch" in seen and [s.tolist() for s in seen["cuda"]] == [gpu_state.tolist()]


def test_set_rng_state_takes_any_integer_tensor_or_list():
    state = loop.rng_state()
    expected = state["torch"].clone()
    torch.manual_seed(5)
    loop.set_rng_state({**state, "torch": expected.to(torch.int64)})
    assert torch.equal(torch.get_rng_state(), expected)
    torch.manual_seed(5)
    loop.set_rng_state({**state, "torch": expected.tolist()})
    assert torch.equal(torch.get_rng_state(), expected)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Stopped after epoch 1, resumed to 2: the same weights as two epochs straight."""
    straight = TinyJob()
    _fit(straight, RunDir(tmp_path / "straight"), 2)
    run = RunDir(tmp_path / "resumed")
    _fit(TinyJob(), run, 1)
    torch.manual_seed(99)
    resumed = TinyJob()
    assert _fit(resumed, run, 2) == 2
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in run.read_metrics()] == [0, 1]
