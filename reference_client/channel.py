"""A thin blocking-socket driver around backupproto's sans-I/O `ClientConnection`.

It writes what the engine builds, feeds what the socket reads, and turns every failure
into the client's errors: 2107 -> `ServerRespondedWithError`; refused, reset, closed or
timed out -> `ConnectionFailed`; bytes the protocol forbids -> `ProtocolFailure`.
"""

from __future__ import annotations

import socket
from typing import Final

from backupproto.engine import ClientConnection
from backupproto.errors import RemoteProtocolError
from backupproto.events import NEED_DATA, FileChunk, FileEnd, Request, Response, ServerError

from .config import Server
from .errors import ConnectionFailed, ProtocolFailure, ServerRespondedWithError

RECEIVE_SIZE: Final = 64 * 1024
DRAIN_TIMEOUT: Final = 2.0
"""After a failed write: how long to wait for the 2107 that may explain it."""


class Channel:
    """One TCP connection to the server, one request at a time."""

    def __init__(self, sock: socket.socket, server: Server, read_timeout: float) -> None:
        self.sock = sock
        self.server = server
        self.read_timeout = read_timeout
        self.connection = ClientConnection()
        sock.settimeout(read_timeout)

    @classmethod
    def open(cls, server: Server, *, connect_timeout: float, read_timeout: float) -> Channel:
        """Connect; ConnectionFailed if the server cannot be reached within `connect_timeout`."""
        try:
            sock = socket.create_connection((server.host, server.port), timeout=connect_timeout)
        except TimeoutError:
            raise ConnectionFailed(
                f"cannot connect to {server}: no answer within {connect_timeout:g} s (connect timeout)"
            ) from None
        except OSError as error:
            raise ConnectionFailed(f"cannot connect to {server}: {_reason(error)}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, server, read_timeout)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, event: Request) -> Response:
        """Send a request and wait for its response (2107 raises)."""
        self.send(event)
        return self.receive()

    def send(self, event: Request | FileChunk | FileEnd) -> None:
        """Send a request without waiting (1105, a 1103's header and content)."""
        data = self.connection.send(event)
        if not data:
            return
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise ConnectionFailed(
                f"{self.server} accepted no data for {self.read_timeout:g} s (read timeout)"
            ) from None
        except OSError as error:
            self._explain_write_failure(error)

    def receive(self, timeout: float | None = None) -> Response:
        """The next response; raises on 2107, on a closed connection, a timeout or bad bytes.

        `timeout` replaces the read timeout for this wait (a large file's 2103 comes late)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            return self._receive(timeout or self.read_timeout)
        finally:
            if timeout is not None:
                self.sock.settimeout(self.read_timeout)

    def _receive(self, timeout: float) -> Response:
        connection = self.connection
        while True:
            try:
                event = connection.next_event()
            except RemoteProtocolError as error:
                raise ProtocolFailure(f"the server broke the protocol: {error}") from None
            if isinstance(event, ServerError):
                raise ServerRespondedWithError("the server answered 2107 (general server error)")
            if isinstance(event, Response):
                return event
            if event is not NEED_DATA:
                raise ProtocolFailure(f"the server closed the connection instead of answering ({event})")
            connection.receive_data(self._recv(timeout))

    def _recv(self, timeout: float) -> bytes:
        try:
            return self.sock.recv(RECEIVE_SIZE)
        except TimeoutError:
            raise ConnectionFailed(
                f"no response from {self.server} within {timeout:g} s (read timeout)"
            ) from None
        except OSError as error:
            raise ConnectionFailed(f"connection to {self.server} lost: {_reason(error)}") from None

    def _explain_write_failure(self, error: OSError) -> None:
        """A server that refuses a request mid-way sends 2107 and closes: report that if so."""
        try:
            self.sock.settimeout(DRAIN_TIMEOUT)
            while True:
                data = self.sock.recv(RECEIVE_SIZE)
                self.connection.receive_data(data)
                if not data:
                    break
        except OSError:
            pass
        try:
            while (event := self.connection.next_event()) is not NEED_DATA:
                if isinstance(event, ServerError):
                    raise ServerRespondedWithError("the server answered 2107 (general server error)")
                if not isinstance(event, Response):
                    break
        except RemoteProtocolError:
            pass
        raise ConnectionFailed(f"connection to {self.server} lost while sending: {_reason(error)}") from None


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
