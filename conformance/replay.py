"""Replay of recorded sessions (spec/sessions.md 6 and 7).

`replay_against_server` plays a session's client half against a server and checks every
response; `ReplayServer` plays the server half so that a client can be checked. Values
that change from run to run (client ids the server picks, wrapped AES keys, file
ciphertexts, client names) follow the rules of spec/sessions.md 4; everything else must
match. A difference raises `ReplayMismatch` naming the message index, the expected and the
actual message, decoded.

This module is also the ``replay-server`` subcommand of ``python -m backupproto``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES

from backupproto import crypto
from backupproto.cksum import Cksum
from backupproto.dialect import RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.schemas import V3_SCHEMAS
from backupproto.sessions import (
    Body,
    Content,
    Direction,
    End,
    Message,
    Plaintext,
    Session,
    SessionError,
    Splitter,
    Start,
    load,
)

CHUNK = 64 * 1024
BODY_KEEP = 64 * 1024
"""Bytes of an unexpected body kept for the report."""
KEY_RESPONSES = (int(ResponseCode.AES_KEY), int(ResponseCode.RECONNECT_APPROVED))


class NotReplayable(Exception):
    """The session lacks what a replay needs (say which and why)."""


class ReplayMismatch(AssertionError):
    """The peer did not behave as recorded."""

    def __init__(self, session: str, index: int, reason: str, expected: Any, actual: Any) -> None:
        self.session, self.index, self.reason = session, index, reason
        self.expected, self.actual = expected, actual
        super().__init__(
            f"session {session!r}, message {index}: {reason}\n"
            f"  expected: {_show(expected)}\n"
            f"  actual:   {_show(actual)}"
        )


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass
class ReplayReport:
    """What a replay checked."""

    session: str
    messages: int = 0
    connections: int = 0
    seconds: float = 0.0
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class _Received:
    """One message read from the peer, or the end of its stream (`closed`)."""

    start: Start | None = None
    body: bytearray = field(default_factory=bytearray)
    body_size: int = 0
    end: End | None = None
    closed: bool = False

    def describe(self) -> Any:
        if self.closed:
            return "the peer closed the connection"
        assert self.start is not None
        if self.start.decoded is not None:
            return self.start.decoded
        return {"hex": self.start.raw.hex(), "error": self.start.error, "body_size": self.body_size}


class _Peer:
    """One connection: a socket, a splitter on the incoming direction, and the session's AES key."""

    def __init__(self, sock: socket.socket, incoming: Direction, timeout: float) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.splitter = Splitter(incoming)
        self.pieces: list[Start | Body | End] = []
        self.eof = False
        self.aes_key: bytes | None = None
        self.send_failed: str | None = None

    def send(self, data: bytes) -> None:
        if self.send_failed is not None or not data:
            return
        try:
            self.sock.sendall(data)
        except OSError as error:  # the peer may have answered and closed early: its answer decides
            self.send_failed = str(error)

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            self.send_failed = self.send_failed or str(error)

    def receive(self, on_body: Callable[[bytes], None] | None = None) -> _Received | None:
        """The next whole message, `closed`, or None on timeout; body pieces go to `on_body` if given."""
        received = _Received()
        deadline = time.monotonic() + self.timeout
        while True:
            while self.pieces:
                piece = self.pieces.pop(0)
                if isinstance(piece, Start):
                    received.start = piece
                elif isinstance(piece, Body):
                    received.body_size += len(piece.data)
                    if on_body is not None:
                        on_body(piece.data)
                        continue
                    room = BODY_KEEP - len(received.body)
                    received.body += piece.data[: max(room, 0)]
                else:
                    received.end = piece
                    return received
            if self.eof:
                received.closed = received.start is None
                return received
            if time.monotonic() >= deadline:
                return None
            try:
                data = self.sock.recv(CHUNK)
            except TimeoutError:
                return None
            except OSError:
                data = b""
            if data:
                self.pieces.extend(self.splitter.feed(data))
            else:
                self.eof = True
                self.pieces.extend(self.splitter.end())

    def close(self) -> None:
        self.sock.close()


def fresh_name(name: str, token: str) -> str:
    """A per-run variant of a recorded client name (spec/sessions.md 4)."""
    suffix = f"-{token}"
    return name[: 100 - len(suffix)] + suffix if len(name) + len(suffix) > 100 else name + suffix


def _private_keys(session: Session) -> dict[str, crypto.RsaKey]:
    keys: dict[str, crypto.RsaKey] = {}
    for client in session.clients:
        try:
            keys[client.client_id] = crypto.import_private_key(client.private_key)
        except BackupProtoError as error:
            raise NotReplayable(f"session {session.name!r}: client {client.client_id}: {error}") from None
    return keys


def _raw_cbc_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-128-CBC, zero IV, no padding added (for `padded: false` plaintexts: whole blocks)."""
    return bytes(AES.new(key, AES.MODE_CBC, iv=bytes(16)).encrypt(data))


def _encrypted(plain: Plaintext, aes_key: bytes) -> Iterator[bytes]:
    if not plain.padded:
        yield _raw_cbc_encrypt(aes_key, b"".join(plain.chunks()))
        return
    encryptor = crypto.CbcEncryptor(aes_key)
    for chunk in plain.chunks():
        yield encryptor.update(chunk)
    yield encryptor.finalize()


def content_chunks(content: Content, aes_key: bytes | None, replace: bool, what: str) -> Iterator[bytes]:
    """The wire bytes of a recorded content for this run: the plaintext re-encrypted under
    `aes_key`, or the recorded ciphertext as it is. At most `content.size` bytes."""
    left = content.size
    if replace and content.plaintext is not None:
        if aes_key is None:
            raise NotReplayable(f"{what}: no AES key on this connection to encrypt the file with")
        for chunk in _encrypted(content.plaintext, aes_key):
            if left <= 0:
                return
            yield chunk[:left]
            left -= len(chunk[:left])
        return
    if content.ciphertext is None:
        raise NotReplayable(
            f"{what}: the session keeps neither the plaintext nor the ciphertext of the "
            f"{content.size}-byte content ({content.plaintext_error or 'hash only'})"
        )
    yield content.ciphertext[:left]


# --- the client half, against a server -----------------------------------------------------


class ServerReplay:
    """Plays a session's requests to a server and checks its responses."""

    def __init__(
        self, session: Session, address: tuple[str, int], *, timeout: float = 10.0, token: str | None = None
    ) -> None:
        blockers = session.blockers()
        if blockers:
            raise NotReplayable(f"session {session.name!r} cannot be replayed: " + "; ".join(blockers))
        self.session = session
        self.address = address
        self.timeout = timeout
        self.token = token or secrets.token_hex(4)
        self.keys = _private_keys(session)
        self.ids: dict[str, bytes] = {}
        """recorded client id (hex) -> the id the server gave this run"""
        self.names: dict[str, str] = {}
        self.peers: dict[int, _Peer] = {}
        self.variables = set(session.variables)

    def run(self) -> ReplayReport:
        """Replay every message in order; `ReplayMismatch` at the first difference."""
        started = time.monotonic()
        report = ReplayReport(self.session.name)
        try:
            for message in self.session.messages:
                peer = self._peer(message.connection)
                if message.direction is Direction.REQUEST:
                    self._send(peer, message)
                else:
                    self._expect(peer, message)
                report.messages += 1
        finally:
            for peer in self.peers.values():
                peer.close()
        report.connections = len(self.peers)
        report.seconds = time.monotonic() - started
        report.names = dict(self.names)
        return report

    def _peer(self, connection: int) -> _Peer:
        peer = self.peers.get(connection)
        if peer is None:
            try:
                sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as error:
                raise ReplayMismatch(
                    self.session.name,
                    -1,
                    f"cannot connect to {self.address[0]}:{self.address[1]} for connection {connection}",
                    "an accepted connection",
                    str(error),
                ) from None
            peer = self.peers[connection] = _Peer(sock, Direction.RESPONSE, self.timeout)
        return peer

    # requests

    def _name(self, recorded: str) -> str:
        if "name" not in self.variables:
            return recorded
        if recorded not in self.names:
            self.names[recorded] = fresh_name(recorded, self.token)
        return self.names[recorded]

    def _client_id(self, recorded_hex: str) -> bytes:
        if "client_id" in self.variables and recorded_hex in self.ids:
            return self.ids[recorded_hex]
        return bytes.fromhex(recorded_hex)

    def _send(self, peer: _Peer, message: Message) -> None:
        if message.close:
            peer.shutdown_write()
            return
        decoded = message.decoded
        if decoded is None:
            peer.send(message.raw)
            if message.content is not None:
                for chunk in content_chunks(message.content, None, False, f"message {message.index}"):
                    peer.send(chunk)
            return
        code = RequestCode(decoded["code"])
        client_id = self._client_id(decoded["client_id"])
        fields = dict(decoded["fields"])
        if "name" in fields:
            fields["name"] = self._name(fields["name"])
        if "public_key" in fields:
            fields["public_key"] = bytes.fromhex(fields["public_key"])
        schemas = V3_SCHEMAS
        if code is RequestCode.SEND_FILE:
            prefix = schemas.send_file_prefix.build(
                {"content_size": fields["content_size"], "file_name": fields["file_name"]}
            )
            header = schemas.build_request_header(
                client_id, code, decoded["payload_size"], decoded["version"]
            )
            peer.send(header + bytes(prefix))
            if message.content is not None:
                replace = "content" in self.variables
                what = f"session {self.session.name!r}, message {message.index}"
                for chunk in content_chunks(message.content, peer.aes_key, replace, what):
                    peer.send(chunk)
            return
        peer.send(schemas.build_request(code, client_id, fields, decoded["version"]))

    # responses

    def _expect(self, peer: _Peer, message: Message) -> None:
        expected: Any = "the server closes the connection" if message.close else message.decoded
        if expected is None:
            expected = {"hex": message.raw.hex(), "error": message.error}
        received = peer.receive()
        if received is None:
            self._fail(message, f"no answer within {self.timeout:g} s", expected, "nothing")
        assert received is not None
        if message.close:
            if not received.closed:
                self._fail(message, "the server did not close the connection", expected, received.describe())
            return
        if received.closed:
            why = f" (sending had failed: {peer.send_failed})" if peer.send_failed else ""
            self._fail(message, "the server closed the connection" + why, expected, received.describe())
        assert received.start is not None
        actual = received.start.decoded
        if message.decoded is None or actual is None:
            if message.decoded is None and received.start.raw == message.raw:
                return
            self._fail(message, "the response differs", expected, received.describe())
        assert message.decoded is not None and actual is not None
        self._compare(peer, message, message.decoded, actual)

    def _fail(self, message: Message, reason: str, expected: Any, actual: Any) -> None:
        raise ReplayMismatch(self.session.name, message.index, reason, expected, actual)

    def _compare(
        self, peer: _Peer, message: Message, expected: dict[str, Any], actual: dict[str, Any]
    ) -> None:
        shown = json.loads(json.dumps(expected))
        if "encrypted_aes_key" in shown["fields"] and "encrypted_aes_key" in self.variables:
            size = len(shown["fields"]["encrypted_aes_key"]) // 2
            shown["fields"]["encrypted_aes_key"] = f"<{size} bytes, any value>"
        if actual["code"] != expected["code"]:
            self._fail(
                message, f"response code {actual['code']} instead of {expected['code']}", shown, actual
            )
        fields, got = expected["fields"], actual["fields"]
        recorded_id = fields.get("client_id")
        if recorded_id is not None:
            if expected["code"] == int(ResponseCode.REGISTERED) and "client_id" in self.variables:
                taken = {value.hex(): key for key, value in self.ids.items()}
                if got["client_id"] in taken and taken[got["client_id"]] != recorded_id:
                    self._fail(message, "the server gave an id it had given another client", shown, actual)
                self.ids[recorded_id] = bytes.fromhex(got["client_id"])
            want = self._client_id(recorded_id).hex()
            shown["fields"]["client_id"] = want
            if got["client_id"] != want:
                self._fail(message, "client_id differs", shown, actual)
        for key, value in fields.items():
            if key == "client_id":
                continue
            if key == "encrypted_aes_key" and "encrypted_aes_key" in self.variables:
                self._check_key(peer, message, recorded_id, got[key], shown, actual)
                continue
            if got.get(key) != value:
                self._fail(message, f"field {key} differs", shown, actual)

    def _check_key(
        self, peer: _Peer, message: Message, client: str | None, wrapped_hex: str, shown: Any, actual: Any
    ) -> None:
        key = self.keys.get(client or "")
        if key is None and len(self.keys) == 1:
            key = next(iter(self.keys.values()))
        if key is None:
            peer.aes_key = None
            return
        try:
            peer.aes_key = crypto.unwrap_aes_key(key, bytes.fromhex(wrapped_hex))
        except BackupProtoError as error:
            self._fail(
                message,
                f"encrypted_aes_key does not unwrap with the client's private key: {error}",
                shown,
                actual,
            )


def replay_against_server(
    session: Session | Path, address: tuple[str, int], *, timeout: float = 10.0
) -> ReplayReport:
    """Replay `session` (or the session file) against the server at `address`."""
    loaded = session if isinstance(session, Session) else load(session)
    return ServerReplay(loaded, address, timeout=timeout).run()


# --- the server half, for checking a client ------------------------------------------------


class _PlainSink:
    """Decrypts a file's content as it arrives, keeping only its size and cksum."""

    def __init__(self, aes_key: bytes | None) -> None:
        self.decryptor = None if aes_key is None else crypto.CbcDecryptor(aes_key)
        self.crc = Cksum()
        self.size = 0
        self.error: str | None = None if aes_key is not None else "a file arrived before any AES key"

    def update(self, data: bytes) -> None:
        if self.decryptor is None or self.error is not None:
            return
        try:
            self._take(self.decryptor.update(data))
        except BackupProtoError as error:
            self.error = f"the file does not decrypt with the session key: {error}"

    def _take(self, plain: bytes) -> None:
        self.crc.update(plain)
        self.size += len(plain)

    def result(self) -> dict[str, int] | str:
        if self.error is None and self.decryptor is not None:
            try:
                self._take(self.decryptor.finalize())
            except BackupProtoError as error:
                self.error = f"the file does not decrypt with the session key: {error}"
        if self.error is not None:
            return self.error
        return {"size": self.size, "cksum": self.crc.value}


class ReplayServer:
    """Answers a client with a session's recorded responses and checks the client's requests.

    The server half is played connection by connection, in the recorded order. Substituted:
    the AES key (a fresh one, wrapped with the public key the client sends in its 1101 on this
    run), names and file names (bound to what the client sends first), the client id (the
    recorded one is handed out, so the client echoes it). A 1103's content is decrypted and its
    size and cksum compared with the recorded plaintext's.
    """

    def __init__(
        self, session: Session, listen: tuple[str, int] = ("127.0.0.1", 0), *, timeout: float = 10.0
    ) -> None:
        self.session = session
        self.timeout = timeout
        self._listener = socket.create_server(listen)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.error: BaseException | None = None
        self.report = ReplayReport(session.name)
        self.bound: dict[str, str] = {}
        self.public_keys: dict[str, crypto.RsaKey] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ReplayServer:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float = 30.0) -> ReplayReport:
        """Wait for the session to be played through; raise what went wrong."""
        if not self._done.wait(timeout):
            self.close()
            raise ReplayMismatch(
                self.session.name,
                -1,
                f"the client did not finish within {timeout:g} s",
                "the whole session",
                f"{self.report.messages} messages played",
            )
        if self.error is not None:
            raise self.error
        return self.report

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _serve(self) -> None:
        started = time.monotonic()
        try:
            by_connection: dict[int, list[Message]] = {}
            for message in self.session.messages:
                by_connection.setdefault(message.connection, []).append(message)
            for connection in sorted(by_connection):
                self._listener.settimeout(self.timeout)
                try:
                    sock, _ = self._listener.accept()
                except OSError as error:
                    raise ReplayMismatch(
                        self.session.name,
                        by_connection[connection][0].index,
                        f"the client did not open connection {connection}",
                        "a connection",
                        str(error),
                    ) from None
                peer = _Peer(sock, Direction.REQUEST, self.timeout)
                try:
                    for message in by_connection[connection]:
                        if message.direction is Direction.REQUEST:
                            self._expect(peer, message)
                        else:
                            self._answer(peer, message)
                        self.report.messages += 1
                finally:
                    peer.close()
                self.report.connections += 1
        except BaseException as error:  # reported by wait()
            self.error = error
        finally:
            self.report.seconds = time.monotonic() - started
            self.close()
            self._done.set()

    def _bind(self, kind: str, recorded: str, actual: str) -> str:
        key = f"{kind}:{recorded}"
        return self.bound.setdefault(key, actual)

    def _fail(self, message: Message, reason: str, expected: Any, actual: Any) -> None:
        raise ReplayMismatch(self.session.name, message.index, reason, expected, actual)

    def _expect(self, peer: _Peer, message: Message) -> None:
        expected: Any = "the client closes the connection" if message.close else message.decoded
        sink = _PlainSink(peer.aes_key)
        received = peer.receive(on_body=sink.update)
        if received is None:
            self._fail(message, f"no request within {self.timeout:g} s", expected, "nothing")
        assert received is not None
        if message.close:
            if not received.closed:
                self._fail(message, "the client did not close the connection", expected, received.describe())
            return
        if received.closed or received.start is None:
            self._fail(message, "the client closed the connection", expected, received.describe())
        assert received.start is not None
        actual = received.start.decoded
        if message.decoded is None or actual is None:
            if message.decoded is None and received.start.raw == message.raw:
                return
            self._fail(message, "the request differs", expected or message.raw.hex(), received.describe())
        assert message.decoded is not None and actual is not None
        want, got = message.decoded, actual
        if got["code"] != want["code"]:
            self._fail(message, f"request code {got['code']} instead of {want['code']}", want, got)
        if want["code"] != int(RequestCode.REGISTER) and got["client_id"] != self._bind(
            "id", want["client_id"], got["client_id"]
        ):
            self._fail(message, "client_id differs", want, got)
        for key, value in want["fields"].items():
            if key == "public_key":
                try:
                    self.public_keys[got["client_id"]] = crypto.import_public_key(
                        bytes.fromhex(got["fields"][key])
                    )
                except BackupProtoError as error:
                    self._fail(message, f"unusable public key: {error}", want, got)
                continue
            if key in ("name", "file_name"):
                value = self._bind(key, value, got["fields"][key])
            if got["fields"].get(key) != value:
                self._fail(message, f"field {key} differs", want, got)
        if message.content is not None and want["code"] == int(RequestCode.SEND_FILE):
            self._check_content(message, sink)

    def _check_content(self, message: Message, sink: _PlainSink) -> None:
        recorded = message.content
        assert recorded is not None
        got = sink.result()
        if isinstance(got, str):
            self._fail(
                message, got, "AES-128-CBC under the session key, zero IV, PKCS#7", "undecryptable file"
            )
        if recorded.plaintext is not None:
            want = {"size": recorded.plaintext.size, "cksum": recorded.plaintext.cksum}
            if want != got:
                self._fail(message, "the file's plaintext differs from the recorded one", want, got)

    def _answer(self, peer: _Peer, message: Message) -> None:
        if message.close:
            peer.shutdown_write()
            return
        decoded = message.decoded
        if decoded is None:
            peer.send(message.raw)
            return
        code = ResponseCode(decoded["code"])
        fields = dict(decoded["fields"])
        if "client_id" in fields:
            recorded_id = str(fields["client_id"])
            fields["client_id"] = bytes.fromhex(self.bound.get(f"id:{recorded_id}", recorded_id))
        if "file_name" in fields:
            fields["file_name"] = self.bound.get(f"file_name:{fields['file_name']}", fields["file_name"])
        if code.value in KEY_RESPONSES:
            public = self.public_keys.get(fields["client_id"].hex())
            if public is None:
                self._fail(
                    message,
                    f"cannot answer {code.name}: the client's public key is unknown "
                    "(the session must contain its 1101)",
                    "a 1101 earlier in this session",
                    "none",
                )
            assert public is not None
            peer.aes_key = crypto.new_aes_key()
            fields["encrypted_aes_key"] = crypto.wrap_aes_key(public, peer.aes_key)
        peer.send(V3_SCHEMAS.build_response(code, fields, decoded["version"]))


# --- the replay-server subcommand ----------------------------------------------------------

HELP = "play a recorded session's server half to a client, checking the client's requests"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options."""
    parser.add_argument("--session", required=True, type=Path, metavar="FILE", help="the session file")
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="where to listen")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each request")


def run(args: argparse.Namespace) -> int:
    """Serve one replay of the session; exit 0 if the client behaved as recorded."""
    host, _, port = args.listen.rpartition(":")
    try:
        session = load(args.session)
        server = ReplayServer(session, (host, int(port)), timeout=args.timeout).start()
    except (SessionError, OSError, ValueError) as error:
        print(f"replay-server: {error}", file=sys.stderr)
        return 2
    print(f"listening on {server.address[0]}:{server.address[1]}", flush=True)
    try:
        report = server.wait(timeout=args.timeout * (len(session.messages) + 1))
    except ReplayMismatch as mismatch:
        print(f"FAIL {mismatch}", flush=True)
        return 1
    except BackupProtoError as error:
        print(f"FAIL session {session.name!r}: {error}", flush=True)
        return 1
    print(f"PASS {report.session}: {report.messages} messages, {report.connections} connections", flush=True)
    return 0
