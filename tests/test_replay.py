"""Replay: recorded reference conversations pass against the reference server, broken servers fail at
the right message, and the server half checks a client."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupproto.dialect import ResponseCode
from backupproto.io.channel import BYTES_ONLY, Channel, ChannelTimeout, ConnectionLost
from backupproto.io.listener import ThreadedListener
from backupproto.io.server_process import ServerProcess
from backupproto.schemas import V3_SCHEMAS
from backupproto.sessions import Direction, End, Session, Splitter, Start, join
from conformance.recording import Recorder, load, plaintext_chunks, save
from conformance.replay import NotReplayable, ReplayMismatch, ReplayServer, replay_against_server

CORPUS = Path(__file__).parent.parent / "conformance" / "sessions"


def run_client(
    folder: Path, address: tuple[str, int], name: str, content: bytes
) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_bytes(content)
    (folder / "transfer.info").write_text(f"{address[0]}:{address[1]}\n{name}\ndata.txt\n")
    return subprocess.run(
        [sys.executable, "-m", "reference_client", "--dir", str(folder), "--quiet", "--retries", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def record(server: ServerProcess, tmp_path: Path, runs: int, client_dir: Path | None = None) -> Session:
    """Record `runs` reference-client backups of one client, joined into one session."""
    client = tmp_path / "client"
    recorder = Recorder(
        ("127.0.0.1", 0), (server.host, server.port), tmp_path / "recorded", client_dir=client_dir
    ).start()
    try:
        for _ in range(runs):
            result = run_client(client, recorder.address, "replayed client", b"replay me\n" * 500)
            assert result.returncode == 0, result.stdout + result.stderr
        paths = recorder.wait_for(runs)
    finally:
        recorder.stop()
    assert len(paths) == runs and not recorder.failures
    return join("recorded-backup", [load(path) for path in sorted(paths)])


def test_recorded_backup_replays_against_the_reference_server(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    session = record(reference_server, tmp_path, runs=2, client_dir=tmp_path / "client")
    codes = [m.code for m in session.messages if not m.close]
    assert codes[:8] == [1100, 2100, 1101, 2102, 1103, 2103, 1104, 2104]
    assert codes[8:10] == [1102, 2105]
    save(session, tmp_path / "recorded-backup.json")
    address = (reference_server.host, reference_server.port)
    first = replay_against_server(tmp_path / "recorded-backup.json", address)
    second = replay_against_server(tmp_path / "recorded-backup.json", address)  # fresh names: no collision
    assert first.messages == second.messages == len(session.messages)
    assert first.names["replayed client"] != second.names["replayed client"]
    assert first.connections == 2


def test_session_without_keys_says_why_it_cannot_replay(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    session = record(reference_server, tmp_path, runs=1)
    with pytest.raises(NotReplayable, match=r"cannot re-encrypt .*--client-dir"):
        replay_against_server(session, (reference_server.host, reference_server.port))


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.json")), ids=lambda p: p.stem)
def test_corpus_replays_against_the_reference_server(
    shared_reference_server: ServerProcess, path: Path
) -> None:
    report = replay_against_server(path, (shared_reference_server.host, shared_reference_server.port))
    assert report.messages == len(load(path).messages)


# --- broken servers, built on backupproto --------------------------------------------------


class BrokenServer:
    """Answers every request with `answer(request_start)` bytes; optionally never closes."""

    def __init__(self, answer: Callable[[Start], bytes], *, close_after_error: bool = True) -> None:
        self.answer = answer
        self.close_after_error = close_after_error
        self.listener = ThreadedListener(("127.0.0.1", 0), self._connection).start()
        self.address = self.listener.address

    def _connection(self, sock: socket.socket, number: int) -> None:
        last: Start | None = None
        with Channel(sock, Splitter(Direction.REQUEST), timeout=10) as channel:
            while True:
                try:
                    piece = channel.next_event()
                except (ChannelTimeout, ConnectionLost):
                    return
                if isinstance(piece, Start):
                    last = piece
                elif isinstance(piece, End) and last is not None:
                    if last.decoded is not None and last.decoded["code"] == 1105:
                        continue  # no response to 1105
                    reply = self.answer(last)
                    channel.send_bytes(reply)
                    if reply[1:3] == b"\x3b\x08" and self.close_after_error:
                        return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def broken() -> Iterator[list[BrokenServer]]:
    servers: list[BrokenServer] = []
    yield servers
    for server in servers:
        server.close()


def test_server_answering_2101_to_everything_fails_at_message_1(broken: list[BrokenServer]) -> None:
    server = BrokenServer(lambda start: V3_SCHEMAS.build_response(ResponseCode.REGISTRATION_FAILED, {}))
    broken.append(server)
    with pytest.raises(ReplayMismatch) as caught:
        replay_against_server(CORPUS / "register-file-crc-ok.json", server.address, timeout=5)
    mismatch = caught.value
    assert mismatch.index == 1
    assert mismatch.expected["code"] == 2100 and mismatch.expected["type"] == "REGISTERED"
    assert mismatch.actual["code"] == 2101 and mismatch.actual["type"] == "REGISTRATION_FAILED"
    assert "message 1: response code 2101 instead of 2100" in str(mismatch)


def test_server_that_keeps_the_connection_after_2107_fails_at_the_close(broken: list[BrokenServer]) -> None:
    server = BrokenServer(
        lambda start: V3_SCHEMAS.build_response(ResponseCode.SERVER_ERROR, {}), close_after_error=False
    )
    broken.append(server)
    session = load(CORPUS / "error-unknown-code.json")
    close_index = next(m.index for m in session.messages if m.close and m.direction is Direction.RESPONSE)
    with pytest.raises(ReplayMismatch) as caught:
        replay_against_server(session, server.address, timeout=1)
    assert caught.value.index == close_index
    assert caught.value.expected == "the server closes the connection"


def test_server_with_a_wrong_cksum_fails_at_the_2103(reference_server: ServerProcess, tmp_path: Path) -> None:
    """A relay that adds 1 to every 2103's cksum: the replay stops at the first 2103, field cksum."""
    session = load(CORPUS / "register-file-crc-ok.json")
    upstream = (reference_server.host, reference_server.port)
    listener = socket.create_server(("127.0.0.1", 0))

    def relay() -> None:
        sock, _ = listener.accept()
        client = Channel(sock, BYTES_ONLY, timeout=10)
        server = Channel.connect(upstream, Splitter(Direction.RESPONSE), connect_timeout=10, timeout=10)

        def up() -> None:
            with contextlib.suppress(ConnectionLost):  # the relay closes the client when the server ends
                while data := client.receive_bytes():
                    server.send_bytes(data)
                server.shutdown_write()

        threading.Thread(target=up, daemon=True).start()
        with contextlib.suppress(ConnectionLost):  # until the server's stream ends
            while piece := server.next_event():
                if isinstance(piece, Start) and piece.decoded is not None:
                    fields = {k: v for k, v in piece.decoded["fields"].items()}
                    code = ResponseCode(piece.decoded["code"])
                    for key in ("client_id", "encrypted_aes_key"):
                        if key in fields:
                            fields[key] = bytes.fromhex(fields[key])
                    if code is ResponseCode.FILE_RECEIVED:
                        fields["cksum"] = (fields["cksum"] + 1) % 2**32
                    client.send_bytes(V3_SCHEMAS.build_response(code, fields))
        client.close()

    threading.Thread(target=relay, daemon=True).start()
    try:
        with pytest.raises(ReplayMismatch) as caught:
            replay_against_server(session, listener.getsockname()[:2], timeout=5)
    finally:
        listener.close()
    first_2103 = next(m.index for m in session.messages if m.code == 2103)
    assert caught.value.index == first_2103 and caught.value.reason == "field cksum differs"


# --- the server half against a client -------------------------------------------------------


def recorded_plaintext(session: Session) -> bytes:
    content = next(m.content for m in session.messages if m.code == 1103)
    assert content is not None and content.plaintext is not None
    return b"".join(plaintext_chunks(content.plaintext))


def test_replay_server_checks_the_reference_client(tmp_path: Path) -> None:
    session = load(CORPUS / "register-file-crc-ok.json")
    server = ReplayServer(session, timeout=10).start()
    result = run_client(tmp_path / "client", server.address, "any name", recorded_plaintext(session))
    report = server.wait(30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report.messages == len(session.messages) and report.connections == 1


def test_replay_server_notices_a_different_file(tmp_path: Path) -> None:
    session = load(CORPUS / "register-file-crc-ok.json")
    server = ReplayServer(session, timeout=10).start()
    other = recorded_plaintext(session)[::-1]  # same size, other bytes
    run_client(tmp_path / "client", server.address, "any name", other)
    with pytest.raises(ReplayMismatch) as caught:
        server.wait(30)
    assert caught.value.index == next(m.index for m in session.messages if m.code == 1103)
    assert "plaintext differs" in caught.value.reason
    assert caught.value.expected["size"] == caught.value.actual["size"] == len(other)


def test_replay_server_notices_a_different_file_size(tmp_path: Path) -> None:
    session = load(CORPUS / "register-file-crc-ok.json")
    server = ReplayServer(session, timeout=10).start()
    run_client(tmp_path / "client", server.address, "any name", b"short\n")
    with pytest.raises(ReplayMismatch, match="field content_size differs"):
        server.wait(30)


def test_replay_server_subcommand(tmp_path: Path) -> None:
    session_path = CORPUS / "register-file-crc-ok.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conformance",
            "replay-server",
            "--session",
            str(session_path),
            "--timeout",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        match = re.match(r"listening on (\S+):(\d+)", process.stdout.readline())
        assert match
        content = recorded_plaintext(load(session_path))
        run_client(tmp_path / "client", (match[1], int(match[2])), "cli", content)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stdout + stderr
    assert stdout.startswith("PASS register-file-crc-ok")
