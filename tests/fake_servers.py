"""Test doubles for the reference client: small v3 servers on 127.0.0.1, built on
backupproto.engine.ServerConnection, each misbehaving in one way the protocol knows.

Each connection is driven through `backupproto.io.channel.EngineChannel`.
`FakeServer` is a correct in-memory server (real RSA/AES/cksum) of any dialect (2022C: a
returning client's repeated SEND_PUBLIC_KEY with its stored key gets a fresh key, errors
are closes; spec/dialects.md 17.4); subclasses override one hook:
`CorruptCrcServer` (2103 carries a wrong cksum), `ErrorServer` (2107 to everything),
`FlakyServer` (2107 to the first N requests), `DenyReconnectServer` (2106 to every 1102),
`HangUpServer` (closes without answering), `SilentServer` (never answers),
`ResetFirstServer` (resets its first connection unread, as a server re-binding its listening
socket resets a connection that waited in the old one).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from backupproto.cksum import Cksum
from backupproto.crypto import CbcDecryptor, RsaKey, import_public_key, new_aes_key, wrap_aes_key
from backupproto.dialect import V3, Dialect
from backupproto.engine import ServerConnection
from backupproto.errors import ProtocolError
from backupproto.events import (
    Acknowledged,
    AesKey,
    ConnectionClosed,
    CrcGiveUp,
    CrcOk,
    CrcRetry,
    FileChunk,
    FileEnd,
    FileReceived,
    Reconnect,
    ReconnectApproved,
    ReconnectDenied,
    Register,
    Registered,
    RegistrationFailed,
    Request,
    Response,
    SendFile,
    SendPublicKey,
    ServerError,
)
from backupproto.io.channel import ChannelTimeout, EngineChannel
from backupproto.io.listener import ThreadedListener

SOCKET_TIMEOUT = 10.0
KEEP_CONTENT_UP_TO = 4 << 20


@dataclass
class FakeClient:
    """A registered client."""

    name: str
    public_key: RsaKey | None = None
    public_key_field: bytes = b""
    """The SEND_PUBLIC_KEY field as received (a returning 2022C client must send the same)."""


@dataclass
class StoredFile:
    """What the server kept of a file: its plaintext (if small), CRC, size, verdict."""

    content: bytes | None
    crc: int
    size: int
    verified: bool = False


@dataclass
class _Conn:
    """Per-connection state of the fake."""

    index: int
    aes_key: bytes | None = None
    decryptor: CbcDecryptor | None = None
    summer: Cksum = field(default_factory=Cksum)
    parts: list[bytes] = field(default_factory=list)
    upload: SendFile | None = None


class FakeServer:
    """A correct, in-memory v3 server. `log` lists (connection index, request code) in order."""

    def __init__(self, max_content_size: int | None = None, dialect: Dialect = V3) -> None:
        self.dialect = dialect
        self.clients: dict[bytes, FakeClient] = {}
        self.files: dict[tuple[bytes, str], StoredFile] = {}
        self.log: list[tuple[int, int]] = []
        self.max_content_size = max_content_size
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = ThreadedListener(("127.0.0.1", 0), self._serve)
        self.errors: list[BaseException] = []

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.address

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return self._listener.connections

    def __enter__(self) -> FakeServer:
        self._listener.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._listener.close(timeout=5)

    def codes(self, connection: int | None = None) -> list[int]:
        """The request codes received (on one connection, or all)."""
        return [code for index, code in self.log if connection is None or index == connection]

    def _serve(self, sock: socket.socket, index: int) -> None:
        engine = ServerConnection(self.dialect, max_content_size=self.max_content_size)
        channel = EngineChannel(sock, engine, timeout=SOCKET_TIMEOUT)
        conn = _Conn(index)
        with channel:
            try:
                self._converse(channel, conn)
            except (OSError, ProtocolError):
                with contextlib.suppress(Exception):
                    channel.send(ServerError())
            except BaseException as error:  # a bug in the fake: make the test see it
                self.errors.append(error)
                raise

    def _converse(self, channel: EngineChannel[ServerConnection], conn: _Conn) -> None:
        while not self._stop.is_set():
            event = channel.next_event()
            if isinstance(event, ConnectionClosed):
                return
            if isinstance(event, Request):
                with self._lock:
                    self.log.append((conn.index, int(event.code)))
            response = self.handle(event, conn)
            if response is None:
                continue
            channel.send(response)
            if isinstance(response, ServerError):
                return

    # --- behaviour ------------------------------------------------------------------------------

    def handle(self, event: Any, conn: _Conn) -> Response | None:
        """The response to one event (None: no response, as for 1105 and file chunks)."""
        if isinstance(event, Register):
            return self.on_register(event)
        if isinstance(event, SendPublicKey):
            return self.on_public_key(event, conn)
        if isinstance(event, Reconnect):
            return self.on_reconnect(event, conn)
        if isinstance(event, SendFile):
            assert conn.aes_key is not None
            conn.upload, conn.decryptor = event, CbcDecryptor(conn.aes_key)
            conn.summer, conn.parts = Cksum(), []
            return None
        if isinstance(event, FileChunk):
            assert conn.decryptor is not None and conn.upload is not None
            self._take(conn, conn.decryptor.update(event.data))
            return None
        if isinstance(event, FileEnd):
            return self.on_file(conn)
        if isinstance(event, CrcOk | CrcGiveUp):
            stored = self.files[(event.client_id, event.file_name)]
            stored.verified = isinstance(event, CrcOk)
            return Acknowledged(event.client_id)
        if isinstance(event, CrcRetry):
            return None
        raise AssertionError(f"unhandled {event!r}")

    def _take(self, conn: _Conn, plain: bytes) -> None:
        conn.summer.update(plain)
        if conn.summer.length <= KEEP_CONTENT_UP_TO:
            conn.parts.append(plain)

    def on_register(self, request: Register) -> Response:
        with self._lock:
            if any(client.name == request.name for client in self.clients.values()):
                return RegistrationFailed()
            client_id = uuid.uuid4().bytes
            self.clients[client_id] = FakeClient(request.name)
        return Registered(client_id)

    def on_public_key(self, request: SendPublicKey, conn: _Conn) -> Response:
        client = self.clients.get(request.client_id)
        if client is None or client.name != request.name:
            return ServerError()
        if client.public_key is not None:
            returning = not self.dialect.has_reconnect and request.public_key == client.public_key_field
            if not returning:
                return ServerError()
        else:
            client.public_key = import_public_key(request.public_key)
            client.public_key_field = request.public_key
        return AesKey(request.client_id, self._new_key(conn, client.public_key))

    def on_reconnect(self, request: Reconnect, conn: _Conn) -> Response:
        client = self.clients.get(request.client_id)
        if client is None or client.name != request.name or client.public_key is None:
            return ReconnectDenied(request.client_id)
        return ReconnectApproved(request.client_id, self._new_key(conn, client.public_key))

    def _new_key(self, conn: _Conn, public_key: RsaKey) -> bytes:
        conn.aes_key = new_aes_key(self.dialect.aes_key_size)
        return wrap_aes_key(public_key, conn.aes_key)

    def on_file(self, conn: _Conn) -> Response:
        assert conn.decryptor is not None and conn.upload is not None
        self._take(conn, conn.decryptor.finalize())
        upload = conn.upload
        size = conn.summer.length
        content = b"".join(conn.parts) if size <= KEEP_CONTENT_UP_TO else None
        self.files[(upload.client_id, upload.file_name)] = StoredFile(content, conn.summer.value, size)
        return FileReceived(
            upload.client_id, upload.content_size, upload.file_name, self.cksum_for(conn.summer.value)
        )

    def cksum_for(self, real: int) -> int:
        """The cksum put in 2103."""
        return real


class CorruptCrcServer(FakeServer):
    """Every 2103 carries a wrong cksum."""

    def cksum_for(self, real: int) -> int:
        return real ^ 0x5A5A5A5A


class ErrorServer(FakeServer):
    """2107 to every request, then closes."""

    def handle(self, event: Any, conn: _Conn) -> Response | None:
        return ServerError() if isinstance(event, Request) else None


class FlakyServer(FakeServer):
    """2107 to the first `failures` requests (counted over all connections), then correct."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures_left = failures

    def handle(self, event: Any, conn: _Conn) -> Response | None:
        if isinstance(event, Request) and self.failures_left > 0:
            self.failures_left -= 1
            return ServerError()
        return super().handle(event, conn)


class DenyReconnectServer(FakeServer):
    """2106 to every 1102, even for clients it knows."""

    def on_reconnect(self, request: Reconnect, conn: _Conn) -> Response:
        return ReconnectDenied(request.client_id)


class HangUpServer(FakeServer):
    """Reads the first request of each connection, then closes without a word."""

    def _converse(self, channel: EngineChannel[ServerConnection], conn: _Conn) -> None:
        channel.receive_bytes()


class ResetFirstServer(FakeServer):
    """Resets its first connection without reading it (RST), then serves like `FakeServer`."""

    def _serve(self, sock: socket.socket, index: int) -> None:
        if index == 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return
        super()._serve(sock, index)


class SilentServer(FakeServer):
    """Accepts, reads, never answers (until stopped)."""

    def _converse(self, channel: EngineChannel[ServerConnection], conn: _Conn) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(ChannelTimeout):
                if channel.receive_bytes(timeout=0.05) == b"":
                    return
