"""One rank of a data-parallel test job (launched by torchrun or with torchrun's env vars).

``python _ddp_worker.py steps OUT``: take the test steps of every case in
``_ddp_helpers.CASES`` in one process group; each rank saves its parameters and gradients
to ``OUT/<case>-rank<R>.pt``.

``python _ddp_worker.py cli ARGS...``: ``nas ARGS...`` (as ``python -m nas``), with a fault
injected when ``NAS_TEST_FAULT=RANK:STEP:kill|raise`` is set: on rank RANK, at its STEP-th
optimisation step (counted from this start), SIGKILL itself or raise.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ddp_helpers import CASES, make_job, take_steps  # noqa: E402

from nas import distributed  # noqa: E402


def steps(out: Path) -> int:
    with distributed.session(torch.device("cpu"), timeout_s=60) as world:
        assert world.size == 2, world
        for case in CASES:
            state = take_steps(make_job(case, out / case))
            torch.save(state, out / f"{case}-rank{world.rank}.pt")
    return 0


def inject_fault(spec: str) -> None:
    """Wrap the jobs' ``step`` so that the chosen rank dies at the chosen step."""
    from nas.evaluate.train import TrainJob
    from nas.search.darts import SearchJob

    rank, at, kind = spec.split(":")
    if int(os.environ["RANK"]) != int(rank):
        return
    count = 0
    for cls in (SearchJob, TrainJob):
        original = cls.step

        def step(self, batch, _original=original):
            nonlocal count
            count += 1
            if count == int(at):
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected fault on rank {rank} at step {at}")
            return _original(self, batch)

        cls.step = step


def main(argv: list[str]) -> int:
    if argv[0] == "steps":
        return steps(Path(argv[1]))
    if os.environ.get("NAS_TEST_FAULT"):
        inject_fault(os.environ["NAS_TEST_FAULT"])
    from nas.cli.main import main as cli_main

    return cli_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
