"""``driver=ray ray.address=HOST:PORT`` against a real ``ray start --head`` cluster that
requires a token (Ray >= 2.52), and the one-line errors of a cluster that refuses or is
not there.

The cluster runs with its own ``HOME`` (holding its token in ``~/.ray/auth_token``, Ray's
default file) and its own ``--temp-dir``; it is stopped by killing the processes whose
command line names that temp dir, and their children. Not ``ray stop --force``: that kills
every Ray process of the user on the machine, other test runs' included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("ray")
from _mo_helpers import TINY  # noqa: E402

from nas.errors import ConfigError  # noqa: E402
from nas.search.mo.ray_driver import join_cluster, token_source  # noqa: E402

RAY = Path(sys.executable).with_name("ray")
TOKEN = "0123456789abcdef0123456789abcdef"
_RAY_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RAY_VARS}
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", **extra}


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process /proc shows."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry)] = (ppid, cmd)
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_cluster(temp_dir: str) -> None:
    """SIGTERM, then SIGKILL, the processes naming ``temp_dir`` and all their children."""
    procs = _processes()
    found = {p for p, (_, cmd) in procs.items() if temp_dir in cmd and p != os.getpid()}
    todo = list(found)
    while todo:
        parent = todo.pop()
        kids = {p for p, (pp, _) in procs.items() if pp == parent} - found
        found |= kids
        todo += kids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_alive(p) for p in found):
                time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[str, Path, str]]:
    """(address, HOME holding the token, temp dir) of a 1-CPU head node with token auth."""
    home = tmp_path_factory.mktemp("ray-home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(TOKEN)
    temp_dir = tempfile.mkdtemp(prefix="nas-ray-")  # short: Ray's socket paths must fit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run(
            [str(RAY), "start", "--head", "--port", str(port), "--num-cpus", "1",
             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp_dir],
            env=_env(home, RAY_AUTH_MODE="token"), check=True, capture_output=True,
            timeout=120,
        )
        yield address, home, temp_dir
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _mo_search(run: Path, address: str, home: Path, *extra: str,
               **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nas.cli.main", "mo-search", "quick", f"run_dir={run}", *TINY,
         "driver=ray", f"ray.address={address}", *extra],
        capture_output=True, text=True, timeout=300, env=_env(home, **env),
    )


@pytest.mark.slow
def test_trials_run_on_a_token_cluster_with_the_default_token_file(cluster, tmp_path):
    address, home, temp_dir = cluster
    # No RAY_AUTH_MODE in the client's environment: Ray alone would not send the token.
    done = _mo_search(tmp_path / "run", address, home, "n_trials=2", "ray.max_concurrent=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "InvalidAuthToken" not in done.stderr
    rows = (tmp_path / "run" / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2
    # The experiment's driver artifacts live in the cluster's session folder: it ran there.
    assert list(Path(temp_dir).glob("session_*/artifacts/*/quick"))


@pytest.mark.slow
def test_a_cluster_refusing_the_client_is_one_line(cluster, tmp_path):
    address, _, _ = cluster
    no_token = tmp_path / "home"
    no_token.mkdir()
    done = _mo_search(tmp_path / "run", address, no_token, "n_trials=1")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: ray.address {address} refused the connection: it "
                                "requires a token; set RAY_AUTH_TOKEN")
    assert "InvalidAuthToken" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    wrong = _mo_search(tmp_path / "run", address, no_token, "n_trials=1",
                       RAY_AUTH_TOKEN="not-the-token")
    assert wrong.returncode == 2
    assert "rejects the token from RAY_AUTH_TOKEN" in wrong.stderr.strip().splitlines()[-1]


def test_no_cluster_at_the_address_is_one_line_at_once(tmp_path):
    port = _free_port()
    t0 = time.monotonic()
    done = _mo_search(tmp_path / "run", f"127.0.0.1:{port}", tmp_path, "n_trials=1")
    assert done.returncode == 2, done.stderr[-3000:]
    assert time.monotonic() - t0 < 60  # Ray alone waits minutes on a closed port
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: ray.address 127.0.0.1:{port}: no Ray cluster answers (Connection refused); "
        f"start one with `ray start --head --port {port}`, or check the host 127.0.0.1")
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        join_cluster("head-node")


def test_token_source_follows_rays_precedence(tmp_path, monkeypatch):
    for var in _RAY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_source() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(TOKEN)
    assert token_source() == str(tmp_path / ".ray" / "auth_token")
    path = tmp_path / "token"
    path.write_text(TOKEN)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert token_source() == f"RAY_AUTH_TOKEN_PATH={path}"
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    assert token_source() == "RAY_AUTH_TOKEN"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN_PATH=.*cannot read"):
        token_source()  # Ray itself would abort the process on it
