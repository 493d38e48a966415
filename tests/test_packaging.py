"""The wheel installs into a fresh virtual environment and its subpackages import."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_imports_in_fresh_venv(tmp_path: Path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)],
        check=True,
    )
    wheel = next(dist.glob("*.whl"))
    env_dir = tmp_path / "venv"
    # System site packages provide torch & co; the project itself comes only from the wheel.
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    code = (
        "import nas, nas.ops, nas.spaces, nas.search, nas.evaluate, nas.configs, nas.cli;"
        "from importlib import resources;"
        "assert resources.files('nas.assets').joinpath('fashion_mnist_sample.npz').is_file();"
        "assert resources.files('nas.configs').joinpath('search', 'quick.yaml').is_file();"
        "print(nas.search.__file__)"
    )
    out = subprocess.run(
        [python, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout
    assert str(env_dir) in out  # imported from the wheel, not from the source tree
