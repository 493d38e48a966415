"""CLI surface: every subcommand is wired, plot writes files, errors exit 2."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from nas.cli.main import build_parser, main


def test_all_commands_present():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"search", "mo-search", "train", "deploy", "compare", "plot", "quickstart",
            "export", "latency-table", "report"} <= set(sub.choices)
    assert main(["latency-table", "no-such-config"]) == 2


def test_plot_baseline_and_string(tmp_path, capsys):
    assert main(["plot", "DARTS_V2", "--out", str(tmp_path), "--format", "svg"]) == 0
    assert (tmp_path / "DARTS_V2_normal.svg").stat().st_size > 0
    assert (tmp_path / "DARTS_V2_reduce.svg").stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["plot", "NOT_A_BASELINE"],
        ["plot", "Genotype(normal=__import__('os').system('true'), normal_concat=[2])"],
        ["deploy", "/nonexistent/run"],
        ["train", "quick", "model.genotype=DARTS_V9"],
    ],
)
def test_bad_input_exits_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


TINY_TRAIN = [
    "data.name=synthetic",
    "data.options={num_samples: 24, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=12", "data.eval_batch_size=24", "model.layers=3", "model.init_channels=4",
    "optim.epochs=1", "runtime.progress=false", "runtime.device=cpu",
]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot write to. Root ignores mode bits, so as root use a
    read-only system folder (``/sys``) when there is one, else skip."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("running as root with no read-only directory to write into")


@pytest.mark.parametrize("command", ["train", "search"])
def test_run_dir_read_only(command: str, tmp_path: Path, capsys):
    folder = _read_only_dir(tmp_path)
    try:
        assert main(["-q", command, "quick", f"run_dir={folder}", *TINY_TRAIN[:4]]) == 2
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o755)
    line = _one_error_line(capsys)
    assert str(folder) in line and "run_dir" in line


@pytest.mark.parametrize("command", ["train", "search", "compare"])
def test_run_dir_is_a_file(command: str, tmp_path: Path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    assert main(["-q", command, "quick", f"run_dir={taken}", *TINY_TRAIN[:4]]) == 2
    assert "run_dir" in _one_error_line(capsys)
    assert taken.read_text() == "keep me\n"


def test_quiet_keeps_progress_off_stderr_but_in_log(tmp_path: Path, capsys):
    with_bars = [a for a in TINY_TRAIN if a != "runtime.progress=false"]
    assert main(["-q", "train", "quick", f"run_dir={tmp_path}", *with_bars]) == 0
    assert capsys.readouterr().err == ""  # no progress bar either
    assert "TQDM_DISABLE" not in os.environ
    assert "epoch 1/1" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00garbage" * 64, b"PK\x03\x04truncated zip"],
    ids=["empty", "random", "truncated"],
)
def test_train_resume_from_garbage_checkpoint(content: bytes, tmp_path: Path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(content)
    assert main(["-q", "train", "quick", f"run_dir={tmp_path}", *TINY_TRAIN]) == 2
    assert "checkpoint.pt" in _one_error_line(capsys)
    assert (tmp_path / "checkpoint.pt").read_bytes() == content  # never deleted for the user


def test_deploy_foreign_weights(tmp_path: Path, capsys):
    import torch

    assert main(["-q", "train", "quick", f"run_dir={tmp_path}", *TINY_TRAIN]) == 0
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "model.pt")
    capsys.readouterr()
    assert main(["-q", "deploy", str(tmp_path)]) == 2
    assert "model.pt" in _one_error_line(capsys)


@pytest.mark.parametrize("command", ["compare", "mo-search", "quickstart"])
def test_whole_job_commands_refuse_torchrun(command, monkeypatch, capsys):
    # torchrun sets WORLD_SIZE; these commands run whole trainings one after another
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    args = [command] if command == "quickstart" else [command, "quick"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "runs in one process" in err
