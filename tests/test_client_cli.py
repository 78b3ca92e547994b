"""`backup-client` / `python -m reference_client`: exit codes, one-line errors, retries as users see them."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_servers import (
    CorruptCrcServer,
    DenyReconnectServer,
    ErrorServer,
    FakeClient,
    FakeServer,
    SilentServer,
)

from backupproto.crypto import generate_private_key
from backupproto.dialect import DIALECT_2024C
from reference_client.cli import EXIT_CONFIG, EXIT_FATAL, EXIT_FILE_FAILED, EXIT_OK, main
from reference_client.config import Identity, private_key_base64, write_identity

ID_HEX = "0123456789abcdef0123456789abcdef"
KEY_B64 = private_key_base64(generate_private_key())


def run(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(
        ["--dir", str(folder), "--retry-delay", "0", "--connect-timeout", "2", "--timeout", "5", *args]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def setup_folder(folder: Path, server: str, name: str = "alice", files: tuple[str, ...] = ("a.txt",)) -> None:
    (folder / "a.txt").write_bytes(b"hello\n")
    (folder / "transfer.info").write_text(f"{server}\n{name}\n" + "".join(f"{f}\n" for f in files))


def address(pair: tuple[str, int]) -> str:
    return f"{pair[0]}:{pair[1]}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_documents_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reference_client", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for code, words in [(0, "every file"), (1, "some file failed"), (2, "configuration error"), (3, "fatal")]:
        assert any(line.strip().startswith(f"{code} ") and words in line for line in done.stdout.splitlines())
    assert "transfer.info" in done.stdout and "me.info" in done.stdout


DEFERRED_AT_START_UP = (
    "rich",  # only when a progress line is drawn
    "Crypto.Cipher.AES",  # the client encrypts on OpenSSL
    "Crypto.Cipher.PKCS1_OAEP",  # and unwraps there
    "cryptography.hazmat.primitives.serialization",  # the server's public key import
)


def test_start_up_leaves_out_what_a_backup_does_not_use() -> None:
    check = (
        f"import sys, reference_client.cli; print([m for m in {DEFERRED_AT_START_UP} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "[]\n"


def test_success_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer() as server:
        setup_folder(tmp_path, address(server.address))
        code, out, err = run(tmp_path, capsys)
    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines()[-2:] == [
        "a.txt: verified (6 bytes, CRC 3015617425, 1 send)",
        "1 of 1 file(s) verified",
    ]


def bad_setup(folder: Path, case: str) -> tuple[str, int | None]:
    """Prepare one broken configuration; return (file at fault, line)."""
    (folder / "a.txt").write_bytes(b"x")
    good = "127.0.0.1:1\nalice\na.txt\n"
    transfer = folder / "transfer.info"
    me_info = folder / "me.info"
    if case == "missing transfer.info":
        return str(transfer), None
    texts = {
        "bad host:port": "127.0.0.1:port\nalice\na.txt\n",
        "bad port": "127.0.0.1:99999\nalice\na.txt\n",
        "empty name": "127.0.0.1:1\n\na.txt\n",
        "name over 100": "127.0.0.1:1\n" + "x" * 101 + "\na.txt\n",
        "missing file": "127.0.0.1:1\nalice\na.txt\nmissing.txt\n",
    }
    if case in texts:
        transfer.write_text(texts[case])
        line = {"bad host:port": 1, "bad port": 1, "empty name": 2, "name over 100": 2, "missing file": 4}[
            case
        ]
        return str(transfer), line
    transfer.write_text(good)
    if case == "bad me.info uuid":
        me_info.write_text(f"alice\n{ID_HEX[:30]}zz\n{KEY_B64}\n")
        return str(me_info), 2
    if case == "bad base64 key":
        me_info.write_text(f"alice\n{ID_HEX}\n{KEY_B64[:10]}%{KEY_B64[11:]}\n")
        return str(me_info), 3
    raise AssertionError(case)


CASES = ["missing transfer.info", "bad host:port", "bad port", "empty name", "name over 100", "missing file",
         "bad me.info uuid", "bad base64 key"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_config_errors_are_one_line_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    path, line = bad_setup(tmp_path, case)
    code, out, err = run(tmp_path, capsys)
    assert code == EXIT_CONFIG
    assert out == ""
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert err.startswith(f"Fatal: {where}")
    assert err.count("\n") == 1


def test_unreachable_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    setup_folder(tmp_path, f"127.0.0.1:{port}")
    code, _, err = run(tmp_path, capsys)
    assert code == EXIT_FATAL
    lines = err.splitlines()
    assert sum(line.startswith("server responded with an error: cannot connect") for line in lines) == 4
    assert lines[-1].startswith(f"Fatal: cannot connect to 127.0.0.1:{port}")


def test_connect_timeout_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a listener with a full backlog never completes the handshake of the next connection
    real_create_connection = socket.create_connection
    timeouts: list[float | None] = []

    def recording_create_connection(address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        timeouts.append(timeout)
        return real_create_connection(address, timeout=timeout)

    monkeypatch.setattr(socket, "create_connection", recording_create_connection)
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        setup_folder(tmp_path, address(listener.getsockname()))
        code = main(
            ["--dir", str(tmp_path), "--retry-delay", "0", "--retries", "0", "--connect-timeout", "0.3"]
        )
        for filler in fillers:
            filler.close()
    err = capsys.readouterr().err
    if "refused" in err or "reset" in err:  # some kernels refuse instead of dropping
        pytest.skip("the kernel refused instead of leaving the connection pending")
    assert code == EXIT_FATAL
    assert timeouts == [0.3]  # one attempt, bounded by --connect-timeout (not the 10 s default)
    assert "no answer within 0.3 s (connect timeout)" in err


def test_error_responses_print_the_line_and_end_fatal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ErrorServer() as server:
        setup_folder(tmp_path, address(server.address))
        code, _, err = run(tmp_path, capsys)
        assert server.connections == 4
    assert code == EXIT_FATAL
    lines = err.splitlines()
    assert sum(line.startswith("server responded with an error") for line in lines) == 4
    assert lines[-1].startswith("Fatal: the server answered with an error (2107) on all 4 attempts")


def test_silent_server_is_fatal_after_one_response_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spec 2.4/8.4: a server that takes the request and never answers is not asked again: one
    connection, the error line, one Fatal line naming the timeout, exit 3."""
    with SilentServer() as server:
        setup_folder(tmp_path, address(server.address))
        code, _, err = run(tmp_path, capsys, "--timeout", "0.3")
        assert server.connections == 1
    assert code == EXIT_FATAL
    assert "server responded with an error: no response from" in err and "retrying" not in err
    fatal = [line for line in err.splitlines() if line.startswith("Fatal:")]
    assert len(fatal) == 1 and "within 0.3 s (response timeout)" in fatal[0]
    assert "a response timeout is not retried (spec 8.4)" in fatal[0] and "--timeout (now 0.3 s)" in fatal[0]


def test_crc_failure_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with CorruptCrcServer() as server:
        setup_folder(tmp_path, address(server.address))
        code, out, err = run(tmp_path, capsys)
    assert code == EXIT_FILE_FAILED
    assert "a.txt: FAILED (crc_mismatch)" in err
    assert out.splitlines()[-1] == "0 of 1 file(s) verified"


def test_reconnect_denied_registers_anew(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with DenyReconnectServer() as server:
        setup_folder(tmp_path, address(server.address))
        write_identity(tmp_path, Identity("alice", bytes.fromhex(ID_HEX), generate_private_key()))
        code, out, err = run(tmp_path, capsys)
    assert code == EXIT_OK
    assert "2106" in err and "registered as 'alice'" in out
    assert (tmp_path / "me.info").read_text().splitlines()[1] != ID_HEX


def test_name_taken_is_fatal_and_points_at_transfer_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer() as server:
        server.clients[bytes(16)] = FakeClient("alice")
        setup_folder(tmp_path, address(server.address))
        code, _, err = run(tmp_path, capsys)
    assert code == EXIT_FATAL
    assert err.splitlines()[-1].startswith("Fatal: the name 'alice' is already registered")
    assert "line 2 of transfer.info" in err


def test_options_override_transfer_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.txt"
    other.write_bytes(b"other")
    with FakeServer() as server:
        setup_folder(tmp_path, "127.0.0.1:1", name="ignored")
        code, out, _ = run(tmp_path, capsys, "--server", address(server.address), "--name", "bob", str(other))
        assert [client.name for client in server.clients.values()] == ["bob"]
    assert code == EXIT_OK
    assert "other.txt: verified" in out and "a.txt" not in out


@pytest.mark.parametrize("args", [["--retries", "-1"], ["--timeout", "soon"], ["--connect-timeout", "-2"]])
def test_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    setup_folder(tmp_path, "127.0.0.1:1")
    try:
        code = main(["--dir", str(tmp_path), *args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    assert code == EXIT_CONFIG


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(3 << 20))
    with FakeServer() as server:
        setup_folder(tmp_path, address(server.address), files=("big.bin",))
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "reference_client", "--dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        os.close(master)
        assert process.wait(timeout=30) == 0
        out = process.stdout.read().decode() if process.stdout else ""
    assert b"big.bin " in seen and b"100%" in seen and b"MiB/s" in seen and b"ETA" in seen
    assert "sending big.bin" not in out  # log lines only when not on a terminal
    assert "big.bin: verified" in out
    assert "sent big.bin: 3.0 MiB in " in out  # the final time and throughput line stays


def test_help_lists_the_dialects_with_their_ports() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reference_client", "--help"], capture_output=True, text=True
    )
    lines = done.stdout.splitlines()
    for name, port, bits in [("2022C", 1234, 128), ("2023A (default)", 1234, 128), ("2023C", 1357, 128),
                             ("2024A", 1256, 256), ("2024C", 1256, 256)]:  # fmt: skip
        assert any(line.strip().startswith(f"{name}: port {port}, AES-{bits}") for line in lines), name
    assert "--dialect NAME" in done.stdout


def test_dialect_option_speaks_that_dialect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer(dialect=DIALECT_2024C) as server:
        setup_folder(tmp_path, address(server.address))
        code, _, err = run(tmp_path, capsys, "--dialect", "2024c")  # names are case-insensitive
        assert server.codes() == [1100, 1101, 1103, 1104]  # roles; the fake accepts 2024C's wire codes only
    assert code == EXIT_OK, err


def test_unknown_dialect_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--dir", str(tmp_path), "--dialect", "2025Z"])
    assert caught.value.code == 2
    assert "unknown dialect '2025Z'; known: 2022C, 2023A, 2023C, 2024A, 2024C" in capsys.readouterr().err


def test_a_host_alone_connects_to_the_dialects_default_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[tuple[str, int]] = []

    def refusing_create_connection(address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        tried.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refusing_create_connection)
    setup_folder(tmp_path, "127.0.0.1")
    code, _, _ = run(tmp_path, capsys, "--dialect", "2023C", "--retries", "0")
    assert code == EXIT_FATAL
    assert tried == [("127.0.0.1", 1357)]
