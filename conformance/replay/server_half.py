"""The server half of a session played to a client, checking every request (spec/sessions.md 7)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from backupproto import crypto
from backupproto.cksum import Cksum
from backupproto.dialect import RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.schemas import schemas_for
from backupproto.sessions import Direction, Message, Session

from .peer import Peer
from .report import ReplayMismatch, ReplayReport

KEY_RESPONSES = (ResponseCode.AES_KEY, ResponseCode.RECONNECT_APPROVED)


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
        self.schemas = schemas_for(session.dialect)
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
                peer = Peer.over(sock, Direction.REQUEST, self.timeout, self.schemas)
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

    def _expect(self, peer: Peer, message: Message) -> None:
        expected: Any = "the client closes the connection" if message.close else message.decoded
        sink, first = self._file_sink(peer, message)
        actual = peer.receive_like(
            self.session.name, message, expected or message.raw.hex(), "client", on_body=sink.update
        )
        if actual is None:
            return
        assert message.decoded is not None
        want, got = message.decoded, actual
        if got["code"] != want["code"]:
            self._fail(message, f"request code {got['code']} instead of {want['code']}", want, got)
        if want["code"] != self.schemas.wire_code(RequestCode.REGISTER) and got["client_id"] != self._bind(
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
        is_file = want["code"] == self.schemas.wire_code(RequestCode.SEND_FILE)
        if message.content is not None and is_file and self._last_packet(message):
            peer.file = None
            self._check_content(first, sink)

    def _file_sink(self, peer: Peer, message: Message) -> tuple[_PlainSink, Message]:
        """Where a SEND_FILE's content is decrypted, and the message holding its file's plaintext:
        its own, or for a later 2024 packet those of the file's packet 1 (kept on `peer.file`)."""
        fields = {} if message.decoded is None else message.decoded["fields"]
        if fields.get("packet_number", 1) > 1 and isinstance(peer.file, tuple):
            sink, first = peer.file
            return sink, first
        sink = _PlainSink(peer.aes_key)
        if fields.get("total_packets", 1) > 1:
            peer.file = (sink, message)
        return sink, message

    @staticmethod
    def _last_packet(message: Message) -> bool:
        assert message.decoded is not None
        fields = message.decoded["fields"]
        return bool(fields.get("packet_number", 1) == fields.get("total_packets", 1))

    def _check_content(self, message: Message, sink: _PlainSink) -> None:
        recorded = message.content
        assert recorded is not None
        got = sink.result()
        if isinstance(got, str):
            self._fail(
                message,
                got,
                f"AES-{self.session.dialect.aes_key_size * 8}-CBC under the session key, zero IV, PKCS#7",
                "undecryptable file",
            )
        if recorded.plaintext is not None:
            want = {"size": recorded.plaintext.size, "cksum": recorded.plaintext.cksum}
            if want != got:
                self._fail(message, "the file's plaintext differs from the recorded one", want, got)

    def _answer(self, peer: Peer, message: Message) -> None:
        if peer.send_as_recorded(message):
            return
        decoded = message.decoded
        assert decoded is not None
        code = self.schemas.response_role(decoded["code"])
        assert code is not None  # the session file was validated against its dialect
        fields = dict(decoded["fields"])
        if "client_id" in fields:
            recorded_id = str(fields["client_id"])
            fields["client_id"] = bytes.fromhex(self.bound.get(f"id:{recorded_id}", recorded_id))
        if "file_name" in fields:
            fields["file_name"] = self.bound.get(f"file_name:{fields['file_name']}", fields["file_name"])
        if code in KEY_RESPONSES:
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
            peer.aes_key = crypto.new_aes_key(self.session.dialect.aes_key_size)
            fields["encrypted_aes_key"] = crypto.wrap_aes_key(public, peer.aes_key)
        peer.send(self.schemas.build_response(code, fields, decoded["version"]))
