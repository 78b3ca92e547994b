"""The command line: port.info, startup errors as one clear line (never a traceback), signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.server_process import ServerProcess

from reference_server.config import DEFAULT_PORT, port_from_file


def run_server(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a server that is expected to exit by itself (a startup failure)."""
    return subprocess.run(
        [sys.executable, "-m", "reference_server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"4321", 4321), (b"4321\n", 4321), (b" 4321 \r\n", 4321), (b"65535\n\n", 65535), (b"1", 1)],
)
def test_port_info_good(tmp_path: Path, content: bytes, expected: int) -> None:
    (tmp_path / "port.info").write_bytes(content)
    assert port_from_file(tmp_path) == (expected, None)


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"abc", b"0", b"65536", b"-5", b"12 34", b"80\n81\n", b"1e3", b"\xff\xfe", b"123456"],
)
def test_port_info_bad(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "port.info").write_bytes(content)
    port, warning = port_from_file(tmp_path)
    assert port == DEFAULT_PORT == 1234
    assert warning is not None and "port.info" in warning and "1234" in warning and "\n" not in warning


def test_port_info_missing(tmp_path: Path) -> None:
    port, warning = port_from_file(tmp_path)
    assert port == 1234 and warning is not None and "not found" in warning


def test_port_info_is_used_without_port_option(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that is free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "port.info").write_text(f"{port}\n")
    server = ServerProcess.start(tmp_path, port=None)
    try:
        assert server.port == port
        assert "WARNING" not in server.log()
    finally:
        server.stop()


def test_bad_port_info_warns_once_and_falls_back_to_1234(tmp_path: Path) -> None:
    """Without binding the real 1234: the fallback is tried on an address that cannot be bound."""
    (tmp_path / "port.info").write_text("not a port\n")
    result = run_server("--data-dir", str(tmp_path), "--host", "192.0.2.1")  # TEST-NET-1, not ours
    lines = result.stderr.strip().splitlines()
    warnings = [line for line in lines if "WARNING" in line]
    assert len(warnings) == 1 and "port.info" in warnings[0] and "1234" in warnings[0]
    assert result.returncode == 1
    assert any("ERROR" in line and "192.0.2.1:1234" in line for line in lines)
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_server("--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith("Address already in use")
    assert "Traceback" not in result.stderr


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    result = run_server("--port", "0", "--data-dir", str(path))
    assert result.returncode == 1
    assert "is not a folder" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_data_dir_not_writable(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        result = run_server("--port", "0", "--data-dir", str(tmp_path))
    finally:
        tmp_path.chmod(0o700)
    assert result.returncode == 1
    assert "not writable" in result.stderr and "Traceback" not in result.stderr


def test_database_is_not_sqlite(tmp_path: Path) -> None:
    (tmp_path / "server.db").write_bytes(b"this is not a database" * 100)
    result = run_server("--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "server.db" in result.stderr and "Traceback" not in result.stderr


def test_default_data_dir_is_the_current_folder(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reference_server", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"listening on 127.0.0.1:")
        assert (tmp_path / "server.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        process.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_cleanly(tmp_path: Path, signum: int) -> None:
    server = ServerProcess.start(tmp_path / "data")
    server.process.send_signal(signum)
    assert server.process.wait(10) == 0
    assert "stopped" in server.log() and "Traceback" not in server.log()
    server.stop()


@pytest.mark.parametrize(
    "option", ["--max-connections=0", "--idle-timeout=-1", "--port=70000", "--max-file-size=8"]
)
def test_bad_options_are_usage_errors(option: str) -> None:
    result = run_server(option)
    assert result.returncode == 2 and "Traceback" not in result.stderr
