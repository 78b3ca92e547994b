"""The suite in every dialect (issue 13): `--bp-dialect auto` detects the server's dialect and says
it in one line; a server told another dialect, or mixing two, is one clear finding.

The servers are the self-test's broken server (`tests/broken_servers/server.py --dialect NAME`),
clean or with a planted fault. A few cases run per dialect in the default run.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_servers import FakeServer, ResetFirstServer

import conformance.profile
from backupproto.dialect import DIALECT_2023A, DIALECTS
from backupproto.io.server_process import ServerProcess
from conformance.dialect_probe import detect_server_dialect
from conformance.profile import Profile

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "broken_servers" / "server.py"
SUITE_TIMEOUT_S = 240
KEYED_CASES = "0-sanity or 4.2-public-key-accepted"


def start_broken(tmp_path: Path, dialect: str, faults: str = "none") -> ServerProcess:
    command = [sys.executable, str(BROKEN), "--dialect", dialect, "--fault", faults]
    return ServerProcess.start(tmp_path / f"broken-{dialect}", command=command)


def run_suite(tmp_path: Path, dialect: str, faults: str, *args: str) -> tuple[int, str, float]:
    """The suite in a subprocess against the broken server in `dialect` with `faults`:
    (exit code, output, seconds)."""
    server = start_broken(tmp_path, dialect, faults)
    command = [sys.executable, "-m", "pytest", "conformance", "--bp-target", str(server.target)]
    command += ["-p", "no:cacheprovider", "-q", "--bp-timeout-s", "3", *args]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    finally:
        server.stop()
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.parametrize("name", list(DIALECTS))
def test_auto_detects_the_servers_dialect(name: str, tmp_path: Path) -> None:
    """`--bp-dialect auto` names the dialect the server was started in, and a keyed session passes."""
    code, output, seconds = run_suite(tmp_path, name, "none", "--bp-dialect", "auto", "-k", KEYED_CASES)
    print(f"\n{name}: {seconds:.1f} s")
    register = {"2022C": 1100, "2023A": 1100, "2023C": 1025, "2024A": 1025, "2024C": 825}[name]
    assert f"dialect: the server speaks {name}: register is {register}," in output, output[-2000:]
    assert "\nCONFORMANT" in output, output[-3000:]
    assert code == 0


def test_a_server_told_another_dialect_is_one_finding(tmp_path: Path) -> None:
    """The 2023A server run with --bp-dialect 2024C: one line naming both, no cases run."""
    code, output, _ = run_suite(tmp_path, "2023A", "none", "--bp-dialect", "2024C")
    assert "the server answers 2023A, not 2024C" in output, output[-2000:]
    assert "No cases were run" in output
    assert " failed" not in output.splitlines()[-1]
    assert code == pytest.ExitCode.TESTS_FAILED


def test_an_unknown_dialect_is_a_usage_error(tmp_path: Path) -> None:
    code, output, _ = run_suite(tmp_path, "2023A", "none", "--bp-dialect", "2025Z")
    assert code == pytest.ExitCode.USAGE_ERROR
    assert "--bp-dialect: unknown dialect '2025Z'; known: 2022C, 2023A, 2023C, 2024A, 2024C or auto" in output


@pytest.mark.parametrize("name", ["2024A", "2024C"])
def test_aes_128_in_2024_is_named(name: str, tmp_path: Path) -> None:
    """A 2024 server wrapping a 16-byte key: the key exchange fails naming aes-128-in-2024."""
    code, output, _ = run_suite(tmp_path, name, "aes-128", "-k", KEYED_CASES)
    assert "reading aes-128-in-2024" in output, output[-3000:]
    assert code == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("name", ["2024A", "2024C"])
def test_total_first_is_named(name: str, tmp_path: Path) -> None:
    """A 2024 server reading total_packets before packet_number: the multi-packet case names total-first."""
    code, output, _ = run_suite(tmp_path, name, "total-first", "-k", "0-sanity or 18.2-packets-several")
    assert "it follows the total-first reading" in output, output[-3000:]
    assert code == pytest.ExitCode.TESTS_FAILED


def test_reconnect_in_2022c_is_named(tmp_path: Path) -> None:
    """A 2022C server answering 1102 (not a 2022C code), run as 2022C: one finding naming the reading."""
    code, output, _ = run_suite(tmp_path, "2022C", "reconnect-in-2022C", "--bp-dialect", "2022C")
    assert "reading reconnect-in-2022C" in output, output[-2000:]
    assert "No cases were run" in output
    assert code == pytest.ExitCode.TESTS_FAILED


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DIALECTS))
def test_whole_suite_conformant_in_each_dialect(name: str, tmp_path: Path) -> None:
    """Every case of the dialect, once, against the clean broken server started in it: CONFORMANT."""
    code, output, seconds = run_suite(
        tmp_path, name, "none", "--bp-dialect", "auto", "--bp-fuzz-examples", "30"
    )
    print(f"\n{name}: whole suite {seconds:.1f} s; {output.strip().splitlines()[-1]}")
    assert f"dialect: the server speaks {name}:" in output
    assert "\nCONFORMANT" in output, output[-3000:]
    assert code == 0


def test_a_connection_reset_unanswered_is_tried_again_before_it_counts() -> None:
    """A server that re-binds its listening socket per connection resets a connection that waited
    in the old one, unread (seen under load with the broken server's one-at-a-time fault: 5 of
    12 profiles said the server answers no dialect). The probe sends that request again on a
    new connection; only a close that repeats is the server's answer."""
    with ResetFirstServer() as server:
        detected = detect_server_dialect(server.address, 5.0)
        assert server.connections >= 3  # the reset one, its retry, the 1102
    assert detected.dialect == DIALECT_2023A, detected.evidence
    assert detected.evidence[0].startswith("1100 REGISTER: 2100"), detected.evidence


def test_a_second_connection_reset_as_it_opens_was_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that closes its listening socket while it serves resets a second connection that
    reached the socket just before: under load the reset can come back from connect() itself.
    That is the server not serving a second connection, not an inconclusive probe (which left
    every later case to fail on refused connects)."""
    real = socket.create_connection
    calls: list[int] = []

    def second_reset(*args: Any, **kwargs: Any) -> socket.socket:
        calls.append(1)
        if len(calls) == 2:  # the first is the idle connection, the third the one after it
            raise ConnectionResetError(104, "Connection reset by peer")
        return real(*args, **kwargs)

    profile = Profile(("127.0.0.1", 0))
    with FakeServer() as server:
        profile.target = server.address
        monkeypatch.setattr(conformance.profile.socket, "create_connection", second_reset)
        conformance.profile._second_connection(profile, 5.0)
    assert profile.one_connection_at_a_time
    assert "refused while the first was open (" in profile.findings["one-connection-at-a-time"].evidence
