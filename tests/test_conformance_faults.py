"""Self-test of the suite against servers with several faults at once (issue 10): every planted
fault is named among the root causes, no cause twice, a hang is attributed to the case that
caused it, and untestable targets stop early with a clear message and no verdict.

Each run prints its wall time (a figure for the report, never asserted)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backupproto.io.server_process import ServerProcess
from conformance.causes import root_causes
from conformance.liveness import STOPPED_ANSWERING
from conformance.profile import Finding
from conformance.storage import verified_flag

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "broken_servers" / "server.py"
SUITE_TIMEOUT_S = 240

# name: (faults planted, one pattern per fault: each must match exactly one root cause)
MULTI_FAULT: dict[str, tuple[str, list[str]]] = {
    "padding-and-md5-crc": ("zero-padded,md5-crc", [r"zero-padded to 1024 bytes", r"md5\(plaintext\)"]),
    "per-request-and-oaep-sha256": (
        "close-after-each,oaep-sha256",
        [r"after every response \(one request per connection\)", r"OAEP SHA-256 instead of SHA-1"],
    ),
    "hang-on-out-of-turn-1104": ("hang-on-1104", [r"stopped answering after 8\.2-out-of-turn .*1104 CRC_OK"]),
    "one-at-a-time-sha256-md5": (
        "one-at-a-time,oaep-sha256,md5-crc",
        [r"second connection is not served", r"OAEP SHA-256 instead of SHA-1", r"md5\(plaintext\)"],
    ),
    "open-after-2107": ("open-after-2107", [r"does not close the connection after 2107"]),
    "verified-as-text": ("verified-text", [r"Verified stored as TEXT"]),
}


def run_suite(target: str, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str, float]:
    """The suite in a subprocess: (exit code, JSON report, output, seconds)."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "conformance",
        "--bp-target",
        target,
        "--bp-report",
        str(report),
    ]
    command += ["-p", "no:cacheprovider", "-q", "--bp-timeout-s", "3", "--bp-fuzz-examples", "30", *args]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    seconds = time.monotonic() - started
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, data, done.stdout + done.stderr, seconds


def start_broken(tmp_path: Path, faults: str) -> ServerProcess:
    return ServerProcess.start(
        tmp_path / "broken-data", command=[sys.executable, str(BROKEN), "--fault", faults]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SLOW = {"open-after-2107"}
"""Full runs over 30 s (every refused request waits for a close): behind --run-slow."""
SELECTION = {"verified-as-text": ["-k", "0-sanity or 11. or 9.2"]}
"""Faults confined to a few cases: only those (and sanity) run."""


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else []) for name in sorted(MULTI_FAULT)],
)
def test_every_planted_fault_is_one_root_cause(name: str, tmp_path: Path) -> None:
    """Each planted fault matches exactly one root cause; there is no other cause; no title twice."""
    faults, patterns = MULTI_FAULT[name]
    server = start_broken(tmp_path, faults)
    storage = (
        ["--bp-data-dir", str(server.data_dir)] if "verified-text" in faults else []
    )  # the only server.db
    try:
        code, report, output, seconds = run_suite(
            str(server.target), tmp_path, *storage, *SELECTION.get(name, [])
        )
    finally:
        server.stop()
    causes = report["cause_details"]
    titles = [f"{cause['title']} {' '.join(cause['cases'])}" for cause in causes]
    print(f"\n{name}: {seconds:.1f} s, {len(causes)} root causes for {len(patterns)} planted faults")
    for title in titles:
        print(f"  {title[:200]}")
    assert len({cause["title"] for cause in causes}) == len(causes), titles
    for pattern in patterns:
        assert len([title for title in titles if re.search(pattern, title)]) == 1, (
            pattern,
            titles,
            output[-3000:],
        )
    assert len(causes) == len(patterns), titles
    rows = {row["id"]: row for row in report["cases"]}
    assert len(rows) == len(report["cases"])  # every case once
    if name == "hang-on-out-of-turn-1104":
        assert "the server stopped answering after this case" in rows["8.2-out-of-turn"]["message"]
        assert rows["0-sanity-last"]["message"].startswith("not run: server down")
    expected_verdict = "CONFORMANT" if name == "verified-as-text" else "NOT CONFORMANT"
    assert report["verdict"] == expected_verdict
    assert code == (0 if name == "verified-as-text" else 1)


def test_hang_with_server_command_restarts_and_continues(tmp_path: Path) -> None:
    """--bp-server-cmd: after the hang the suite restarts the server, reports it, and runs the rest."""
    port = free_port()
    data = tmp_path / "data"
    command = f"{sys.executable} {BROKEN} --fault hang-on-1104 --port {port} --data-dir {data}"
    code, report, output, seconds = run_suite(
        f"127.0.0.1:{port}",
        tmp_path,
        *("--bp-server-cmd", command, "--bp-server-cwd", str(tmp_path)),
        *("-k", "0-sanity or 8.2-out-of-turn or 4.5-crc-ok-acknowledged"),
    )
    print(f"\nhang with --bp-server-cmd: {seconds:.1f} s; restarts {report.get('restarts')}")
    assert [line for line in report["restarts"] if "restarted after 8.2-out-of-turn" in line], output[-3000:]
    rows = {row["id"]: row for row in report["cases"]}
    assert rows["0-sanity-last"]["outcome"] == "passed"
    assert "server restarted after 8.2-out-of-turn" in output
    assert code == 1


@pytest.mark.parametrize(
    ("faults", "exit_code", "says"),
    [
        ("mute", pytest.ExitCode.INTERRUPTED, r"accepts connections but sent no response"),
        ("stop-listening", pytest.ExitCode.INTERRUPTED, r"stops listening after its first connection"),
    ],
)
def test_untestable_server_stops_early(tmp_path: Path, faults: str, exit_code: int, says: str) -> None:
    """A mute server, one that stops listening: one message, pytest's exit code, no verdict."""
    server = start_broken(tmp_path, faults)
    try:
        code, report, output, seconds = run_suite(str(server.target), tmp_path)
    finally:
        server.stop()
    print(f"\n{faults}: stopped after {seconds:.1f} s")
    assert code == exit_code, output[-2000:]
    assert re.search(says, report["stopped"])
    assert report["verdict"] is None
    assert report["cases"] == []
    assert "CONFORMANT" not in output


def test_nothing_listening_is_a_usage_error(tmp_path: Path) -> None:
    port = free_port()
    code, report, output, _ = run_suite(f"127.0.0.1:{port}", tmp_path)
    assert code == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert "connection to 127.0.0.1" in report["stopped"]
    assert "Connection refused" in output
    assert output.count("Connection refused") <= 3  # one message, not one per case


@pytest.mark.parametrize("target", ["localhost", "foo:bar", "127.0.0.1:99999", ""])
def test_bad_target_is_a_usage_error(tmp_path: Path, target: str) -> None:
    code, report, output, _ = run_suite(target, tmp_path)
    assert code == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert "HOST:PORT" in output
    assert report == {}
    assert "CONFORMANT" not in output


def test_no_adapt_lets_the_padding_fail_every_case(tmp_path: Path) -> None:
    """--bp-no-adapt: the padding is met as it is, so later cases fail on it (and nothing is adapted)."""
    server = start_broken(tmp_path, "zero-padded")
    selection = ["-k", "3-no-padding or 4.1-register-duplicate-name or 4.2-public-key-accepted"]
    try:
        _, adapted, _, _ = run_suite(str(server.target), tmp_path, *selection)
        _, raw, output, _ = run_suite(str(server.target), tmp_path, *selection, "--bp-no-adapt")
    finally:
        server.stop()
    adapted_rows = {row["id"]: row["outcome"] for row in adapted["cases"]}
    raw_rows = {row["id"]: row["outcome"] for row in raw["cases"]}
    assert adapted_rows["4.2-public-key-accepted"] == "passed"
    assert raw_rows["4.2-public-key-accepted"] == "failed", output[-2000:]
    assert all(cause["adapted"] == [] for cause in raw["cause_details"])
    padding = [cause for cause in adapted["cause_details"] if cause["key"] == "zero-padding"]
    assert padding and "4.2-public-key-accepted" in padding[0]["adapted"]


def test_reference_server_has_no_finding(reference_server: Any, tmp_path: Path) -> None:
    target = f"{reference_server.host}:{reference_server.port}"
    code, report, output, seconds = run_suite(target, tmp_path, "-k", "0-sanity or 2.1 or 3.3")
    print(f"\nreference server (sanity, sections 2 and 3): {seconds:.1f} s")
    ids = [row["id"] for row in report["cases"]]
    assert len(ids) == len(set(ids)) >= 4
    assert report["findings"] == [] and report["cause_details"] == [], output[-3000:]
    assert report["verdict"] == "CONFORMANT"
    assert code == 0


# -- the pieces, without a server -------------------------------------------------------------


@dataclass
class _Row:
    id: str
    level: str
    section: str
    outcome: str
    message: str


def test_causes_group_by_diagnosis_and_claim_findings() -> None:
    """Two failures with one diagnosis are one cause; a finding claims its own case and repeats."""
    crc = "expected: 2103 cksum 1\nactual:   cksum 7\ndiagnosis: the value equals zlib.crc32 of the plaintext"
    rows = [
        _Row("4.4-a", "MUST", "4.4", "failed", crc),
        _Row("4.5-b", "MUST", "4.5", "failed", crc.replace("7", "9")),
        _Row(
            "15-replay-x",
            "MUST",
            "15",
            "failed",
            "expected: cksum 1\nactual: 2\ndiagnosis: field cksum differs",
        ),
        _Row("3-pad", "MUST", "3", "failed", "actual: 1001 more zero bytes"),
        _Row("2.1-c", "MUST", "2.1", "skipped", "already reported: zero-padding: responses ..."),
        _Row(
            "8.2-d", "MUST", "8.2", "failed", f"{STOPPED_ANSWERING} (8.2-d)\nlast message sent: 1104 CRC_OK"
        ),
        _Row("9.9-e", "MUST", "9", "skipped", "not run: server down (it stopped answering after 8.2-d)"),
        _Row("1.1-f", "MUST", "1", "passed", ""),
    ]
    padding = Finding("zero-padding", "responses zero-padded to 1024 bytes", "MUST", "3", ("3-pad",), "")
    causes = root_causes(rows, {"zero-padding": padding}, {"zero-padding": ["1.1-f"]})
    found = {cause.title: (cause.cases, cause.adapted, cause.not_run) for cause in causes}
    assert found == {
        "responses zero-padded to 1024 bytes": (["3-pad", "2.1-c"], ["1.1-f"], []),
        "the server stopped answering after 8.2-d (its last message: 1104 CRC_OK)": (
            ["8.2-d"],
            [],
            ["9.9-e"],
        ),
        "the value equals zlib.crc32 of the plaintext": (["4.4-a", "4.5-b", "15-replay-x"], [], []),
    }


@pytest.mark.parametrize(
    ("stored", "flag"),
    [
        (1, 1),
        (0, 0),
        ("TRUE", 1),
        ("true", 1),
        ("1", 1),
        ("FALSE", 0),
        (b"\x01", 1),
        (b"\x00", 0),
        ("maybe", None),
    ],
)
def test_verified_is_read_as_real_servers_store_it(stored: object, flag: int | None) -> None:
    assert verified_flag(stored) == flag
