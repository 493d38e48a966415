"""One writer per run folder: a second process opening a folder another one is writing gets
a one-line error naming the holder's pid; the lock goes with its holder, even on SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nas.errors import ConfigError
from nas.run import RUN_LOCK, RunDir
from nas.runtime import open_run

# nas.run imports no torch: the holder is ready in a fraction of a second.
HOLDER = (
    "import sys, time\n"
    "from nas.run import RunDir\n"
    "RunDir(sys.argv[1]).lock('nas search quick')\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
TRY_LOCK = (
    "import sys\n"
    "from nas.errors import ConfigError\n"
    "from nas.run import RunDir\n"
    "try:\n"
    "    RunDir(sys.argv[1]).lock('nas train quick')\n"
    "except ConfigError as exc:\n"
    "    print(exc)\n"
    "    sys.exit(3)\n"
)


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A child process that holds ``folder``'s lock until it is SIGKILLed (on leaving)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait(timeout=30)


def _locked_elsewhere(folder: Path) -> bool:
    """Whether another process is refused ``folder`` right now."""
    proc = subprocess.run([sys.executable, "-c", TRY_LOCK, str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode == 3


def test_second_process_is_refused_naming_the_pid_until_the_holder_is_killed(tmp_path):
    run = tmp_path / "run"
    with held_by_another_process(run) as child:
        with pytest.raises(ConfigError) as err:
            open_run("quick", str(run), "search")
        msg = str(err.value)
        assert "\n" not in msg and str(run) in msg
        assert f"in use by pid {child.pid} (nas search quick)" in msg
        assert "another run_dir" in msg
        assert not (run / "log.txt").exists()  # the refused command wrote nothing
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        with open_run("quick", str(run), "search"):  # the kernel freed the lock
            assert (run / RUN_LOCK).read_text().split()[0] == str(os.getpid())
            assert _locked_elsewhere(run)
        assert (run / RUN_LOCK).read_text() == ""  # emptied on release: names no holder
    assert not _locked_elsewhere(run)  # released when the with block ended


def test_reopening_a_held_folder_in_the_same_process_and_children(tmp_path):
    root = tmp_path / "root"
    with open_run("quick", str(root), "search-seeds") as parent:
        with open_run("quick", str(root / "seed0"), "search") as child:  # another folder
            assert child.path != parent.path
        with open_run("quick", str(root), "search-seeds"):  # re-entrant, no deadlock
            pass
        assert _locked_elsewhere(root)  # the inner exit kept the outer's lock
        assert not _locked_elsewhere(root / "seed0")
    assert not _locked_elsewhere(root)


def test_a_failed_run_releases_the_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RuntimeError), open_run("quick", str(run), "train"):
        raise RuntimeError("boom")
    assert not _locked_elsewhere(run)


def test_read_only_views_do_not_lock(tmp_path):
    run = tmp_path / "run"
    with held_by_another_process(run):
        view = RunDir(run, read_only=True)
        view.lock("nas train quick")  # a non-main rank's view: no lock, no refusal
        view.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_inherit_the_parents_hold(tmp_path):
    run = tmp_path / "run"
    with open_run("quick", str(run), "train"):
        pid = os.fork()
        if pid == 0:  # the child must be refused like any other process
            code = 1
            try:
                RunDir(run).lock("nas train quick")
            except ConfigError as exc:
                code = 0 if f"pid {os.getppid()}" in str(exc) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


#: A tiny `nas search` (as tests/robustness/test_bad_inputs.py drives the CLI).
SEARCH = ("search", "quick", "run_dir=run", "data.name=synthetic",
          "data.options={num_samples: 24, image_size: 8, channels: 3, num_classes: 3}",
          "data.batch_size=12", "runtime.progress=false", "runtime.device=cpu",
          "space.steps=2", "space.multiplier=2", "space.ops=[none, skip_connect, sep_conv_3x3]",
          "model.init_channels=4", "model.layers=3", "optim.epochs=1")


def test_cli_on_a_held_folder_exits_2_with_one_line(tmp_path):
    run = tmp_path / "run"
    with held_by_another_process(run) as child:
        proc = subprocess.run(
            [sys.executable, "-m", "nas.cli.main", "-q", *SEARCH], cwd=tmp_path,
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by pid {child.pid}" in lines[0], proc.stderr
    assert not (run / "metrics.csv").exists()


@pytest.mark.parametrize("command", ["mo-search", "compare"])
def test_folders_of_shared_commands_stay_shared(tmp_path, command):
    """`nas mo-search` processes on one folder are workers of one Optuna study; `nas compare`
    processes may split one comparison's entries (each entry's training folder is locked)."""
    run = tmp_path / "shared"
    with open_run("quick", str(run), command):
        assert not _locked_elsewhere(run)
        with open_run("DARTS_V2", str(run / "DARTS_V2" / "seed0"), "train"):
            assert _locked_elsewhere(run / "DARTS_V2" / "seed0")
    with open_run("quick", str(run), command, exclusive=True):
        assert _locked_elsewhere(run)
