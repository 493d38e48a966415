"""The import contracts of pyproject.toml (`lint-imports`): they hold on the source, they
name every core module, and they break when an upward import or a cycle is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"spaces", "evaluate", "search", "cli"}
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
        "sys.exit(lint_imports_command())"]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(LINT, cwd=root, env=env, capture_output=True, text=True)


def test_the_core_contract_names_every_core_module() -> None:
    """A new core module cannot slip past the "core imports no job" contract."""
    core = {p.stem for p in (ROOT / "nas").glob("*.py")} - {"__init__", "__main__"}
    core |= {p.name for p in (ROOT / "nas").iterdir()
             if p.is_dir() and (p / "__init__.py").is_file()} - JOBS
    forbidden = next(c for c in _contracts() if c["type"] == "forbidden")
    assert set(forbidden["source_modules"]) == {f"nas.{m}" for m in core}
    assert set(forbidden["forbidden_modules"]) == {f"nas.{j}" for j in JOBS}


def test_lint_imports_passes() -> None:
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("nas/ops/ssl.py", "import nas.search.darts", "the core imports no job"),
    ("nas/spaces/baselines.py", "from nas.evaluate import compare", "layers"),
    ("nas/search/supernet/fused.py", "from nas.search.supernet import model",
     "no import cycle"),  # a cycle inside one layer
    ("nas/loop.py", "    from nas.cli import main", "the core imports no job"),  # in a function
])
def test_contracts_break_on_a_bad_import(tmp_path: Path, module: str, line: str,
                                         broken: str) -> None:
    shutil.copytree(ROOT / "nas", tmp_path / "nas", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    body = f"\n\ndef _bad() -> None:\n{line}\n" if line.startswith(" ") else f"\n{line}\n"
    target.write_text(target.read_text() + body)
    proc = _lint(tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:]
    broken_lines = [ln for ln in proc.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(ln.startswith(broken) for ln in broken_lines), proc.stdout[-2000:]
