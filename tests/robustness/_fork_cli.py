"""Run many ``nas`` command lines, each in its own process forked from one warm interpreter.

``python _fork_cli.py JOBS.json RESULTS.json``: JOBS is a list of ``{"argv", "cwd", "stdout",
"stderr"}``. Each job runs in a forked child exactly as ``python -m nas.cli.main ARGV`` would
(``sys.exit(main(argv))``; an uncaught exception prints its traceback and exits 1), with its
own working directory and stdout/stderr files. The parent imports torch and the CLI's modules
once, so a case costs its own work, not an interpreter start. RESULTS gets the exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

import matplotlib

matplotlib.use("Agg")

import nas.evaluate.deploy_report  # noqa: E402,F401  (warm imports shared by every child)
import nas.evaluate.train  # noqa: E402,F401
import nas.search.darts  # noqa: E402,F401
from nas.cli.main import main  # noqa: E402

TIMEOUT_S = 120


def _child(job: dict) -> int:
    """Body of one forked child; returns its exit status."""
    os.chdir(job["cwd"])
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(job[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    signal.alarm(TIMEOUT_S)
    try:
        return main(job["argv"])
    except SystemExit as exc:  # argparse usage errors
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        return 1


def run_jobs(jobs: list[dict]) -> list[int]:
    codes = []
    for job in jobs:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(job)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        todo = json.load(fh)
    with open(sys.argv[2], "w") as fh:
        json.dump(run_jobs(todo), fh)
