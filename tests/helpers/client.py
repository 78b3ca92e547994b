"""A small blocking test client: the channel around a ClientConnection (no hand-made bytes)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from backupproto.cksum import Cksum
from backupproto.crypto import CbcEncryptor, RsaKey, encrypted_size, public_key_der, unwrap_aes_key
from backupproto.dialect import V3, Dialect
from backupproto.engine import ClientConnection
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
    Register,
    Registered,
    Request,
    Response,
    SendFile,
    SendPublicKey,
)
from backupproto.io.channel import BYTES_ONLY, Channel, ConnectionLost, EngineChannel

TIMEOUT = 20.0
CHUNK = 1 << 20


class TestClient:
    """One connection to a server; each method sends a request and returns the response event."""

    __test__ = False  # not a pytest test class

    def __init__(self, address: tuple[str, int], timeout: float = TIMEOUT, *, dialect: Dialect = V3) -> None:
        self.dialect = dialect
        engine = ClientConnection(dialect)
        self.channel = EngineChannel.connect(address, engine, connect_timeout=timeout, timeout=timeout)
        self.client_id = bytes(16)
        self.aes_key: bytes | None = None

    def __enter__(self) -> TestClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def sock(self) -> socket.socket:
        """The connection's socket (for raw bytes)."""
        return self.channel.sock

    @property
    def conn(self) -> ClientConnection:
        """The engine."""
        return self.channel.engine

    def close(self) -> None:
        self.channel.close()

    def send(self, event: Request | FileChunk | FileEnd) -> None:
        self.channel.send(event)

    def receive(self) -> Response | ConnectionClosed:
        """The next response, or ConnectionClosed (also after a reset); RemoteProtocolError if malformed."""
        while True:
            try:
                event = self.channel.next_event()
            except ConnectionLost as lost:
                if self.channel.peer_closed or not isinstance(lost.error, ConnectionResetError):
                    raise
                self.channel.feed_end()
                continue
            assert isinstance(event, Response | ConnectionClosed), event
            return event

    def request(self, event: Request) -> Response | ConnectionClosed:
        self.send(event)
        return self.receive()

    # -- flows ------------------------------------------------------------------------------

    def register(self, name: str) -> Response | ConnectionClosed:
        response = self.request(Register(bytes(16), name))
        if isinstance(response, Registered):
            self.client_id = response.client_id
        return response

    def send_public_key(self, name: str, key: RsaKey) -> Response | ConnectionClosed:
        response = self.request(SendPublicKey(self.client_id, name, public_key_der(key)))
        if isinstance(response, AesKey):
            self.aes_key = unwrap_aes_key(key, response.encrypted_aes_key, key_size=self.dialect.aes_key_size)
        return response

    def reconnect(self, name: str, key: RsaKey) -> Response | ConnectionClosed:
        response = self.request(Reconnect(self.client_id, name))
        if isinstance(response, ReconnectApproved):
            self.aes_key = unwrap_aes_key(key, response.encrypted_aes_key, key_size=self.dialect.aes_key_size)
        return response

    def new_client(self, name: str, key: RsaKey) -> bytes:
        """Register and send the key; the AES key is kept. Returns the client id."""
        assert isinstance(self.register(name), Registered)
        assert isinstance(self.send_public_key(name, key), AesKey)
        return self.client_id

    def send_file(
        self,
        file_name: str,
        data: bytes | Path,
        *,
        key: bytes | None = None,
        orig_file_size: int | None = None,
    ) -> Response | ConnectionClosed:
        """Encrypt (streaming) and send one file; returns 2103 (or whatever came). In a packetised
        dialect `orig_file_size` (default: the true size) goes into every packet."""
        aes_key = key or self.aes_key
        assert aes_key is not None
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if self.dialect.packetised and orig_file_size is None:
            orig_file_size = size
        self.send(SendFile(self.client_id, encrypted_size(size), file_name, orig_file_size))
        encryptor = CbcEncryptor(aes_key)
        for chunk in _chunks(data):
            self.send(FileChunk(encryptor.update(chunk)))
        self.send(FileChunk(encryptor.finalize()))
        self.send(FileEnd())
        return self.receive()

    def backup(self, file_name: str, data: bytes) -> FileReceived:
        """Send a file, check the CRC, confirm with 1104; returns the 2103."""
        received = self.send_file(file_name, data)
        assert isinstance(received, FileReceived), received
        assert received.cksum == Cksum(data).value
        assert isinstance(self.request(CrcOk(self.client_id, file_name)), Acknowledged)
        return received

    def crc_ok(self, file_name: str) -> Response | ConnectionClosed:
        return self.request(CrcOk(self.client_id, file_name))

    def crc_retry(self, file_name: str) -> None:
        self.send(CrcRetry(self.client_id, file_name))

    def crc_give_up(self, file_name: str) -> Response | ConnectionClosed:
        return self.request(CrcGiveUp(self.client_id, file_name))


def _chunks(data: bytes | Path) -> Any:
    if isinstance(data, Path):
        with data.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                yield chunk
    else:
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]


def raw_exchange(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, half-close, and return all the server sends until it closes (bounded)."""
    with Channel.connect(address, BYTES_ONLY, connect_timeout=timeout, timeout=timeout) as channel:
        with contextlib.suppress(ConnectionLost):  # the server may have closed already
            channel.send_bytes(data)
            channel.shutdown_write()
        return read_until_closed(channel.sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """All bytes the server sends until it closes the connection (bounded by `timeout`)."""
    return Channel(sock, BYTES_ONLY, timeout=timeout).receive_all(timeout)
