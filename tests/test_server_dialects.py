"""The reference server in every dialect over real TCP (spec/dialects.md sections 17-18).

The client side is `helpers.client.TestClient`: backupproto's ClientConnection of the dialect
over backupproto.io.channel (not the reference client). Expected error answers are written
by hand from the spec's code tables.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.client import TestClient, raw_exchange, read_until_closed
from helpers.db import client_row, file_rows
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess
from test_server_cli import run_server

from backupproto import events
from backupproto.cksum import Cksum
from backupproto.client_files import parse_me_info
from backupproto.crypto import CbcEncryptor, public_key_der
from backupproto.dialect import DIALECTS, Dialect, RequestCode, dialect_named
from backupproto.errors import ErrorKind, RemoteProtocolError
from backupproto.frames import request_frame
from backupproto.schemas import schemas_for

SERVER_ERROR_2107 = bytes.fromhex("03 3b08 00000000")
"""version 3, code 2107 (0x083b little-endian), payload_size 0."""
SERVER_ERROR_1607 = bytes.fromhex("03 4706 00000000")
"""version 3, code 1607 (0x0647 little-endian), payload_size 0."""
SIZES = [0, 15, 16, 17, 1 << 20]


@pytest.fixture(scope="module", params=list(DIALECTS))
def dialect_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One reference server per dialect for the module (tests use fresh client names)."""
    data_dir = tmp_path_factory.mktemp(f"server-{request.param}") / "data"
    server = ServerProcess.start(data_dir, "--dialect", request.param)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def packet_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh 2024A server (packet cases check that nothing was stored)."""
    server = ServerProcess.start(tmp_path / "data", "--dialect", "2024A")
    try:
        yield server
    finally:
        server.stop()


def dialect_of(server: ServerProcess) -> Dialect:
    return dialect_named(server.extra[server.extra.index("--dialect") + 1])


def content(size: int) -> bytes:
    return bytes((index * 13 + size) % 251 for index in range(size))


def stored(server: ServerProcess, client_id: bytes, dialect: Dialect) -> dict[str, tuple[str, int]]:
    return file_rows(server.data_dir, client_id, dialect.database_name)


def keyed_client(server: ServerProcess, name: str) -> TestClient:
    client = TestClient(server.address, dialect=dialect_of(server))
    client.new_client(name, rsa_key())
    return client


# -- every dialect: files, keys, database, reconnect ------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_backup_and_verify_every_size(dialect_server: ServerProcess, size: int) -> None:
    dialect = dialect_of(dialect_server)
    with keyed_client(dialect_server, f"sizes-{size}") as client:
        received = client.backup("file.bin", content(size))
        assert received.content_size == (size // 16 + 1) * 16
        path_name, verified = stored(dialect_server, client.client_id, dialect)["file.bin"]
        assert verified == 1
        assert (dialect_server.data_dir / path_name).read_bytes() == content(size)


def test_key_size_and_database_follow_the_dialect(dialect_server: ServerProcess) -> None:
    dialect = dialect_of(dialect_server)
    with keyed_client(dialect_server, "keys") as client:
        assert client.aes_key is not None and len(client.aes_key) == dialect.aes_key_size
        row = client_row(dialect_server.data_dir, client.client_id, dialect.database_name)
        assert row is not None and row[3] == client.aes_key
    names = {d.database_name for d in DIALECTS.values()}
    assert [name for name in names if (dialect_server.data_dir / name).exists()] == [dialect.database_name]
    assert f"dialect {dialect.name}" in dialect_server.log()


def test_reconnect_where_the_dialect_has_it(dialect_server: ServerProcess) -> None:
    dialect = dialect_of(dialect_server)
    if not dialect.has_reconnect:
        pytest.skip(f"{dialect.name} has no reconnect (see the 2022C tests)")
    with keyed_client(dialect_server, "comes-back") as first:
        client_id, first_key = first.client_id, first.aes_key
    with TestClient(dialect_server.address, dialect=dialect) as again:
        again.client_id = client_id
        assert isinstance(again.reconnect("comes-back", rsa_key()), events.ReconnectApproved)
        assert again.aes_key is not None and again.aes_key != first_key
        assert len(again.aes_key) == dialect.aes_key_size
        again.backup("after-reconnect.txt", b"hello again\n")
    assert stored(dialect_server, client_id, dialect)["after-reconnect.txt"][1] == 1


@pytest.mark.slow
def test_64_mib_file(dialect_server: ServerProcess, tmp_path: Path) -> None:
    dialect = dialect_of(dialect_server)
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for index in range(64):
            out.write(bytes([index]) * (1 << 20))
    with keyed_client(dialect_server, "big") as client:
        received = client.send_file("big.bin", source)
        assert isinstance(received, events.FileReceived)
        assert received.content_size == 64 * (1 << 20) + 16
        assert received.cksum == Cksum(source.read_bytes()).value
    path_name, _ = stored(dialect_server, client.client_id, dialect)["big.bin"]
    assert (dialect_server.data_dir / path_name).stat().st_size == 64 * (1 << 20)


# -- 2022C: a returning client re-sends 1101; the server closes instead of 2107 -----------------


@pytest.fixture(scope="module")
def server_2022c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess.start(tmp_path_factory.mktemp("server-2022C") / "data", "--dialect", "2022C")
    try:
        yield server
    finally:
        server.stop()


def returning(server: ServerProcess, client_id: bytes) -> TestClient:
    """A 2022C client that holds `me.info`: a fresh connection under its saved id."""
    client = TestClient(server.address, dialect=dialect_named("2022C"))
    client.client_id = client_id
    return client


def test_2022c_returning_client_gets_a_fresh_key(server_2022c: ServerProcess) -> None:
    with keyed_client(server_2022c, "returns") as first:
        client_id, first_key = first.client_id, first.aes_key
        first.backup("one.txt", b"first run\n")
    with returning(server_2022c, client_id) as again:
        answer = again.send_public_key("returns", rsa_key())
        assert isinstance(answer, events.AesKey) and answer.client_id == client_id
        assert again.aes_key is not None and again.aes_key != first_key
        again.backup("two.txt", b"second run\n")
    files = stored(server_2022c, client_id, dialect_named("2022C"))
    assert {name: verified for name, (_, verified) in files.items()} == {"one.txt": 1, "two.txt": 1}
    row = client_row(server_2022c.data_dir, client_id)
    assert (
        row is not None and row[1] == public_key_der(rsa_key()).ljust(160, b"\0") and row[3] == again.aes_key
    )


@pytest.mark.parametrize("case", ["unknown id", "other name", "other key"])
def test_2022c_returning_client_refused_by_a_close(server_2022c: ServerProcess, case: str) -> None:
    registered = f"refused-{case.replace(' ', '-')}"
    with keyed_client(server_2022c, registered) as first:
        client_id = first.client_id
    asked_id = bytes(16) if case == "unknown id" else client_id
    name = "someone-else" if case == "other name" else registered
    key_index = 1 if case == "other key" else 0
    with returning(server_2022c, asked_id) as again, pytest.raises(RemoteProtocolError) as closed:
        again.send_public_key(name, rsa_key(key_index))
    # A 2107 would be unknown_code to this 2022C engine: connection_closed proves no bytes came.
    assert closed.value.kind is ErrorKind.CONNECTION_CLOSED
    row = client_row(server_2022c.data_dir, client_id)
    assert row is not None and row[1] == public_key_der(rsa_key()).ljust(160, b"\0")
    assert "close (2022C has no SERVER_ERROR)" in server_2022c.log()


def test_2022c_failure_is_an_orderly_close_without_bytes(server_2022c: ServerProcess) -> None:
    reconnect_2023a = request_frame(
        RequestCode.RECONNECT, bytes(16), {"name": "x"}, schemas=schemas_for(DIALECTS["2023A"])
    )
    assert raw_exchange(server_2022c.address, bytes(reconnect_2023a)) == b""
    assert "likely speaks 2023A" in server_2022c.log()


# -- 2024: packets ---------------------------------------------------------------------------------


def send_ciphertext(client: TestClient, file_name: str, ciphertext: bytes, orig_file_size: int) -> None:
    client.send(events.SendFile(client.client_id, len(ciphertext), file_name, orig_file_size))
    client.send(events.FileChunk(ciphertext))
    client.send(events.FileEnd())


def assert_nothing_new_stored(
    server: ServerProcess, client_id: bytes, before: dict[str, tuple[str, int]]
) -> None:
    assert stored(server, client_id, dialect_of(server)) == before
    assert list((server.data_dir / ".tmp").iterdir()) == []


def test_2024_bad_padding_after_the_last_packet(packet_server: ServerProcess) -> None:
    with keyed_client(packet_server, "padding") as client:
        client.backup("kept.txt", b"verified before\n")
        before = stored(packet_server, client.client_id, DIALECTS["2024A"])
        assert client.aes_key is not None
        block = b"fifteen bytes..\x00"  # a last byte 0 is never valid PKCS#7 padding
        send_ciphertext(client, "kept.txt", CbcEncryptor(client.aes_key).update(block), 15)
        assert isinstance(client.receive(), events.ServerError)
    assert_nothing_new_stored(packet_server, client.client_id, before)
    assert "bad_padding" in packet_server.log()


def test_2024_plaintext_length_differs_from_orig_file_size(packet_server: ServerProcess) -> None:
    with keyed_client(packet_server, "length") as client:
        client.backup("kept.txt", b"verified before\n")
        before = stored(packet_server, client.client_id, DIALECTS["2024A"])
        # 20 bytes encrypt to 32, which orig_file_size 17 also predicts (check 3 passes).
        assert isinstance(
            client.send_file("kept.txt", b"twenty bytes, really", orig_file_size=17), events.ServerError
        )
    assert_nothing_new_stored(packet_server, client.client_id, before)
    log = packet_server.log()
    refusal = next(line for line in log.splitlines() if "bad_orig_file_size" in line)
    assert "1028 SEND_FILE file='kept.txt' refused" in refusal and "decrypts to 20 bytes" in refusal
    assert "-> 1607 SERVER_ERROR, closing" in refusal


def test_2024_duplicate_packet_refused_and_no_answer_before_the_last(packet_server: ServerProcess) -> None:
    schemas = schemas_for(DIALECTS["2024A"])
    with keyed_client(packet_server, "packets") as client:
        before = stored(packet_server, client.client_id, DIALECTS["2024A"])
        assert client.aes_key is not None
        ciphertext = CbcEncryptor(client.aes_key).update(bytes(32)) + CbcEncryptor(client.aes_key).finalize()
        fields = {"content_size": 48, "orig_file_size": 32, "total_packets": 2, "file_name": "two.bin"}
        first = request_frame(
            RequestCode.SEND_FILE,
            client.client_id,
            {**fields, "packet_number": 1, "content": ciphertext[:16]},
            schemas=schemas,
        )
        client.sock.sendall(bytes(first) + bytes(first))  # packet 1 twice: packet_duplicate
        assert read_until_closed(client.sock) == SERVER_ERROR_1607
    assert_nothing_new_stored(packet_server, client.client_id, before)
    assert "packet_duplicate" in packet_server.log()


def test_2024_any_split_is_accepted(packet_server: ServerProcess) -> None:
    """Packets of 1000 bytes (not a multiple of 16) carry one CBC stream across packets."""
    small_packets = replace(DIALECTS["2024A"], packet_size=1000)
    data = content(50_000)
    with TestClient(packet_server.address, dialect=small_packets) as client:
        client.new_client("small-packets", rsa_key())
        client.backup("split.bin", data)
        path_name, verified = stored(packet_server, client.client_id, DIALECTS["2024A"])["split.bin"]
    assert verified == 1 and (packet_server.data_dir / path_name).read_bytes() == data


# -- foreign dialects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_dialect", "client_dialect", "answer", "named"),
    [
        ("2023A", "2024C", SERVER_ERROR_2107, "2024C"),
        ("2024A", "2023A", SERVER_ERROR_1607, "2022C or 2023A"),
        ("2023C", "2024C", SERVER_ERROR_2107, "2024C"),
    ],
)
def test_foreign_dialect_request_is_answered_and_named(
    tmp_path: Path, server_dialect: str, client_dialect: str, answer: bytes, named: str
) -> None:
    register = request_frame(
        RequestCode.REGISTER, bytes(16), {"name": "stranger"}, schemas=schemas_for(DIALECTS[client_dialect])
    )
    server = ServerProcess.start(tmp_path / "data", "--dialect", server_dialect)
    try:
        assert raw_exchange(server.address, bytes(register)) == answer
        lines = [line for line in server.log().splitlines() if "unknown_code" in line]
        assert len(lines) == 1 and f"likely speaks {named}" in lines[0], lines
        assert f"runs with --dialect {named}" in lines[0]
    finally:
        server.stop()


# -- the data dir keeps its dialect; default ports ---------------------------------------------------


@pytest.mark.parametrize(
    ("created", "started", "message"),
    [
        ("2023A", "2022C", "belongs to a 2023A server, this one speaks 2022C"),
        ("2024A", "2023C", "belongs to a 2024A server, this one speaks 2023C"),
        ("2023A", "2024C", "holds server.db, the database of a 2022C/2023A server"),
    ],
)
def test_data_dir_of_another_dialect_is_refused(
    tmp_path: Path, created: str, started: str, message: str
) -> None:
    server = ServerProcess.start(tmp_path, "--dialect", created)
    server.stop()
    result = run_server("--data-dir", str(tmp_path), "--port", "0", "--dialect", started)
    assert result.returncode == 1 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and message in errors[0] and "--dialect" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_database_from_before_the_dialect_record_is_2023a(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path, "--dialect", "2023A")
    server.stop()
    with sqlite3.connect(tmp_path / "server.db") as db:
        db.execute("DROP TABLE settings")
        db.execute(
            "INSERT INTO clients (ID, Name, LastSeen) VALUES (?, 'old', '2023-01-01 00:00:00')", (bytes(16),)
        )
    result = run_server("--data-dir", str(tmp_path), "--port", "0", "--dialect", "2022C")
    assert result.returncode == 1 and "belongs to a 2023A server" in result.stderr


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_default_port_follows_the_dialect(tmp_path: Path, dialect: Dialect) -> None:
    """Without binding the real port: the fallback is tried on an address that cannot be bound."""
    result = run_server("--data-dir", str(tmp_path), "--host", "192.0.2.1", "--dialect", dialect.name)
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and f"default port {dialect.default_port}" in warnings[0]
    assert result.returncode == 1 and f"192.0.2.1:{dialect.default_port}" in result.stderr


def test_help_lists_every_dialect_with_its_port_and_database(tmp_path: Path) -> None:
    result = run_server("--help")
    assert result.returncode == 0
    for dialect in DIALECTS.values():
        line = next(
            line for line in result.stdout.splitlines() if line.strip().startswith(f"{dialect.name}:")
        )
        assert f"port {dialect.default_port}, {dialect.database_name}" in line
        assert f"AES-{dialect.aes_key_size * 8}" in line


def test_unknown_dialect_is_a_usage_error(tmp_path: Path) -> None:
    result = run_server("--data-dir", str(tmp_path), "--dialect", "2025Z")
    assert result.returncode == 2 and "2022C" in result.stderr and "2024C" in result.stderr


# -- the reference client against the reference server, each dialect (issue 13's end to end) ------


@pytest.mark.parametrize("name", list(DIALECTS))
def test_reference_client_backs_up_to_the_reference_server(tmp_path: Path, name: str) -> None:
    """`backup-client --dialect X` -> `backup-server --dialect X`: five sizes, then a second run
    (reconnect, or in 2022C the re-sent 1101), every file stored and verified."""
    dialect = DIALECTS[name]
    sources = tmp_path / "files"
    sources.mkdir()
    paths = []
    for size in SIZES:
        path = sources / f"f{size}.bin"
        path.write_bytes(content(size))
        paths.append(path)
    server = ServerProcess.start(tmp_path / "data", "--dialect", name)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    command = [sys.executable, "-m", "reference_client", "--dir", str(client_dir), "--dialect", name]
    command += ["--server", f"{server.host}:{server.port}", "--name", f"e2e-{name}", "-q"]
    try:
        for run in (paths, paths[:1]):  # the second run finds me.info: reconnect / re-send 1101
            result = subprocess.run(
                [*command, *map(str, run)], capture_output=True, text=True, timeout=120, check=False
            )
            assert result.returncode == 0, result.stderr
        identity = parse_me_info((client_dir / "me.info").read_text(), dialect)
        files = stored(server, identity.client_id, dialect)
        assert {file_name: verified for file_name, (_, verified) in files.items()} == {
            path.name: 1 for path in paths
        }
        for path in paths:
            assert (server.data_dir / files[path.name][0]).read_bytes() == path.read_bytes()
        log = server.log()
        second_session = "RECONNECT_APPROVED" if dialect.has_reconnect else "(returning client, same key)"
        assert second_session in log
    finally:
        server.stop()
