"""What a new user hits first: config paths, default run folders, foreign run folders."""

from __future__ import annotations

import pytest

from nas.cli.main import main


@pytest.mark.parametrize("config", ["/no/such/dir/quick.yaml", "no/such/quick", "quick.yaml"])
def test_missing_config_path_is_an_error_not_the_shipped_config(config, tmp_path, monkeypatch,
                                                                capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["search", config, f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err and config in err
    assert not (tmp_path / "r").exists()


def test_a_directory_is_not_a_config(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    assert "not a file" in capsys.readouterr().err


TINY_DATA = [
    "data.name=synthetic",
    "data.options={num_samples: 24, image_size: 8, channels: 3, num_classes: 3}",
    "data.batch_size=12", "runtime.progress=false",
]
TINY_SEARCH = [*TINY_DATA, "optim.epochs=1", "space.steps=2", "space.multiplier=2",
               "space.ops=[none, skip_connect, sep_conv_3x3]", "model.init_channels=4",
               "model.layers=3"]
TINY_TRAIN = [*TINY_DATA, "optim.epochs=1", "model.init_channels=4", "model.layers=3"]


def test_each_command_has_its_own_default_folder(tmp_path, monkeypatch):
    """`nas search quick` then `nas train quick model.genotype=<the search's genotype>`:
    two folders, the search's files untouched."""
    monkeypatch.chdir(tmp_path)
    assert main(["search", "quick", *TINY_SEARCH]) == 0
    search = tmp_path / "runs" / "search" / "quick"
    config_before = (search / "config.yaml").read_text()
    assert main(["train", "quick", *TINY_TRAIN,
                 f"model.genotype={search / 'genotype.yaml'}"]) == 0
    train = tmp_path / "runs" / "train" / "quick"
    assert (train / "model.pt").is_file() and (search / "checkpoint.pt").is_file()
    assert (search / "config.yaml").read_text() == config_before
    assert not (search / "model.pt").exists()


def test_a_folder_of_another_command_or_config_is_refused(tmp_path, capsys):
    run = tmp_path / "shared"
    assert main(["search", "quick", f"run_dir={run}", *TINY_SEARCH]) == 0
    listing = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert main(["train", "quick", f"run_dir={run}", *TINY_TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nas search" in err and str(run) in err
    config = tmp_path / "other.yaml"
    config.write_text("optim: {epochs: 1}\n")
    assert main(["search", str(config), f"run_dir={run}", *TINY_SEARCH]) == 2
    assert "'quick'" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == listing  # nothing touched
    # The same command and config resumes (a finished search just re-exports).
    assert main(["search", "quick", f"run_dir={run}", *TINY_SEARCH]) == 0


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    run = tmp_path / "runs" / "train" / "nope"
    code = main(["train", "quick", f"run_dir={run}", *TINY_TRAIN,
                 "data.name=npz:/no/such/data.npz", "data.options={}"])
    assert code == 2 and "data.npz" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nor the parents it had to create


def test_a_failed_resume_keeps_the_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "quick", f"run_dir={run}", *TINY_TRAIN]) == 0
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", "quick", f"run_dir={run}", *TINY_TRAIN,
                 "data.name=npz:/no/such/data.npz", "data.options={}"]) == 2
    assert sorted(p.name for p in run.iterdir()) == before


def test_plot_checks_the_genotype_before_creating_out(tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", "NOT_A_BASELINE", "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["plot", "darts-v2", "--out", str(out)]) == 0  # names are case-insensitive
    assert (out / "DARTS_V2_normal.png").is_file()


def test_version_and_help_list_shipped_configs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    import nas

    assert capsys.readouterr().out.strip() == f"nas {nas.__version__}"
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = capsys.readouterr().out
    assert "shipped configs: darts_cifar10, fashion_mnist, pcdarts_cifar10, quick" in help_text
    assert "example: nas search quick" in help_text


def test_sigterm_prints_the_resume_hint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nas.cli.main", "train", "quick", f"run_dir={run}", *TINY_TRAIN,
           "optim.epochs=500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "terminated; re-run the same command to resume"


def test_deploy_table_has_no_e_notation():
    from nas.cli.main import format_deploy_table

    report = {"train_form": {"params": 3349342, "bytes": 13397368, "macs": 528000000,
                             "latency_cpu_b1_ms": 12.3456},
              "deploy_form": {"params": 3300000, "bytes": 1.32e7, "macs": 5.2e8,
                              "latency_cpu_b1_ms": 0.0123}}
    table = format_deploy_table(report)
    assert "e+" not in table and "e-" not in table
    assert "3,349,342" in table and "528,000,000" in table and "12.346" in table
