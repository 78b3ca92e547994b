"""The reference server refuses what it must (2107, then close) and keeps serving everyone else.

Malformed requests are built with backupproto.schemas' build helpers (any header values,
raw name-field bytes); the expected 2107 bytes are written by hand.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from helpers.client import TestClient, raw_exchange, read_until_closed
from helpers.db import file_rows
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess

from backupproto.dialect import RequestCode
from backupproto.events import FileChunk, FileReceived, SendFile, ServerError
from backupproto.schemas import V3_SCHEMAS

SERVER_ERROR = b"\x03" + (2107).to_bytes(2, "little") + b"\x00\x00\x00\x00"
"""2107 as bytes: version 3, code 2107 (0x083b) little-endian, payload_size 0."""
assert bytes.fromhex("033b0800000000") == SERVER_ERROR

S = V3_SCHEMAS


def header(code: int, payload_size: int, client_id: bytes = bytes(16), version: int = 3) -> bytes:
    return S.build_request_header(client_id, code, payload_size, version)


def name_field(raw: bytes) -> bytes:
    return raw.ljust(255, b"\x00")


def file_request(client_id: bytes, raw_name: bytes, content: bytes) -> bytes:
    prefix = bytes(
        S.send_file_prefix.build({"content_size": len(content), "file_name": name_field(raw_name)})
    )
    return header(RequestCode.SEND_FILE, len(prefix) + len(content), client_id) + prefix + content


def tree(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


MALFORMED = {
    "unknown code": header(1199, 255) + bytes(255),
    "bad version": header(RequestCode.REGISTER, 255, version=2) + name_field(b"v2"),
    "payload_size too small": header(RequestCode.REGISTER, 254) + name_field(b"x")[:254],
    "payload_size huge": header(RequestCode.REGISTER, 0xFFFFFFFF),
    "name without NUL": header(RequestCode.REGISTER, 255) + b"A" * 255,
    "non-zero padding": header(RequestCode.REGISTER, 255) + b"ab\x00c".ljust(255, b"\x00"),
    "empty name": header(RequestCode.REGISTER, 255) + bytes(255),
    "control char in name": header(RequestCode.REGISTER, 255) + name_field(b"a\x07b"),
    "garbage": bytes(range(40, 40 + 23)) + b"\xff" * 100,
    "out of turn 1104": header(RequestCode.CRC_OK, 255) + name_field(b"f"),
    "1103 before any key": file_request(bytes(16), b"f", bytes(16)),
    "bad content_size": header(RequestCode.SEND_FILE, 259 + 15) + b"\x0f\x00\x00\x00" + name_field(b"f"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_2107_while_others_keep_working(
    shared_reference_server: ServerProcess, case: str
) -> None:
    server = shared_reference_server
    with TestClient(server.address) as good:
        good.new_client(f"bystander {case}", rsa_key())
        assert raw_exchange(server.address, MALFORMED[case]) == SERVER_ERROR
        good.backup("still.txt", b"served")


@pytest.mark.parametrize("data", [b"", b"\x01" * 10, header(RequestCode.REGISTER, 255) + b"abc"])
def test_truncated_request_is_closed(shared_reference_server: ServerProcess, data: bytes) -> None:
    """The peer closes inside a message: nothing usable; the server MAY answer 2107 (spec 2.3)."""
    assert raw_exchange(shared_reference_server.address, data) in (b"", SERVER_ERROR)
    with TestClient(shared_reference_server.address) as client:
        client.new_client(f"after truncation {len(data)}", rsa_key())


HOSTILE_FILE_NAMES = [
    b"../escape",
    b"..",
    b".",
    b"/etc/passwd",
    b"sub/dir",
    b"..\\win",
    b"C:x",
    b"a:stream",
    b" leading",
    b"trailing ",
    b"tab\there",
    b"nul\x00inside",
    b"\xc3\xa9t\xc3\xa9",
    b"x" * 255,
]


@pytest.mark.parametrize("raw", HOSTILE_FILE_NAMES, ids=repr)
def test_hostile_file_names_are_refused_and_write_nothing(
    reference_server: ServerProcess, raw: bytes
) -> None:
    root = reference_server.data_dir.parent
    with TestClient(reference_server.address) as client:
        client_id = client.new_client("mallory", rsa_key())
        before = tree(root)
        field = raw[:255] if len(raw) >= 255 else name_field(raw)
        prefix = bytes(S.send_file_prefix.build({"content_size": 16, "file_name": field}))
        client.sock.sendall(header(RequestCode.SEND_FILE, 259 + 16, client_id) + prefix + bytes(16))
        assert read_until_closed(client.sock) == SERVER_ERROR
    after = {path for path in tree(root) if not path.name.endswith(".log")}
    assert after == {path for path in before if not path.name.endswith(".log")}
    assert file_rows(reference_server.data_dir, client_id) == {}


def test_bad_padding_stores_nothing_and_keeps_the_old_version(reference_server: ServerProcess) -> None:
    with TestClient(reference_server.address) as client:
        client_id = client.new_client("padding", rsa_key())
        client.backup("keep.txt", b"old version")
        assert client.aes_key is not None
        bad = AES.new(client.aes_key, AES.MODE_CBC, iv=bytes(16)).encrypt(b"no padding here\x00")
        client.send(SendFile(client_id, 16, "keep.txt"))
        client.send(FileChunk(bad))
        client.sock.sendall(b"")
        assert read_until_closed(client.sock) == SERVER_ERROR
    path_name, verified = file_rows(reference_server.data_dir, client_id)["keep.txt"]
    assert verified == 1
    assert (reference_server.data_dir / path_name).read_bytes() == b"old version"
    assert list((reference_server.data_dir / ".tmp").iterdir()) == []


def test_client_closing_mid_file_leaves_no_partial_file(reference_server: ServerProcess) -> None:
    with TestClient(reference_server.address) as client:
        client_id = client.new_client("quitter", rsa_key())
        client.backup("doc", b"version 1")
        client.send(SendFile(client_id, 1 << 20, "doc"))
        client.send(FileChunk(bytes(4096)))
        client.send(FileChunk(bytes(4096)))
    deadline = time.monotonic() + 10
    while "aborted" not in reference_server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "aborted" in reference_server.log()
    path_name, verified = file_rows(reference_server.data_dir, client_id)["doc"]
    assert (reference_server.data_dir / path_name).read_bytes() == b"version 1"
    assert verified == 1
    assert list((reference_server.data_dir / ".tmp").iterdir()) == []


def test_verdict_for_another_file_is_refused(shared_reference_server: ServerProcess) -> None:
    with TestClient(shared_reference_server.address) as client:
        client_id = client.new_client("verdicts", rsa_key())
        assert isinstance(client.send_file("one", b"1"), FileReceived)
        client.sock.sendall(header(RequestCode.CRC_OK, 255, client_id) + name_field(b"two"))
        assert read_until_closed(client.sock) == SERVER_ERROR
        assert file_rows(shared_reference_server.data_dir, client_id)["one"][1] == 0


def test_another_client_id_on_a_keyed_connection_is_refused(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as other:
        other_id = other.new_client("victim", rsa_key())
    with TestClient(server.address) as client:
        client.new_client("impostor", rsa_key())
        client.sock.sendall(file_request(other_id, b"planted", bytes(16)))
        assert read_until_closed(client.sock) == SERVER_ERROR
    assert file_rows(server.data_dir, other_id) == {}


def test_max_file_size(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--max-file-size", "32")
    try:
        with TestClient(server.address) as client:
            client.new_client("limited", rsa_key())
            client.backup("small", b"x" * 31)
            client.send(SendFile(client.client_id, 48, "large"))
            assert read_until_closed(client.sock) == SERVER_ERROR
    finally:
        server.stop()


def test_max_connections_refuses_when_none_is_idle(tmp_path: Path) -> None:
    """At the limit with every connection mid-message: new ones are closed at once, counted, not
    logged one line each."""
    server = ServerProcess.start(tmp_path / "data", "--max-connections", "2")
    busy = [socket.create_connection(server.address, timeout=10) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(header(RequestCode.REGISTER, 255)[:5])  # a message has begun
        for _ in range(21):
            with socket.create_connection(server.address, timeout=10) as extra:
                assert read_until_closed(extra, timeout=10) == b""  # closed at once, nothing read
    finally:
        for sock in busy:
            sock.close()
        assert server.stop() == 0
    log = server.log()
    counted = sum(int(count) for count in re.findall(r"(\d+) refused at the connection limit", log))
    assert counted == 21
    assert log.count("refused") <= 3  # summary lines, not one per connection


def test_idle_and_stall_timeouts(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--idle-timeout", "0.5", "--read-timeout", "0.5")
    try:
        with socket.create_connection(server.address, timeout=10) as idle:
            # idle: closed without a response, within the read's own bound; the log below says
            # it was the idle timer ("idle for 0.5 s"), not an immediate refusal
            assert read_until_closed(idle) == b""
        with TestClient(server.address) as client:
            client.new_client("staller", rsa_key())
            time.sleep(0.2)  # below the idle timeout: the connection is still usable
            client.backup("f", b"data")
            client.sock.sendall(header(RequestCode.SEND_FILE, 259 + 32, client.client_id)[:10])
            assert read_until_closed(client.sock) == SERVER_ERROR  # stalled mid-message
        log = server.log()
        assert "idle for 0.5 s" in log and "stalled" in log
    finally:
        server.stop()


def test_shutdown_aborts_transfers_and_exits_0(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data")
    client = TestClient(server.address)
    try:
        client_id = client.new_client("interrupted", rsa_key())
        client.send(SendFile(client_id, 1 << 20, "half"))
        client.send(FileChunk(bytes(1 << 19)))
        deadline = time.monotonic() + 10
        while not list((server.data_dir / ".tmp").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.stop() == 0
        assert list((server.data_dir / ".tmp").iterdir()) == []
        assert file_rows(server.data_dir, client_id) == {}
        assert "closed by server shutdown" in server.log()
    finally:
        client.close()


def test_server_error_event_matches_bytes() -> None:
    """The hand-written 2107 above is what the engine builds (sanity of the test itself)."""
    from backupproto.engine import ServerConnection

    assert ServerConnection().send(ServerError()) == SERVER_ERROR
    assert os.path.sep  # keep imports used on all platforms
