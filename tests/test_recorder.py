"""The recording proxy: transparent relay, malformed traffic, keys from --client-dir, constant memory."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupproto import crypto
from backupproto.io.channel import BYTES_ONLY, Channel
from backupproto.io.server_process import ServerProcess
from backupproto.sessions import Direction, Session
from conformance.recording import ConnectionRecorder, Recorder, load, plaintext_chunks

REGISTER_BOB = bytes(16) + b"\x03\x4c\x04\xff\x00\x00\x00" + b"bob".ljust(255, b"\x00")


class ScriptPeer:
    """A TCP server that reads everything one client sends and answers with fixed bytes in pieces."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        sock, _ = self.listener.accept()
        with Channel(sock, BYTES_ONLY, timeout=10) as channel:
            rng = random.Random(7)
            position = 0
            while position < len(self.reply):
                step = rng.randint(1, 40000)
                channel.send_bytes(self.reply[position : position + step])
                position += step
            channel.shutdown_write()
            self.received.append(channel.receive_all())
        self.listener.close()


def exchange(address: tuple[str, int], sent: bytes) -> bytes:
    """Send `sent` in uneven pieces, half-close, return everything received."""
    with Channel.connect(address, BYTES_ONLY, connect_timeout=10, timeout=10) as channel:
        rng = random.Random(3)
        position = 0
        while position < len(sent):
            step = rng.randint(1, 30000)
            channel.send_bytes(sent[position : position + step])
            position += step
        channel.shutdown_write()
        return channel.receive_all()


@pytest.fixture
def traffic() -> tuple[bytes, bytes]:
    rng = random.Random(11)
    garbage = bytes(rng.getrandbits(8) for _ in range(60_000))  # bodies stay under the inline limit
    sent = REGISTER_BOB + garbage
    reply = (
        b"\x03\x34\x08\x10\x00\x00\x00" + bytes(range(16)) + bytes(rng.getrandbits(8) for _ in range(50_000))
    )
    return sent, reply


@pytest.fixture
def recorder_to(tmp_path: Path) -> Iterator[list[Recorder]]:
    started: list[Recorder] = []
    yield started
    for recorder in started:
        recorder.stop()


def test_bytes_through_the_proxy_equal_bytes_direct(
    traffic: tuple[bytes, bytes], tmp_path: Path, recorder_to: list[Recorder]
) -> None:
    sent, reply = traffic
    direct_peer = ScriptPeer(reply)
    direct_answer = exchange(direct_peer.address, sent)
    direct_peer.thread.join(10)

    proxied_peer = ScriptPeer(reply)
    recorder = Recorder(("127.0.0.1", 0), proxied_peer.address, tmp_path / "out").start()
    recorder_to.append(recorder)
    proxied_answer = exchange(recorder.address, sent)
    proxied_peer.thread.join(10)

    assert proxied_answer == direct_answer == reply
    assert proxied_peer.received == direct_peer.received == [sent]
    assert recorder.wait_for(1) and not recorder.failures


def wire_bytes(session: Session, direction: Direction) -> bytes:
    """What passed in one direction, rebuilt from the session (hex + kept ciphertexts)."""
    out = bytearray()
    for message in session.messages:
        if message.direction is direction and not message.close:
            out += message.raw
            if message.content is not None:
                assert message.content.ciphertext is not None
                out += message.content.ciphertext
    return bytes(out)


def test_malformed_traffic_is_recorded_raw_with_the_error(
    traffic: tuple[bytes, bytes], tmp_path: Path, recorder_to: list[Recorder]
) -> None:
    sent, reply = traffic
    peer = ScriptPeer(reply)
    recorder = Recorder(("127.0.0.1", 0), peer.address, tmp_path / "out").start()
    recorder_to.append(recorder)
    exchange(recorder.address, sent)
    [path] = recorder.wait_for(1)
    session = load(path)
    first = next(m for m in session.messages if m.direction is Direction.REQUEST)
    assert first.decoded is not None and first.decoded["fields"] == {"name": "bob"}
    errors = [m.error["kind"] for m in session.messages if m.error and m.direction is Direction.REQUEST]
    assert errors, "the garbage after the 1100 is noted as malformed"
    # nothing is lost: the recorded requests and responses are exactly the bytes that passed
    assert wire_bytes(session, Direction.REQUEST) == sent
    assert wire_bytes(session, Direction.RESPONSE) == reply
    assert [m.direction for m in session.messages if m.close] != []


def reference_backup(folder: Path, address: tuple[str, int], name: str, content: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.bin").write_bytes(content)
    (folder / "transfer.info").write_text(f"{address[0]}:{address[1]}\n{name}\ndata.bin\n")
    result = subprocess.run(
        [sys.executable, "-m", "reference_client", "--dir", str(folder), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_client_dir_gives_plaintext_and_key(
    reference_server: ServerProcess, tmp_path: Path, recorder_to: list[Recorder]
) -> None:
    content = os.urandom(100_000)  # above the 64 KiB inline limit: a side file
    client = tmp_path / "client"
    recorder = Recorder(
        ("127.0.0.1", 0), (reference_server.host, reference_server.port), tmp_path / "out", client_dir=client
    ).start()
    recorder_to.append(recorder)
    reference_backup(client, recorder.address, "recorded client", content)
    [path] = recorder.wait_for(1)
    session = load(path)
    [file_message] = [m for m in session.messages if m.code == 1103]
    assert file_message.content is not None
    plain = file_message.content.plaintext
    assert plain is not None and plain.file is not None and plain.size == len(content)
    assert b"".join(plaintext_chunks(plain)) == content
    assert plain.sha256 == hashlib.sha256(content).hexdigest()
    assert file_message.content.size == crypto.encrypted_size(len(content))
    [client_key] = session.clients
    private = crypto.import_private_key(base64.b64decode(client_key.private_key))
    assert private == crypto.import_private_key((client / "priv.key").read_text())
    assert client_key.name == "recorded client"
    assert session.blockers() == []


def test_without_client_dir_the_session_says_why_it_cannot_replay(
    reference_server: ServerProcess, tmp_path: Path, recorder_to: list[Recorder]
) -> None:
    recorder = Recorder(("127.0.0.1", 0), (reference_server.host, reference_server.port), tmp_path / "out")
    recorder_to.append(recorder.start())
    reference_backup(tmp_path / "client", recorder.address, "keyless client", b"hello\n")
    [path] = recorder.wait_for(1)
    session = load(path)
    [file_message] = [m for m in session.messages if m.code == 1103]
    assert file_message.content is not None and file_message.content.plaintext is None
    assert "--client-dir" in (file_message.content.plaintext_error or "")
    [reason] = session.blockers()
    assert "cannot re-encrypt" in reason and "--client-dir" in reason


def test_record_subcommand(reference_server: ServerProcess, tmp_path: Path) -> None:
    out, client = tmp_path / "out", tmp_path / "client"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conformance",
            "record",
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"{reference_server.host}:{reference_server.port}",
            "--out",
            str(out),
            "--client-dir",
            str(client),
            "--connections",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.match(r"recording on (\S+):(\d+) -> ", line)
        assert match, line
        reference_backup(client, (match[1], int(match[2])), "cli client", b"via the cli\n")
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, stderr
    assert f"wrote {out / 'session-0001.json'}" in stdout
    assert load(out / "session-0001.json").blockers() == []


def test_record_subcommand_refuses_a_bad_address() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "record",
            "--listen",
            "nowhere",
            "--target",
            "127.0.0.1:1",
            "--out",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "'nowhere' is not HOST:PORT" in result.stderr


def test_large_file_in_constant_memory(tmp_path: Path) -> None:
    """32 MiB of 1103 content pass the recorder (no client key) with a small peak of Python memory."""
    content_size = 32 * 1024 * 1024
    header = (
        b"\x11" * 16
        + b"\x03\x4f\x04"
        + (259 + content_size).to_bytes(4, "little")
        + content_size.to_bytes(4, "little")
        + b"big.bin".ljust(255, b"\x00")
    )
    recorder = ConnectionRecorder("big", tmp_path)
    chunk = os.urandom(64 * 1024)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        recorder.data(Direction.REQUEST, header)
        for _ in range(content_size // len(chunk)):
            recorder.data(Direction.REQUEST, chunk)
            digest.update(chunk)
        recorder.closed(Direction.REQUEST)
        recorder.closed(Direction.RESPONSE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    session = recorder.finish(tmp_path, None, {})
    recorder.discard_spools()
    content = session.messages[0].content
    assert content is not None and content.size == content_size and content.sha256 == digest.hexdigest()
    assert content.ciphertext is None  # too large to keep inline: the hash stands for it
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
