"""The reference client in every dialect, over real TCP on 127.0.0.1, against a fake server of that
dialect (tests/fake_servers.py: backupproto's ServerConnection(dialect) on a listener): files of
0, 15, 16, 17 bytes and 1 MiB arrive intact with GNU cksum's CRC, a second run reconnects (2022C:
re-sends its key), and a server of another dialect is named instead of blamed.

The reference server cannot run another dialect yet (no --dialect on main), so these tests use
the fake server; the same cases against `backup-server --dialect X` are left for when it can.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from fake_servers import FakeClient, FakeServer
from test_client_flow import Recorder, gnu_cksum, make_client

from backupproto.crypto import RsaKey, new_aes_key, wrap_aes_key
from backupproto.dialect import DIALECTS, Dialect, ResponseCode
from backupproto.dialect import RequestCode as R
from backupproto.engine import ServerConnection
from backupproto.events import Register
from backupproto.io.channel import EngineChannel
from backupproto.io.listener import ThreadedListener
from backupproto.schemas import schemas_for
from reference_client import BackupResult, FatalError, FileStatus, read_identity
from reference_client.cli import EXIT_FATAL, main

DIALECT_2022C, DIALECT_2023A, DIALECT_2023C, DIALECT_2024A, DIALECT_2024C = (
    DIALECTS[name] for name in ("2022C", "2023A", "2023C", "2024A", "2024C")
)
MiB = 1 << 20
SIZES = (0, 15, 16, 17, MiB)
ALL = pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))


def make_files(folder: Path, sizes: tuple[int, ...]) -> list[Path]:
    paths = []
    for size in sizes:
        path = folder / f"size-{size}.bin"
        block = bytes((index * 7 + 3) % 251 for index in range(4096))
        path.write_bytes((block * (size // len(block) + 1))[:size])
        paths.append(path)
    return paths


def check_backed_up(
    server: FakeServer, folder: Path, results: list[BackupResult], originals: list[Path]
) -> None:
    client_id = read_identity(folder / "me.info").client_id
    for result, original in zip(results, originals, strict=True):
        assert result.status is FileStatus.VERIFIED, result.describe()
        stored = server.files[(client_id, original.name)]
        assert stored.verified
        assert stored.content == original.read_bytes()
        assert result.crc == stored.crc == gnu_cksum(original)


@ALL
def test_backs_up_files_of_every_size_then_comes_back(tmp_path: Path, dialect: Dialect) -> None:
    files = make_files(tmp_path, SIZES)
    with FakeServer(dialect=dialect) as server:
        first = make_client(server, tmp_path, dialect=dialect).backup_many(files)
        check_backed_up(server, tmp_path, first, files)
        me_info = (tmp_path / "me.info").read_bytes()
        assert server.codes(1) == [R.REGISTER, R.SEND_PUBLIC_KEY, *[R.SEND_FILE, R.CRC_OK] * len(SIZES)]

        second = make_client(server, tmp_path, dialect=dialect).backup(files[1])
        assert second.status is FileStatus.VERIFIED
        returning = R.RECONNECT if dialect.has_reconnect else R.SEND_PUBLIC_KEY
        assert server.codes(2) == [returning, R.SEND_FILE, R.CRC_OK]
    assert (tmp_path / "me.info").read_bytes() == me_info
    assert len(server.clients) == 1


@ALL
@pytest.mark.slow
def test_64_mib_file(tmp_path: Path, dialect: Dialect) -> None:
    (big,) = make_files(tmp_path, (64 * MiB + 5,))
    with FakeServer(dialect=dialect) as server:
        result = make_client(server, tmp_path, dialect=dialect, read_timeout=60.0).backup(big)
        assert result.status is FileStatus.VERIFIED
        assert result.crc == server.files[(read_identity(tmp_path / "me.info").client_id, big.name)].crc
    assert result.crc == gnu_cksum(big)


class ForgetfulServer(FakeServer):
    """A 2022C server that lost its clients: it closes on the returning client's SEND_PUBLIC_KEY."""

    def forget(self) -> None:
        self.clients.clear()


def test_a_returning_2022c_client_the_server_forgot_is_told_about_me_info(tmp_path: Path) -> None:
    (data,) = make_files(tmp_path, (100,))
    recorder = Recorder()
    with ForgetfulServer(dialect=DIALECT_2022C) as server:
        make_client(server, tmp_path, dialect=DIALECT_2022C).backup(data)
        server.forget()
        with pytest.raises(FatalError) as caught:
            make_client(server, tmp_path, recorder, dialect=DIALECT_2022C).backup(data)
        assert server.connections == 1 + 4
        assert server.codes()[-4:] == [R.SEND_PUBLIC_KEY] * 4
    assert recorder.count("server responded with an error: the server closed the connection") == 4
    message = str(caught.value)
    assert "on all 4 attempts" in message
    assert "may not know this client any more" in message and "removing" in message and "me.info" in message
    assert (tmp_path / "me.info").exists()


# --- a server of another dialect --------------------------------------------------------------


class AnswersIn:
    """Reads one request as 2023A and answers REGISTERED in `answer`'s codes, then closes."""

    def __init__(self, answer: Dialect) -> None:
        self.schemas = schemas_for(answer)
        self.listener = ThreadedListener(("127.0.0.1", 0), self._serve)
        self.address = self.listener.address

    def _serve(self, sock: socket.socket, index: int) -> None:
        with EngineChannel(sock, ServerConnection(), timeout=5.0) as channel:
            assert isinstance(channel.next_event(), Register)
            channel.send_bytes(self.schemas.build_response(ResponseCode.REGISTERED, {"client_id": bytes(16)}))


def test_a_server_answering_1600_is_named_as_2024_at_once(tmp_path: Path) -> None:
    (data,) = make_files(tmp_path, (10,))
    server = AnswersIn(DIALECT_2024A)
    server.listener.start()
    try:
        with pytest.raises(FatalError) as caught:
            make_client(server, tmp_path).backup(data)  # type: ignore[arg-type]
        assert server.listener.connections == 1  # no pointless retries
    finally:
        server.listener.close(timeout=5)
    message = str(caught.value)
    assert message.startswith("the server answered 1600 (a 2024A/2024C code, not a 2023A one)")
    assert message.endswith("run with --dialect 2024A or 2024C")
    assert not (tmp_path / "me.info").exists()


def test_the_command_line_prints_one_fatal_line_for_a_foreign_dialect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (data,) = make_files(tmp_path, (10,))
    with FakeServer(dialect=DIALECT_2024A) as server:  # answers 1607 to our 1100
        host, port = server.address
        code = main(["--dir", str(tmp_path), "--server", f"{host}:{port}", "--name", "al", str(data)])
        assert server.connections == 1
    err = capsys.readouterr().err.splitlines()
    assert code == EXIT_FATAL
    assert err == ["Fatal: the server answered 1607 (a 2024A/2024C code, not a 2023A one): "
                   "run with --dialect 2024A or 2024C"]  # fmt: skip


@pytest.mark.parametrize(
    ("client", "server", "named"),
    [
        (DIALECT_2023A, DIALECT_2023C, "2023C"),
        (DIALECT_2023C, DIALECT_2023A, "2023A"),
        (DIALECT_2024C, DIALECT_2024A, "2024A"),
        (DIALECT_2024A, DIALECT_2024C, "2024C"),
    ],
    ids=lambda value: value.name if isinstance(value, Dialect) else value,
)
def test_an_error_to_every_first_request_names_the_dialect_that_refuses_it(
    tmp_path: Path, client: Dialect, server: Dialect, named: str
) -> None:
    (data,) = make_files(tmp_path, (10,))
    with FakeServer(dialect=server) as fake, pytest.raises(FatalError) as caught:
        make_client(fake, tmp_path, dialect=client).backup(data)
    message = str(caught.value)
    register = client.requests[R.REGISTER]
    error = server.responses[ResponseCode.SERVER_ERROR]  # 2107, or 1607 in 2024
    assert f"the server answered with an error ({error}) on all 4 attempts while registering" in message
    assert f"our first request, {register} (REGISTER), which a {named} server does not know" in message
    assert f"run with --dialect {named}" in message


def test_a_2024a_client_answered_2100_is_sent_to_2023c(tmp_path: Path) -> None:
    # 1025 is REGISTER in 2023C and 2024A; 2100 is a 2022C/2023A/2023C code: only 2023C fits both
    (data,) = make_files(tmp_path, (10,))
    with FakeServer(dialect=DIALECT_2023C) as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, dialect=DIALECT_2024A).backup(data)
    assert str(caught.value) == (
        "the server answered 2100 (a 2022C/2023A/2023C code, not a 2024A one): run with --dialect 2023C"
    )


def test_a_2022c_server_closing_on_reconnect_is_named(tmp_path: Path) -> None:
    (data,) = make_files(tmp_path, (10,))
    with FakeServer(dialect=DIALECT_2022C) as server:
        make_client(server, tmp_path, dialect=DIALECT_2022C).backup(data)
        with pytest.raises(FatalError) as caught:
            make_client(server, tmp_path, dialect=DIALECT_2023A).backup(data)
    message = str(caught.value)
    assert "our first request, 1102 (RECONNECT), which a 2022C server does not know" in message
    assert "run with --dialect 2022C" in message


def test_a_2107_to_a_2022c_client_is_an_error_like_a_close(tmp_path: Path) -> None:
    # 2107 is not a 2022C code; it is read as the 2107-in-2022C reading: an error, retried
    (data,) = make_files(tmp_path, (10,))
    recorder = Recorder()
    with FakeServer(dialect=DIALECT_2023C) as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, recorder, dialect=DIALECT_2022C).backup(data)
    assert server.connections == 4
    assert recorder.count("server responded with an error: the server answered 2107 (a 2023A/2023C code") == 4
    assert "which a 2023C server does not know" in str(caught.value)


def test_a_file_beyond_65535_packets_is_refused_unsent(tmp_path: Path) -> None:
    dialect = DIALECT_2024A
    # spec/dialects.md 18.2: 65535 packets of 65536 bytes = 4294901760 bytes of ciphertext at most
    big = tmp_path / "big.bin"
    with big.open("wb") as stream:
        stream.truncate(4294901760)  # sparse: its ciphertext would be 16 bytes over
    with FakeServer(dialect=dialect) as server:
        result = make_client(server, tmp_path, dialect=dialect).backup(big)
        assert server.codes(1) == [R.REGISTER, R.SEND_PUBLIC_KEY]
    assert result.status is FileStatus.TOO_LARGE
    assert "at most 4294901759 bytes" in (result.detail or "")


class Aes128Server(FakeServer):
    """A 2024 server that sends 16-byte AES keys (the reading aes-128-in-2024)."""

    def _new_key(self, conn: Any, public_key: RsaKey) -> bytes:
        conn.aes_key = new_aes_key(16)
        return wrap_aes_key(public_key, conn.aes_key)


def test_a_16_byte_key_in_2024_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    (data,) = make_files(tmp_path, (10,))
    with Aes128Server(dialect=DIALECT_2024A) as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, dialect=DIALECT_2024A).backup(data)
    message = str(caught.value)
    assert (
        "unwrapped AES key (OAEP-SHA1) is 16 bytes (at field 'encrypted_aes_key'); expected 32 bytes"
        in message
    )
    assert "2024A uses AES-256: a 32-byte key" in message


def test_a_foreign_code_is_narrowed_by_the_request_it_answered(tmp_path: Path) -> None:
    # a 2023C client's 1025 answered 1600: of 2024A and 2024C, only 2024A has 1025 as REGISTER
    (data,) = make_files(tmp_path, (10,))
    with FakeServer(dialect=DIALECT_2024A) as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, dialect=DIALECT_2023C).backup(data)
    assert server.connections == 1
    assert str(caught.value) == (
        "the server answered 1600 (a 2024A/2024C code, not a 2023C one): run with --dialect 2024A"
    )


def test_a_2022c_client_whose_name_is_taken_stops_at_once(tmp_path: Path) -> None:
    (data,) = make_files(tmp_path, (10,))
    with FakeServer(dialect=DIALECT_2022C) as server:
        server.clients[bytes(range(16))] = FakeClient("alice")
        with pytest.raises(FatalError) as caught:
            make_client(server, tmp_path, dialect=DIALECT_2022C).backup(data)
        assert server.connections == 1 and server.codes() == [R.REGISTER]
    assert "the name 'alice' is already registered" in str(
        caught.value
    ) and "(2101, registration failed)" in str(caught.value)
