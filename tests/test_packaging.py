"""The wheel installs into a fresh virtual environment and its subpackages import."""

from __future__ import annotations

import re
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dependency_paths() -> list[str]:
    """Where this interpreter finds torch & co: its site-packages, never the source tree.

    Listed in a plain ``.pth`` path file of the fresh venv, these folders are added *after*
    the venv's own site-packages and their ``.pth`` files are not run, so an editable install
    of this project there stays invisible.
    """
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += site.getsitepackages()
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    out: list[str] = []
    for d in dirs:
        p = Path(d).resolve()
        if p.is_dir() and p != ROOT and str(p) not in out:
            out.append(str(p))
    return out


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
    venv.create(env_dir, system_site_packages=False, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    inner_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # The project comes only from the wheel; its dependencies from this interpreter's env.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
         "--target", inner_site, str(wheel)],
        check=True,
    )
    (Path(inner_site) / "zz_outer_deps.pth").write_text("\n".join(_dependency_paths()) + "\n")
    code = (
        # every module of every subpackage: a package missing from pyproject's list fails
        "import importlib, pkgutil, torch, nas;"
        "mods = [m.name for m in pkgutil.walk_packages(nas.__path__, 'nas.')"
        "        if not m.name.endswith('__main__')];"
        "[importlib.import_module(m) for m in mods];"
        "assert 'nas.search.supernet.fused' in mods and 'nas.cli.main' in mods, mods;"
        "from importlib import resources;"
        "assert resources.files('nas.assets').joinpath('fashion_mnist_sample.npz').is_file();"
        "assert resources.files('nas.configs').joinpath('search', 'quick.yaml').is_file();"
        "print(nas.search.__file__)"
    )
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )
    # Fails (never skips) when torch or a dependency cannot be imported from the venv.
    assert proc.returncode == 0, f"import from the wheel failed:\n{proc.stderr[-3000:]}"
    out = proc.stdout.strip()
    assert Path(out).resolve().is_relative_to(Path(inner_site).resolve()), out


#: A call in the package's source -> the first torch release that has it. A floor in
#: pyproject.toml below one of these installs a torch the code then fails on.
TORCH_API_FLOORS: dict[str, tuple[str, tuple[int, int]]] = {
    "torch.onnx.export(dynamo=...)": (r"\bdynamo=(?:True|False)\b", (2, 5)),
    "torch.amp.is_autocast_available": (r"torch\.amp\.is_autocast_available\(", (2, 4)),
    "torch.compiler.is_compiling": (r"torch\.compiler\.is_compiling\(", (2, 3)),
    "nn.Module.compile()": (r"\w\.compile\(\)", (2, 2)),
}
#: Source folders of the installed package (pyproject's package-dir).
PACKAGE_DIRS = ("nas",)


def _floor(requirement: str) -> tuple[int, ...]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{re.escape(requirement)}>=([0-9.]+)"', text)
    assert match, f"pyproject.toml has no {requirement}>= floor"
    return tuple(int(part) for part in match.group(1).split("."))


def _apis_used() -> dict[str, tuple[int, int]]:
    sources = "\n".join(p.read_text() for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))
    return {api: version for api, (pattern, version) in TORCH_API_FLOORS.items()
            if re.search(pattern, sources)}


def test_torch_floor_covers_the_apis_the_code_calls():
    used = _apis_used()
    assert "torch.amp.is_autocast_available" in used  # the table still matches the code
    floor = _floor("torch")
    too_new = {api: v for api, v in used.items() if floor[:2] < v}
    assert not too_new, f"torch>={'.'.join(map(str, floor))} lacks {too_new}"


def test_torchvision_floor_is_the_release_of_the_torch_floor():
    torch_floor, vision_floor = _floor("torch"), _floor("torchvision")
    assert torch_floor[0] == 2 and vision_floor[:2] == (0, torch_floor[1] + 15)
