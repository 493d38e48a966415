"""Run folder: resolved config, log file, metrics (JSONL + CSV) and atomic checkpoints.

Every job writes into one folder; running the same command again resumes from it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["RunDir", "atomic_write_bytes", "atomic_write_text"]

log = logging.getLogger("nas")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
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


class RunDir:
    """One run's folder. Metrics rows carry an ``epoch`` key so a resume can drop stale rows."""

    CHECKPOINT = "checkpoint.pt"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._handler: logging.Handler | None = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # logging -------------------------------------------------------------------------
    def attach_log(self) -> None:
        """Mirror the ``nas`` logger into ``log.txt`` in this folder."""
        if self._handler is not None:
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
        rows = [r for r in self.read_metrics() if r.get("epoch", -1) < epoch]
        self._write_metrics(rows)

    def log_metrics(self, row: dict[str, Any]) -> None:
        self._write_metrics([*self.read_metrics(), row])

    def _write_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        keys: list[str] = []
        for r in rows:
            keys.extend(k for k in r if k not in keys)
        with open(self.path / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    # checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], name: str = CHECKPOINT) -> Path:
        """``torch.save`` to a temp file, then rename: a kill never leaves a torn file."""
        path = self.path / name
        _atomic_write(path, lambda fh: torch.save(state, fh))
        return path

    def load_checkpoint(
        self, name: str = CHECKPOINT, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any] | None:
        path = self.path / name
        if not path.exists():
            return None
        return torch.load(path, map_location=map_location, weights_only=True)
