"""`runtime.compile_mode` / `runtime.compile_backend`: CUDA graphs as a runtime option.

No GPU here: the tests check what reaches ``torch.compile`` and that a mode/backend pair
runs a real network on CPU; ``benchmarks/gpu_check.sh`` measures the CUDA-graph step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.config import RuntimeConfig, build
from nas.errors import ConfigError
from nas.runtime import compile_module


def test_bad_compile_mode_is_one_line_naming_the_field():
    with pytest.raises(ConfigError, match="runtime.compile_mode must be one of"):
        build(RuntimeConfig, {"compile": True, "compile_mode": "fastest"})
    with pytest.raises(ConfigError, match="needs runtime.compile=true"):
        build(RuntimeConfig, {"compile_mode": "reduce-overhead"})


@pytest.mark.parametrize(
    "mode, expected",
    [(None, {}), ("default", {}), ("reduce-overhead", {"mode": "reduce-overhead"})],
)
def test_mode_and_backend_reach_torch_compile(monkeypatch, mode, expected):
    seen = {}
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: seen.update(kw))
    compile_module(nn.Linear(2, 2), torch.device("cpu"), True, mode=mode, backend="aot_eager")
    assert seen == {"backend": "aot_eager", **expected}


def test_disabled_compile_leaves_the_module_alone(monkeypatch):
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: pytest.fail("compiled"))
    compile_module(nn.Linear(2, 2), torch.device("cpu"), False, mode="reduce-overhead")


def test_reduce_overhead_mode_runs_a_training_step_on_cpu():
    """The mode the GPU runs, through a real backend on CPU: same loss and gradients as
    eager (``aot_eager`` traces forward and backward as inductor would)."""
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    compiled = nn.Sequential(*[m for m in eager])  # the same parameters, a second wrapper
    compile_module(compiled, torch.device("cpu"), True, mode="reduce-overhead",
                   backend="aot_eager")
    x = torch.randn(4, 3, 8, 8)
    torch.compiler.cudagraph_mark_step_begin()
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in eager.parameters()]
    eager.zero_grad()
    eager(x).sum().backward()
    for g, p in zip(grads, eager.parameters()):
        torch.testing.assert_close(g, p.grad)
