"""Self-test of the conformance suite: 100% against the reference server, and each deliberately
broken server (tests/broken_servers/server.py --fault NAME) caught by the right MUST case, with a
message that names the deviation."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupproto.io.server_process import ServerProcess
from conformance.case import CASES

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "broken_servers" / "server.py"
SUITE_TIMEOUT_S = 240

# fault -> {case id that must fail: a pattern its message must contain}
CAUGHT_BY: dict[str, dict[str, str]] = {
    "zlib-crc": {"4.4-file-crc-block-boundary": r"equals zlib\.crc32 of the plaintext"},
    "big-endian": {"3.3-little-endian": r"big-endian"},
    "version-2": {"3.2-response-version-3": r"version 2 in the response header"},
    "taken-name-2100": {"4.1-register-duplicate-name": r"accepted a duplicate name"},
    "silent-duplicate": {"4.1-register-duplicate-name": r"silently dropped"},
    "oaep-sha256": {"7.2-oaep-sha1": r"wraps with SHA-256"},
    "accept-small-key": {"7.1-public-key-512-bit": r"512-bit RSA key"},
    "answer-1105": {"4.6-crc-retry-no-response": r"2104 ACKNOWLEDGED"},
    "path-as-given": {"13.13-file-name-path-refused": r"used as a path, as given"},
    "die-on-malformed": {"3.1-unknown-code": r"seems to have died on this request"},
    "close-after-each": {"2.1-several-requests-one-connection": r"one request per connection"},
    "zero-padded": {"3-no-padding-between-messages": r"zero-padded to a fixed packet size of 1024"},
    "plaintext-size": {"5.4-content-size-encrypted": r"PLAINTEXT size"},
    "missing-client-id": {"4.5-crc-ok-acknowledged": r"client_id is missing"},
    "payload-size-zero": {"4.1-register-new": r"0 with a payload following"},
    "chunked-cbc": {"4.4-file-multi-mib": r"does not decrypt the file as ONE CBC stream"},
}


def run_suite(target: str, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """`pytest conformance --bp-target ...` in a subprocess; (exit code, JSON report, output)."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    command = [sys.executable, "-m", "pytest", "conformance", "--bp-target", target]
    command += ["--bp-report", str(report)]
    command += ["-p", "no:cacheprovider", "-q", "--bp-timeout-s", "3", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    output = done.stdout + done.stderr
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, data, output


def outcomes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in report["cases"]}


@pytest.fixture
def broken_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ServerProcess]]:
    """(fault, server): tests/broken_servers/server.py --fault FAULT on a fresh data dir."""
    fault = str(request.param)
    command = [sys.executable, str(BROKEN), "--fault", fault]
    server = ServerProcess.start(tmp_path / "broken-data", command=command)
    try:
        yield fault, server
    finally:
        server.stop()


def test_reference_server_passes_every_case(reference_server: Any, tmp_path: Path) -> None:
    """The whole suite (fuzzing reduced) against the reference server, with its data dir: all pass."""
    target = f"{reference_server.host}:{reference_server.port}"
    code, report, output = run_suite(
        target, tmp_path, "--bp-data-dir", str(reference_server.data_dir), "--bp-fuzz-examples", "60"
    )
    rows = outcomes(report)
    bad = {case_id: row["message"][:400] for case_id, row in rows.items() if row["outcome"] != "passed"}
    bad.pop("4.4-file-large", None)  # skipped unless --large-file-mib
    assert bad == {}, output[-3000:]
    assert code == 0, output[-3000:]
    assert report["verdict"] == "CONFORMANT"
    assert "\nCONFORMANT\n" in output
    assert "partial run" not in output  # the other dialects' cases are not part of a 2023A run
    assert rows["4.4-file-large"]["outcome"] == "skipped"
    assert {"0-sanity-first", "0-sanity-last", "9.1-fuzz-malformed-requests", "11.1-file-stored"} <= set(rows)


@pytest.mark.parametrize("broken_server", sorted(CAUGHT_BY), indirect=True)
def test_broken_server_is_caught(broken_server: tuple[str, ServerProcess], tmp_path: Path) -> None:
    """Each fault fails its MUST case(s), with a message naming the deviation; the run exits non-zero."""
    fault, server = broken_server
    expected = CAUGHT_BY[fault]
    selection = " or ".join(["0-sanity-first", *expected])
    args = ["-k", selection]
    if fault == "path-as-given":  # lets the case find the file written outside the client's folder
        args += ["--bp-data-dir", str(server.data_dir)]
    code, report, output = run_suite(str(server.target), tmp_path, *args)
    rows = outcomes(report)
    for case_id, pattern in expected.items():
        assert rows[case_id]["outcome"] == "failed", output[-3000:]
        assert rows[case_id]["level"] == "MUST"
        assert re.search(pattern, rows[case_id]["message"]), rows[case_id]["message"][:2000]
    assert code == 1
    assert report["verdict"] == "NOT CONFORMANT"
    assert "\nNOT CONFORMANT\n" in output


@pytest.mark.parametrize("broken_server", ["zlib-crc"], indirect=True)
def test_expected_failures_file(broken_server: tuple[str, ServerProcess], tmp_path: Path) -> None:
    """A listed deviation that fails as described passes the run; a listed case that passes fails it."""
    target = str(broken_server[1].target)
    listed = tmp_path / "known.txt"
    listed.write_text("# our CRC\n4.4-file-crc-block-boundary  equals zlib\\.crc32\n")
    selection = ["-k", "4.4-file-crc-block-boundary or 4.1-register-new"]
    code, report, output = run_suite(target, tmp_path, *selection, "--bp-expected-failures", str(listed))
    assert code == 0, output[-3000:]
    assert outcomes(report)["4.4-file-crc-block-boundary"]["outcome"] == "expected-failure"
    assert report["verdict"] == "NOT CONFORMANT"
    listed.write_text("4.1-register-new  anything\n")
    code, report, output = run_suite(
        target, tmp_path, "-k", "4.1-register-new", "--bp-expected-failures", str(listed)
    )
    assert code == 1
    assert outcomes(report)["4.1-register-new"]["outcome"] == "unexpected-pass"
    listed.write_text("4.4-file-crc-block-boundary  this text is not in the message\n")
    only = ["-k", "4.4-file-crc-block-boundary"]
    code, report, _ = run_suite(target, tmp_path, *only, "--bp-expected-failures", str(listed))
    assert code == 1
    assert outcomes(report)["4.4-file-crc-block-boundary"]["outcome"] == "failed"


@pytest.mark.parametrize("broken_server", ["replace-key"], indirect=True)
def test_should_failure_is_a_warning_unless_strict(
    broken_server: tuple[str, ServerProcess], tmp_path: Path
) -> None:
    """A SHOULD case that fails is a warning (exit 0, CONFORMANT); with --strict it fails the run."""
    target = str(broken_server[1].target)
    selection = ["-k", "4.2-public-key-twice"]
    code, report, output = run_suite(target, tmp_path, *selection)
    assert code == 0, output[-3000:]
    assert outcomes(report)["4.2-public-key-twice"]["outcome"] == "warning"
    assert report["verdict"] == "CONFORMANT"
    code, report, _ = run_suite(target, tmp_path, *selection, "--bp-strict")
    assert code == 1
    assert report["verdict"] == "NOT CONFORMANT"


def test_list_runs_nothing(tmp_path: Path) -> None:
    """--list prints every case id with its level and requirement and exits 0 without a target."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "--bp-list", "-p", "no:cacheprovider", "-m", "must"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"^4\.4-file-crc-block-boundary\s+MUST\s+`cksum` is the POSIX cksum", done.stdout, re.M)
    assert "4.2-public-key-twice" not in done.stdout  # a SHOULD case, deselected by -m must
    assert "nothing was run" in done.stdout


def test_requirements_are_quoted_from_the_spec() -> None:
    """Every case's requirement text occurs in spec/protocol.md or spec/dialects.md (whitespace aside)."""
    for module in sorted((ROOT / "conformance").glob("test_*.py")):
        importlib.import_module(f"conformance.{module.stem}")
    texts = [(ROOT / "spec" / name).read_text() for name in ("protocol.md", "dialects.md")]
    spec = " ".join(" ".join(text.split()) for text in texts)
    mine = {case_id: info for case_id, info in CASES.items() if not case_id.startswith("15")}
    missing = [case_id for case_id, info in mine.items() if info.requirement not in spec]
    assert missing == []


def test_sessions_folder_adds_replay_cases(reference_server: Any, tmp_path: Path) -> None:
    """`--sessions DIR`: each session file there becomes a case `15-replay-NAME` of the run."""
    folder = tmp_path / "extra"
    folder.mkdir()
    session = json.loads((ROOT / "conformance" / "sessions" / "reconnect.json").read_text())
    session["name"] = "extra-reconnect"
    (folder / "extra-reconnect.json").write_text(json.dumps(session))
    target = f"{reference_server.host}:{reference_server.port}"
    code, report, output = run_suite(target, tmp_path, "--bp-sessions", str(folder), "-k", "15-replay")
    rows = outcomes(report)
    assert rows["15-replay-extra-reconnect"]["outcome"] == "passed", output[-2000:]
    assert rows["15-replay-reconnect"]["outcome"] == "passed"
    assert code == 0
