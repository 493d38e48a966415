"""Run folder: resolved config, log file, metrics (JSONL + CSV) and atomic checkpoints.

Every job writes into one folder; running the same command again resumes from it.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from nas.errors import ConfigError, NasError

if TYPE_CHECKING:  # torch and matplotlib load lazily: nas.genotype uses these helpers
    import torch
    from matplotlib.figure import Figure

__all__ = [
    "CheckpointError",
    "RunDir",
    "RUN_OWNER",
    "SHARED_COMMANDS",
    "default_run_dir",
    "run_owner",
    "check_owner",
    "claim_owner",
    "RUN_LOCK",
    "acquire_run_lock",
    "release_run_lock",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_weights",
    "error_summary",
    "relative_path",
    "relative_paths",
]

log = logging.getLogger("nas")


class CheckpointError(NasError, RuntimeError):
    """A checkpoint or weights file is unreadable or belongs to another run or network."""


_START_OVER = "delete it or use another run_dir"


#: Crash-test aid (benchmarks/chaos.py): SIGKILL this process inside its N-th atomic write,
#: after the temp file is written and before the rename.
KILL_IN_WRITE = "NAS_CHAOS_KILL_IN_WRITE"
_writes_done = 0


def _chaos_point() -> None:
    global _writes_done
    spec = os.environ.get(KILL_IN_WRITE, "")
    if spec.isdigit():
        _writes_done += 1
        if _writes_done == int(spec):
            os.kill(os.getpid(), signal.SIGKILL)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later start tell a dead writer's leftover from a live one's.
    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            _chaos_point()
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, then rename: never a half file."""
    _atomic_write(Path(path), lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_savefig(fig: Figure, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` to a temp file beside ``path``, then rename; format from the suffix."""
    path = Path(path)
    fmt = kwargs.pop("format", None) or path.suffix.lstrip(".").lower() or "png"
    _atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs))
    return path


def load_weights(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    what: str = "checkpoint",
    hint: str = _START_OVER,
) -> Any:
    """``torch.load(weights_only=True)``; an unreadable or unsafe file is a CheckpointError
    naming ``path`` and ending with ``hint`` (what to do)."""
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. pickle-protocol notes: one error line, no noise
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused it: nothing was executed
        if "GLOBAL" in str(exc):
            detail = "it holds Python objects that weights_only loading refuses"
        else:
            detail = "not a PyTorch weights file"
    except OSError as exc:
        detail = exc.strerror or error_summary(exc)
    except (EOFError, RuntimeError, ValueError, zipfile.BadZipFile, AttributeError, TypeError,
            IndexError, KeyError, MemoryError):
        empty = path.is_file() and path.stat().st_size == 0
        detail = "empty file" if empty else "truncated, corrupt or not a PyTorch weights file"
    raise CheckpointError(f"{path}: cannot load {what}: {detail}; {hint}")


def error_summary(exc: BaseException, limit: int = 120) -> str:
    """First informative line of an exception's message, cut to ``limit`` characters.

    A ``KeyError`` reads "missing key 'x'"; a heading such as "Error(s) in loading state_dict
    for Net:" gives way to the line under it.
    """
    if isinstance(exc, KeyError):
        return f"missing key {exc}"[:limit]
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    while len(lines) > 1 and lines[0].endswith(":"):
        lines.pop(0)
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


# paths in results ----------------------------------------------------------------------------


def relative_path(path: str | Path, base: str | Path) -> str:
    """``path`` as seen from ``base`` (``..`` where needed, worked out lexically): results
    name files relative to their run or experiment, so they read the same on any checkout
    and never show an absolute path of the machine that wrote them."""
    return os.path.relpath(os.path.abspath(os.fspath(path)), os.path.abspath(os.fspath(base)))


# An absolute POSIX path in prose, YAML or a table cell: a "/" that starts a word (not
# "km/h", "a/b", "http://", "</tag"), up to a space, quote, bracket or separator.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/<-])/[^\s'\"`,;|()\[\]{}<>]+")


def relative_paths(text: str, base: str | Path) -> str:
    """``text`` with every absolute path in it rewritten by :func:`relative_path`."""
    return _ABSOLUTE_PATH.sub(lambda m: relative_path(m.group(0), base), text)


# one writer per run folder ------------------------------------------------------------------

#: The lock file a writing command holds in its run folder (``fcntl.flock``, so the kernel
#: releases it when the process ends, killed or not); it holds the holder's pid and command
#: while held, and is emptied on release (a killed holder's line stays until the next run).
RUN_LOCK = ".nas-run.lock"

# Folders this process holds: resolved path -> [fd, count]. Re-entrant per process: a job
# may reopen a folder it holds (e.g. a finished search re-exported); flock itself would
# refuse a second open file of the same lock even within one process.
_held: dict[str, list[int]] = {}
_held_guard = threading.Lock()

# --- who owns a run folder ------------------------------------------------------------------

#: The marker a run folder's first command writes: ``{"command": ..., "config": ...}``.
RUN_OWNER = ".nas-run.json"

#: Commands whose run folder several processes share by design; the training folders under
#: it are locked as usual, which is what keeps two processes from training one thing twice.
#: `nas mo-search` processes on one folder (or storage) are workers of one Optuna study,
#: each trial in its own ``trials/<n>/``; `nas compare` processes may split one comparison's
#: entries between them (experiments/fashion_mnist_cpu/run_parallel.sh), each entry's
#: training in ``<entry>/seed<N>/``, its tables rewritten atomically by the last to finish.
SHARED_COMMANDS = frozenset({"mo-search", "compare"})


def default_run_dir(command: str, name: str, root: str = "runs") -> Path:
    """``runs/<command>/<config name>``: a search and a train of one config never collide."""
    return Path(root) / command / name


def run_owner(path: str | Path) -> dict[str, str] | None:
    """The ``command`` and ``config`` that claimed the run folder ``path``; None when it has
    no marker or an unreadable one (which claims nothing)."""
    try:
        owner = json.loads((Path(path) / RUN_OWNER).read_text())
        return {"command": str(owner["command"]), "config": str(owner["config"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_owner(path: str | Path, command: str, name: str) -> None:
    """Refuse to resume a run folder that another command or config wrote."""
    owner = run_owner(path)
    if owner is not None and (owner["command"], owner["config"]) != (command, name):
        raise ConfigError(
            f"run_dir {path} holds a `nas {owner['command']}` run of config "
            f"{owner['config']!r}, not `nas {command}` of {name!r}: choose another run_dir "
            "or delete that folder"
        )


def claim_owner(path: str | Path, command: str, name: str) -> None:
    """Write the marker of ``nas <command>`` for config ``name`` unless one is there."""
    marker = Path(path) / RUN_OWNER
    if not marker.is_file():
        atomic_write_text(marker, json.dumps({"command": command, "config": name}))



def _forget_inherited_locks() -> None:
    """In a forked child: the parent's locks are the parent's, not this process's."""
    for fd, _ in _held.values():
        try:
            os.close(fd)  # the parent's descriptor stays open: its lock holds
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_inherited_locks)


def _holder(lock: Path) -> str:
    """``pid 1234 (nas search quick)`` from a held lock file, as far as it can be read."""
    try:
        pid, _, what = lock.read_text().strip().partition(" ")
    except OSError:
        pid, what = "", ""
    if not pid.isdigit():
        return "another process"
    return f"pid {pid}" + (f" ({what})" if what else "")


def acquire_run_lock(folder: Path, owner: str) -> None:
    """Make this process the one writer of ``folder`` until :func:`release_run_lock`.

    ``owner`` (e.g. ``nas search quick``) is written beside the pid for the message another
    command gets. Raises ConfigError naming the holder when another process has it.
    """
    key = str(folder.resolve())
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            return
        lock = folder / RUN_LOCK
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(
                    f"run_dir {folder}: cannot open its lock file {RUN_LOCK} "
                    f"({exc.strerror or exc}); fix its permissions or use another run_dir"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"run_dir {folder} is in use by {_holder(lock)}; wait for it or use "
                    "another run_dir"
                ) from None
            except OSError as exc:  # e.g. a file system without flock: no lock, no refusal
                os.close(fd)
                log.warning("run_dir %s: cannot lock %s (%s); not guarding against a second "
                            "writer", folder, RUN_LOCK, exc.strerror or exc)
                return
            try:  # the file may have been replaced while we waited: lock the one in place
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {owner}\n".encode(), 0)
        _held[key] = [fd, 1]


def release_run_lock(folder: Path) -> None:
    """Undo one :func:`acquire_run_lock` of ``folder``; the last one unlocks it."""
    key = str(folder.resolve())
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            fd = entry[0]
            try:  # empty while free: the file names its holder only while there is one
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing the only descriptor releases the flock


class RunDir:
    """One run's folder. Metrics rows carry an ``epoch`` key so a resume can drop stale rows.

    ``read_only``: the view the ranks other than 0 of a distributed run get. It reads (the
    checkpoint to resume from, the metrics) but every write method does nothing, so the
    rule "only rank 0 writes the run folder" holds wherever a job writes through it.
    """

    CHECKPOINT = "checkpoint.pt"

    #: written when a run starts; a folder holding only these has nothing worth keeping
    BOOKKEEPING = frozenset({"config.yaml", "log.txt", ".nas-run.json", "genotype.yaml",
                             RUN_LOCK})

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._handler: logging.Handler | None = None
        self._locked = False
        self._created_root = None if read_only else _first_missing_ancestor(self.path)
        if not read_only:
            _ensure_writable_dir(self.path)
            remove_stale_temp_files(self.path)

    @property
    def writes(self) -> bool:
        """False for a read-only view: skip work whose only product is a file."""
        return not self.read_only

    def lock(self, owner: str) -> None:
        """Be the one process writing this folder until :meth:`close` (``owner``, e.g.
        ``nas search quick``, names this command to a second one, which gets a
        ConfigError). Re-entrant within a process; a read-only view never locks."""
        if self.read_only or self._locked:
            return
        acquire_run_lock(self.path, owner)
        self._locked = True

    def close(self) -> None:
        """Detach the log and release the folder's lock (what leaving ``with`` does)."""
        self.detach_log()
        if self._locked:
            self._locked = False
            release_run_lock(self.path)

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        """Detach the log and unlock; a run that failed before writing anything leaves no
        folder."""
        try:
            self.detach_log()
            if self.read_only:
                return
            root = self._created_root
            if exc_type is None or root is None or not root.is_dir():
                return
            files = [p for p in root.rglob("*") if p.is_file()]
            if all(p.parent == self.path and p.name in self.BOOKKEEPING for p in files):
                shutil.rmtree(root, ignore_errors=True)
        finally:
            self.close()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # logging -------------------------------------------------------------------------
    def attach_log(self) -> None:
        """Mirror the ``nas`` logger into ``log.txt`` in this folder."""
        if self._handler is not None or self.read_only:
            return
        handler = logging.FileHandler(self.path / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("nas").addHandler(handler)
        logging.getLogger("nas").setLevel(logging.INFO)
        self._handler = handler

    def detach_log(self) -> None:
        if self._handler is not None:
            logging.getLogger("nas").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    # config ----------------------------------------------------------------------------
    def save_config(self, text: str) -> None:
        """Store the resolved config; warn when a resumed run's config changed."""
        if self.read_only:
            return
        path = self.path / "config.yaml"
        if path.exists() and path.read_text() != text:
            log.warning("config differs from the one saved in %s; using the new one", path)
        atomic_write_text(path, text)

    # metrics ---------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def truncate_metrics(self, epoch: int) -> None:
        """Drop rows at or after ``epoch`` (written before a crash, not checkpointed)."""
        if self.read_only:
            return
        rows = [r for r in self.read_metrics() if r.get("epoch", -1) < epoch]
        self._write_metrics(rows)

    def log_metrics(self, row: dict[str, Any]) -> None:
        if self.read_only:
            return
        self._write_metrics([*self.read_metrics(), row])

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        if self.read_only:
            return
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        keys: list[str] = []
        for r in rows:
            keys.extend(k for k in r if k not in keys)
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    # checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], name: str = CHECKPOINT) -> Path:
        """``torch.save`` to a temp file, then rename: a kill never leaves a torn file."""
        import torch

        path = self.path / name
        if not self.read_only:
            _atomic_write(path, lambda fh: torch.save(state, fh))
        return path

    def write_text(self, name: str, text: str) -> Path:
        """:func:`atomic_write_text` to ``name`` in this folder (nothing when read-only)."""
        path = self.path / name
        if not self.read_only:
            atomic_write_text(path, text)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """:func:`atomic_write_bytes` to ``name`` in this folder (nothing when read-only)."""
        path = self.path / name
        if not self.read_only:
            atomic_write_bytes(path, data)
        return path

    def load_checkpoint(
        self, name: str = CHECKPOINT, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any] | None:
        path = self.path / name
        if not path.exists():
            return None
        state = load_weights(path, map_location)
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path}: not a checkpoint of this project (holds {type(state).__name__}); "
                f"{_START_OVER}"
            )
        return state


def _first_missing_ancestor(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temp files that killed writers left in ``folder`` (recursively); a live
    process's temp file (another worker's write in progress) is kept."""
    removed = 0
    for tmp in folder.rglob(".*.tmp"):
        parts = tmp.name.split(".")  # "", <name parts>, pid, random, "tmp"
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and (pid == os.getpid() or _pid_alive(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) and prove a file can be written there."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run_dir {path} exists and is not a directory; choose another run_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"run_dir {path} is not a writable directory ({reason}); "
            "choose another run_dir or fix its permissions"
        ) from None
