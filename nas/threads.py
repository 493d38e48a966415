"""CPU threads that fit the machine: the cores this process may use, minus those busy.

Several processes that each take every core (torch's default) slow each other down by up
to 10×, and OpenMP's default busy-waiting burns the cores another process needs. So a
run sizes its torch threads to the cores it is given (CPU affinity, cgroup quota) that
are not already busy (1-minute load average, less this process's own recent work),
divided among its workers; respects an
explicit ``OMP_NUM_THREADS`` or ``runtime.threads``; and says when the machine is
oversubscribed, because timings and latency objectives measured then are noise.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ThreadPlan", "usable_cores", "cpu_load", "own_load", "plan_threads",
           "configure_threads", "prefer_passive_waiting", "cpu_oversubscribed"]

log = logging.getLogger("nas")

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_warned_oversubscribed = False


def _cgroup_cores(path: Path = _CGROUP_CPU_MAX) -> float | None:
    """The cgroup v2 CPU quota in cores (``"max"``: no limit)."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cores()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    t = os.times()
    return t.user + t.system


# (wall, cpu) samples of this process: the first from import, one more per own_load() call.
_samples: list[tuple[float, float]] = [(time.monotonic(), _cpu_seconds())]
_LOAD_WINDOW_S = 60.0  # the load average's time constant


def own_load() -> float:
    """Cores this process kept busy over about the last minute: its own share of the load
    average. Without subtracting it, a run's second phase (a compare's second entry, the
    retrain after a search) would see its own first phase as a busy machine and halve its
    threads."""
    now = (time.monotonic(), _cpu_seconds())
    older = [s for s in _samples if now[0] - s[0] >= _LOAD_WINDOW_S]
    ref = older[-1] if older else _samples[0]
    _samples[:] = [s for s in _samples if now[0] - s[0] < _LOAD_WINDOW_S] + [now]
    if older:
        _samples.insert(0, older[-1])
    span = now[0] - ref[0]
    return 0.0 if span < 1.0 else max(0.0, (now[1] - ref[1]) / span)


def cpu_load() -> float:
    """The 1-minute load average of the other processes: the OS's figure (0 where it has
    none) less this process's own recent work (:func:`own_load`)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(0.0, load - own_load())


def cpu_oversubscribed(extra: float = 0.0) -> bool:
    """True when more runnable work than cores (``extra``: our own, not yet in the load)."""
    return cpu_load() + extra > usable_cores() + 0.5


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    cores: int
    load: float
    source: str  # why this many: "OMP_NUM_THREADS", "runtime.threads", "free cores", ...

    @property
    def oversubscribed(self) -> bool:
        return self.load > self.cores + 0.5


def plan_threads(requested: int | None = None, workers: int = 1,
                 deterministic: bool = False) -> ThreadPlan:
    """Torch threads for one of ``workers`` processes sharing this machine.

    In ``deterministic`` mode the load is ignored (the thread count can change float
    summation order, and a resumed run must compute what the first start computed).
    """
    cores, load = usable_cores(), cpu_load()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    workers = max(1, workers)
    if requested is not None:
        threads, source = requested, "runtime.threads"
    elif env.isdigit() and int(env) > 0:
        threads, source = int(env), "OMP_NUM_THREADS"
    elif deterministic:
        threads, source = cores // workers, "usable cores (deterministic)"
    else:
        free = max(1, math.floor(cores - load + 0.5))
        threads, source = free // workers, "free cores"
    return ThreadPlan(max(1, threads), cores, round(load, 2), source)


def configure_threads(requested: int | None = None, workers: int = 1,
                      deterministic: bool = False) -> ThreadPlan:
    """Apply :func:`plan_threads` to torch and warn when the machine is oversubscribed."""
    import torch

    plan = plan_threads(requested, workers, deterministic)
    torch.set_num_threads(plan.threads)
    log.debug("torch threads: %d (%s; %d usable cores, load %.2f)", plan.threads, plan.source,
              plan.cores, plan.load)
    if plan.threads * workers > plan.cores:
        log.warning("%d worker(s) × %d threads exceed the %d usable cores: runs will slow "
                    "each other down", workers, plan.threads, plan.cores)
    global _warned_oversubscribed
    if plan.oversubscribed and not _warned_oversubscribed:  # once per process, not per trial
        _warned_oversubscribed = True
        log.warning("the CPU is oversubscribed (load %.2f on %d usable cores): timings and "
                    "latency measured now are noise", plan.load, plan.cores)
    return plan


def prefer_passive_waiting() -> None:
    """Idle OpenMP threads sleep instead of spinning (before torch loads; an explicit
    ``OMP_WAIT_POLICY`` wins)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
