"""Threads sized to the machine, passive OpenMP waiting, and per-run peak memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import nas.threads as threads
from nas.config import load_config
from nas.errors import ConfigError
from nas.evaluate.train import TrainConfig, run_train
from nas.runtime import peak_memory_mb, reset_peak_memory


@pytest.fixture
def machine(monkeypatch):
    """A fake 8-core machine whose load the test sets."""
    state = {"load": 0.0}
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "cpu_load", lambda: state["load"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return state


def test_threads_take_the_free_cores_divided_among_workers(machine):
    assert threads.plan_threads().threads == 8
    machine["load"] = 5.2  # five cores busy elsewhere
    assert threads.plan_threads().threads == 3
    assert threads.plan_threads(workers=2).threads == 1
    machine["load"] = 20.0
    plan = threads.plan_threads()
    assert plan.threads == 1 and plan.oversubscribed


def test_explicit_settings_win(machine, monkeypatch):
    machine["load"] = 7.0
    assert threads.plan_threads(requested=6).threads == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    plan = threads.plan_threads()
    assert (plan.threads, plan.source) == (3, "OMP_NUM_THREADS")


def test_deterministic_mode_ignores_the_load(machine):
    machine["load"] = 6.0
    assert threads.plan_threads(deterministic=True).threads == 8
    assert threads.plan_threads(deterministic=True, workers=4).threads == 2


def test_oversubscription_warns(machine, caplog, monkeypatch):
    machine["load"] = 12.0
    monkeypatch.setattr(threads, "_warned_oversubscribed", False)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("WARNING", logger="nas"):
            threads.configure_threads()
        assert torch.get_num_threads() == 1
        assert "oversubscribed" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_cgroup_quota_caps_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert threads._cgroup_cores(cpu_max) == 1.5
    cpu_max.write_text("max 100000\n")
    assert threads._cgroup_cores(cpu_max) is None


def test_runtime_threads_validated():
    with pytest.raises(ConfigError, match="runtime.threads"):
        load_config(TrainConfig, None, ["runtime.threads=0"])


def test_cli_defaults_openmp_to_passive_waiting():
    code = ("import os, nas.cli.main\n"
            "nas.cli.main.main(['search', 'no_such_config'])\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # an explicit choice wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_peak_memory_is_per_run_not_process_lifetime(tmp_path):
    cpu = torch.device("cpu")
    big = torch.ones(2**30 // 4)  # 1 GiB, touched
    big_peak = peak_memory_mb(cpu)
    del big
    assert reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) < big_peak - 500
    cfg = load_config(TrainConfig, None, [
        f"run_dir={tmp_path}", "optim.epochs=1", "data.name=synthetic",
        "data.options={num_samples: 32, image_size: 8, channels: 3, num_classes: 3}",
        "data.batch_size=16", "model.layers=3", "model.init_channels=4",
        "runtime.progress=false", "runtime.threads=1",
    ])
    [result] = run_train(cfg)
    # A tiny run after a big allocation reports its own peak, not the 1 GiB one.
    assert result.peak_mem_mb is not None and result.peak_mem_mb < big_peak - 500


def test_compare_table_flags_latency_measured_on_a_busy_cpu():
    from nas.evaluate.compare import format_table

    row = {"name": "a", "genotype": "DARTS_V2", "channels": 8, "acc_mean": 0.5, "acc_std": 0.0,
           "seeds": 1, "params_M": 0.1, "macs_M": 1.0, "deploy_bytes": 2048, "latency_ms": 1.5,
           "train_images_per_s": 10.0, "peak_train_mem_MB": 100.0}
    quiet = format_table([{**row, "latency_noisy": False}], "note")
    busy = format_table([{**row, "latency_noisy": True}], "note")
    assert "busy CPU" not in quiet
    assert "| 1.50 (busy CPU) |" in busy and "oversubscribed" in busy


def test_own_work_is_not_counted_as_a_busy_machine(monkeypatch):
    # A run's later phases (the retrain after a search, a compare's second entry) must not
    # mistake the load their own first phase left in the 1-minute average for other jobs.
    monkeypatch.setattr(threads, "_samples", [(0.0, 0.0)])
    monkeypatch.setattr(threads.time, "monotonic", lambda: 120.0)
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: 180.0)  # 1.5 cores busy for 2 min
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert threads.own_load() == pytest.approx(1.5)
    assert threads.cpu_load() == pytest.approx(0.5)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.plan_threads().threads == 2  # before the fix: 1 (load 2 on 2 cores)


def test_own_load_measures_this_process(monkeypatch):
    monkeypatch.setattr(threads, "_samples", [(threads.time.monotonic(), threads._cpu_seconds())])
    end = threads.time.monotonic() + 1.5
    x = 0
    while threads.time.monotonic() < end:  # one core busy
        x += 1
    assert 0.5 < threads.own_load() <= threads.usable_cores() + 0.1
