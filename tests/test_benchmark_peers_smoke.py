"""Smoke test of ``benchmarks/peers.py``: the harness around the official DARTS/PC-DARTS code.

The official repositories cannot be fetched in CI, so the test writes two tiny stand-ins
with the official interfaces (``model_search.Network(C, classes, layers, criterion)`` with
``arch_parameters``/``_loss``/``new``, ``architect.Architect(model, args).step(...)``) and the
official habits the harness must cope with: ``.cuda()`` calls, module names shared by both
repositories, DARTS's code in ``cnn/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from _bench_helpers import run_benchmark

MODEL_SEARCH = '''
import torch
import torch.nn as nn
from operations import OPS
from genotypes import PRIMITIVES

KIND = "{kind}"


class Network(nn.Module):
    def __init__(self, C, num_classes, layers, criterion):
        super().__init__()
        self._args = (C, num_classes, layers, criterion)
        self._criterion = criterion
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.head = nn.Linear(C, num_classes)
        # The official code puts alpha on the GPU like this; the harness must redirect it.
        self.alphas = torch.zeros(len(PRIMITIVES)).cuda().requires_grad_()

    def new(self):
        return Network(*self._args).cuda()

    def arch_parameters(self):
        return [self.alphas]

    def forward(self, x):
        h = OPS["relu"](self.stem(x)).mean((2, 3))
        return self.head(h) * (1 + self.alphas.softmax(0)[0])

    def _loss(self, x, y):
        return self._criterion(self(x), y)
'''

ARCHITECT = '''
import torch


class Architect:
    def __init__(self, model, args):
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=args.arch_learning_rate)

    def step(self, x, y, xv, yv, eta, network_optimizer, unrolled):
        self.optimizer.zero_grad()
        model = self.model.new() if unrolled else self.model
        model._loss(xv, yv).backward()
        if unrolled:
            self.model.alphas.grad = model.alphas.grad
        self.optimizer.step()
'''


# A peer that sizes torch's threads itself while it builds its model (as our SearchJob does
# through nas.threads): whatever each side's code does, both must be timed at --threads.
MODEL_SEARCH_SETS_THREADS = MODEL_SEARCH.replace(
    "        self._criterion = criterion\n",
    "        self._criterion = criterion\n        torch.set_num_threads(1)\n",
)


def _fake_checkout(root: Path, kind: str, model_search: str = MODEL_SEARCH) -> Path:
    code = root / "cnn" if kind == "darts" else root
    code.mkdir(parents=True)
    (code / "model_search.py").write_text(model_search.format(kind=kind))
    (code / "architect.py").write_text(ARCHITECT)
    (code / "operations.py").write_text("import torch\nOPS = {'relu': torch.relu}\n")
    (code / "genotypes.py").write_text("PRIMITIVES = ['none', 'skip_connect']\n")
    return root


def test_every_case_runs_against_both_checkouts(tmp_path: Path) -> None:
    darts = _fake_checkout(tmp_path / "darts", "darts")
    pcdarts = _fake_checkout(tmp_path / "pcdarts", "pcdarts")
    out = tmp_path / "out"
    # Three of the five cases keep it short: the weight step, second order (DARTS's
    # ``new()`` per step) and the PC-DARTS checkout (same module names as DARTS's).
    cases = ["darts-weight", "darts-second", "pcdarts-first"]
    proc = run_benchmark("peers", "--quick", "--darts-dir", str(darts), "--pcdarts-dir",
                         str(pcdarts), "--cases", *cases, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "peers.json").read_text())
    rows = {r["case"]: r for r in data["rows"]}
    assert list(rows) == cases
    for r in rows.values():
        assert r["status"] == "ok", r
        assert r["peer_ms"] > 0 and r["ours_ms"] > 0
        assert r["speedup_min"] <= r["speedup"] <= r["speedup_max"]
        assert r["peer_mem_MB"] > 0 and r["ours_mem_MB"] > 0
    assert rows["pcdarts-first"]["ours_k"] == 4 and rows["darts-second"]["ours_k"] == 1
    assert rows["darts-second"]["order"] == "second"
    assert all(r["peer_threads"] == 1 == r["ours_threads"] for r in rows.values())
    meta = data["metadata"]
    assert meta["peers"] == {"darts": str(darts / "cnn"), "pcdarts": str(pcdarts)}
    assert all(len(ms["peer"]) == 2 == len(ms["ours"]) for ms in meta["rounds_ms"].values())
    assert "| case | peer |" in (out / "peers.md").read_text()


def test_bad_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = run_benchmark("peers", "--quick")
    assert proc.returncode == 2 and "--darts-dir" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_benchmark("peers", "--quick", "--darts-dir", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "model_search.py" in proc.stderr
    darts = _fake_checkout(tmp_path / "darts", "darts")
    proc = run_benchmark("peers", "--quick", "--darts-dir", str(darts), "--cases",
                         "pcdarts-first")
    assert proc.returncode == 2 and "needs --pcdarts-dir" in proc.stderr


def test_both_sides_are_timed_at_the_threads_asked_for(tmp_path: Path) -> None:
    darts = _fake_checkout(tmp_path / "darts", "darts", MODEL_SEARCH_SETS_THREADS)
    out = tmp_path / "out"
    proc = run_benchmark("peers", "--quick", "--darts-dir", str(darts), "--cases",
                         "darts-first", "--threads", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "peers.json").read_text())
    (row,) = data["rows"]
    # Measured inside each side's timed blocks: neither the peer's set_num_threads(1) nor
    # our job's own thread sizing (nas.threads) may leave a side on another count.
    assert row["peer_threads"] == 2 and row["ours_threads"] == 2, row
    assert data["metadata"]["complete"] is True
    assert "held at 2 on both sides" in (out / "peers.md").read_text()
