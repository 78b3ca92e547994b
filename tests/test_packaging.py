"""The package people install: version, license, --version, the shipped spec, a self-testing sdist."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import backupproto
from backupproto.specification import SPEC_DOCUMENTS, spec_root
from reference_client.cli import main as client_main
from reference_server.__main__ import main as server_main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SDIST_TESTS = [
    "tests/test_cksum.py",
    "tests/test_vectors.py",
    "tests/test_spec_agreement.py",
    "tests/test_packaging.py",
]
SDIST_PARTS = ["LICENSE", "setup.py", "spec/protocol.md", "spec/vectors", "tests/conftest.py"]
SDIST_PARTS += ["conformance/plugin.py", "benchmarks/bench_cksum.py"]
SPEC_ROOT_SCRIPT = "import backupproto.specification as s; print(s.spec_root())"
PROGRAMS: list[tuple[Callable[[list[str]], int], str]] = [
    (server_main, "backup-server"),
    (client_main, "backup-client"),
]


def test_version_has_one_source() -> None:
    assert "version" not in PYPROJECT and "version" in PYPROJECT["dynamic"]
    setuptools_config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    assert setuptools_config["setuptools"]["dynamic"]["version"] == {"attr": "backupproto.__version__"}
    assert importlib.metadata.version("backupproto") == backupproto.__version__  # stale install: reinstall


@pytest.mark.parametrize(("main", "program"), PROGRAMS)
def test_programs_print_their_version(
    main: Callable[[list[str]], int], program: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"{program} {backupproto.__version__}\n"


def test_license_is_mit_as_an_spdx_expression() -> None:
    assert PYPROJECT["license"] == "MIT"
    assert PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
    assert not [c for c in PYPROJECT["classifiers"] if c.startswith("License ::")]  # PEP 639: not both


def test_spec_is_found_with_every_document() -> None:
    root = spec_root()
    for name in SPEC_DOCUMENTS:
        assert root.joinpath(name).is_file(), name
    assert root.joinpath("vectors").is_dir()
    assert "# " in root.joinpath("protocol.md").read_text(encoding="utf-8")


def run_checked(command: list[str | Path], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.slow
def test_sdist_builds_a_wheel_with_the_spec_and_runs_its_own_tests(tmp_path: Path) -> None:
    """sdist -> unpacked -> installed (not editable) in a fresh venv -> its own tests pass there."""
    dist = tmp_path / "dist"
    run_checked([sys.executable, "-m", "build", "--sdist", "--outdir", dist, ROOT], cwd=tmp_path)
    [sdist] = dist.glob("backupproto-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    [source] = (tmp_path / "unpacked").iterdir()
    for part in SDIST_PARTS:
        assert (source / part).exists(), part

    run_checked([sys.executable, "-m", "build", "--wheel", "--outdir", dist, source], cwd=tmp_path)
    [wheel] = dist.glob("backupproto-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in [*SPEC_DOCUMENTS, "vectors/cksum.json"]:
        assert f"backupproto/spec/{name}" in names, name
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)

    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    run_checked([python, "-m", "pip", "install", "--quiet", f"{source}[test]"], cwd=tmp_path)
    # -P: import the installed package, not the unpacked sources in the working folder
    where = run_checked([python, "-P", "-c", SPEC_ROOT_SCRIPT], cwd=source)
    assert "site-packages" in where
    run_checked([python, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_TESTS], cwd=source)
