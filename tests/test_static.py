"""The code base stays ruff clean and mypy --strict clean (backupproto is a typed package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_clean() -> None:
    result = run("ruff", "check", "--quiet", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_library_server_and_client() -> None:
    result = run(sys.executable, "-m", "mypy")  # the packages of [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def test_py_typed_marker_ships() -> None:
    assert (ROOT / "backupproto" / "py.typed").exists()
