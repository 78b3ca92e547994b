"""The conformance plugin as a pytest citizen: it acts only when its cases are collected, its
options are ``--bp-*``, usage mistakes are usage errors (exit 4, one line, no verdict), xdist is
refused, case ids print whole, every case is collected once and the counts agree with pytest's."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = str(ROOT / "conformance")
UNUSED_TARGET = "127.0.0.1:9"  # nothing is ever sent: these runs stop before any case runs
TIMEOUT_S = 240


def run_pytest(*args: str, cwd: Path = ROOT, prefix: tuple[str, ...] = ()) -> tuple[int, str]:
    """`python -m pytest ARGS` in a subprocess: (exit code, stdout + stderr)."""
    command = [sys.executable, *prefix, "-m", "pytest", "-p", "no:cacheprovider", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def other_project(tmp_path: Path) -> Path:
    """An unrelated project whose conftest has its own ``--target`` and ``--report`` options."""
    project = tmp_path / "other"
    project.mkdir()
    (project / "conftest.py").write_text(
        textwrap.dedent(
            """
            def pytest_addoption(parser):
                parser.addoption("--target", default="prod")
                parser.addoption("--report", default="none")

            import pytest

            @pytest.fixture
            def target(request):
                return request.config.getoption("target")
            """
        )
    )
    (project / "test_other.py").write_text("def test_target(target):\n    assert target == 'staging'\n")
    (project / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    return project


def test_unrelated_project_with_its_own_target_option(other_project: Path) -> None:
    code, output = run_pytest("--target", "staging", "-v", cwd=other_project)
    assert code == 0, output
    assert "1 passed" in output
    assert "conformance" not in output  # no header, no summary


def test_markers_are_not_registered_in_other_projects(other_project: Path) -> None:
    code, output = run_pytest("--markers", cwd=other_project)
    assert code == 0, output
    assert "section_4" not in output and "must:" not in output
    marked = "import pytest\n\n@pytest.mark.must\ndef test_x():\n    pass\n"
    (other_project / "test_marked.py").write_text(marked)
    code, output = run_pytest(cwd=other_project)
    assert code != 0 and "'must' not found in `markers`" in output


def test_options_are_namespaced() -> None:
    code, output = run_pytest("--help")
    assert code == 0
    options = set(re.findall(r"^\s+(--bp-[a-z-]+)", output, re.M))
    assert {"--bp-target", "--bp-data-dir", "--bp-html", "--bp-report", "--bp-sample"} <= options
    for old in ("--target", "--data-dir", "--sample", "--seed", "--report", "--list", "--sessions"):
        assert not re.search(rf"^\s+{old}[ =,]", output, re.M), old


def _expected_file(tmp_path: Path) -> str:
    path = tmp_path / "known.txt"
    path.write_text("4.1-register-new  anything\n4.99-no-such-case  whatever\n")
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bp-sample", "-3"], "--bp-sample -3: expected a whole number >= 1"),
        (["--bp-fuzz-examples", "-5"], "--bp-fuzz-examples -5: expected a whole number >= 1"),
        (["--bp-timeout-s", "0"], "--bp-timeout-s 0: expected a number of seconds > 0"),
        (["--bp-target", ""], "--bp-target '' is not HOST:PORT: no ':' between host and port"),
        (["--bp-target", "localhost"], "--bp-target 'localhost' is not HOST:PORT: no ':'"),
        (["--bp-target", "127.0.0.1:99999"], "--bp-target '127.0.0.1:99999' is not HOST:PORT: port '99999'"),
        (["--bp-sessions", "no/such/folder"], "--bp-sessions 'no/such/folder': not a folder"),
        (["--bp-expected-failures", "EXPECTED"], "unknown case ids: 4.99-no-such-case"),
        (["--bp-sessions", "CLASH"], "two sessions make case 15-replay-reconnect"),
    ],
)
def test_usage_errors_exit_4_with_one_line_and_no_verdict(
    args: list[str], message: str, tmp_path: Path
) -> None:
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "reconnect.json").write_text((ROOT / "conformance" / "sessions" / "reconnect.json").read_text())
    given = {"EXPECTED": _expected_file(tmp_path), "CLASH": str(clash)}
    args = [given.get(arg, arg) for arg in args]
    code, output = run_pytest(SUITE, "--bp-target", UNUSED_TARGET, *args)
    assert code == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], output[-2000:]
    assert "CONFORMANT" not in output and "certification summary" not in output


def test_missing_extra_is_a_usage_error() -> None:
    """Without hypothesis (the [conformance] extra), one line says what to install."""
    script = textwrap.dedent(
        """
        import sys

        class NoHypothesis:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "hypothesis":
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoHypothesis())
        import pytest
        sys.exit(pytest.main(sys.argv[1:]))
        """
    )
    args = [SUITE, "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--bp-target", UNUSED_TARGET]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert "ERROR: the conformance suite needs hypothesis: pip install 'backupproto[conformance]'" in output
    assert "CONFORMANT" not in output and "0 run of" not in output


def test_xdist_is_refused_at_once() -> None:
    pytest.importorskip("xdist")
    code, output = run_pytest(SUITE, "-n", "2", "--bp-target", UNUSED_TARGET)
    assert code == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert "does not run under pytest-xdist" in output
    assert "CONFORMANT" not in output


def test_xdist_still_works_for_other_projects(other_project: Path) -> None:
    pytest.importorskip("xdist")
    code, output = run_pytest("-n", "2", "--target", "staging", cwd=other_project)
    assert code == 0, output[-2000:]
    assert "1 passed" in output


def _collected_ids(*args: str) -> list[str]:
    code, output = run_pytest(SUITE, "--collect-only", "-q", *args)
    assert code == 0, output[-2000:]
    return [line for line in output.splitlines() if "::" in line]


def test_every_case_is_collected_once() -> None:
    ids = _collected_ids()
    assert len(ids) == len(set(ids))
    assert sum("15-replay-register-file-crc-ok" in node for node in ids) == 1
    corpus = sorted((ROOT / "conformance" / "sessions").glob("*.json"))
    assert sum("15-replay-" in node for node in ids) == len(corpus)
    assert "certification summary" not in "".join(ids)


def test_sessions_are_read_per_run_not_per_import(tmp_path: Path) -> None:
    """Two runs in one process with different --bp-sessions folders see their own sessions (a
    module-global config read at import time would keep the first run's)."""
    session = json.loads((ROOT / "conformance" / "sessions" / "reconnect.json").read_text())
    for name in ("first-extra", "second-extra"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.json").write_text(json.dumps({**session, "name": name}))
    script = textwrap.dedent(
        f"""
        import pytest

        class Ids:
            def __init__(self):
                self.ids = []
            def pytest_collection_finish(self, session):
                self.ids = [item.nodeid for item in session.items]

        for name in ("first-extra", "second-extra"):
            ids = Ids()
            pytest.main([{SUITE!r}, "--collect-only", "-q", "-p", "no:cacheprovider",
                         "--bp-sessions", {str(tmp_path)!r} + "/" + name], plugins=[ids])
            print("RUN", name, sorted(i.split("[")[-1] for i in ids.ids if "extra]" in i))
        """
    )
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    runs = [line for line in done.stdout.splitlines() if line.startswith("RUN")]
    assert runs == [
        "RUN first-extra ['15-replay-first-extra]']",
        "RUN second-extra ['15-replay-second-extra]']",
    ], done.stdout[-2000:] + done.stderr[-2000:]


def test_case_and_wire_do_not_import_each_other() -> None:
    def imported(module: str) -> set[str]:
        tree = ast.parse((ROOT / "conformance" / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names.add(("." * node.level) + (node.module or ""))
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    assert not imported("wire") & {".case", "conformance.case"}
    assert ".wire" in imported("case")


def test_verbose_output_keeps_case_ids_whole_and_counts_agree(tmp_path: Path) -> None:
    """-v prints ``::3.3-little-endian`` (not ``::3::3-little-endian``); the JSON report, the
    JUnit file and pytest's own line count the same cases; the hypothesis cache stays out of
    the working folder."""
    report, junit, html = tmp_path / "report.json", tmp_path / "junit.xml", tmp_path / "report.html"
    selection = "0-sanity or 3.3-little-endian or 15-replay-reconnect or 9.1-fuzz-malformed"
    code, output = run_pytest(
        SUITE,
        "-v",
        "-k",
        selection,
        "--bp-fuzz-examples",
        "5",
        "--bp-report",
        str(report),
        "--bp-html",
        str(html),
        f"--junitxml={junit}",
        cwd=tmp_path,
    )
    assert code == 0, output[-3000:]
    assert "test_03_framing.py::3.3-little-endian PASSED" in output
    assert "::3::3" not in output and "::9::1" not in output
    passed = int(re.search(r"(\d+) passed", output.splitlines()[-1]).group(1))  # type: ignore[union-attr]
    data = json.loads(report.read_text())
    assert data["counts"]["passed"] == passed == len(data["cases"])
    ids = {row["id"] for row in data["cases"]}
    assert {"0-sanity-first", "0-sanity-last", "3.3-little-endian", "15-replay-reconnect"} <= ids
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", "0")) == passed
    assert f"cases: {passed} run of" in output
    assert html.read_text().count('<details id="case-') == passed
    assert not (tmp_path / ".hypothesis").exists()
