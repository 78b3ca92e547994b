"""The code base stays ruff clean and mypy --strict clean (backupproto is a typed package).

Both tools run through this interpreter (``python -m ruff``, ``python -m mypy``): they are test
dependencies (``pip install -e '.[test]'``), so a missing tool fails the test instead of
skipping it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPED_PACKAGES = {"backupproto", "reference_server", "reference_client", "conformance"}


def run_module(module: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", module, *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_clean() -> None:
    result = run_module("ruff", "check", "--quiet", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_covers_library_programs_and_suite() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert config["strict"] is True
    assert set(config["packages"]) >= TYPED_PACKAGES


def test_mypy_strict_clean() -> None:
    result = run_module("mypy")  # the packages of [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def test_py_typed_marker_ships() -> None:
    assert (ROOT / "backupproto" / "py.typed").exists()
