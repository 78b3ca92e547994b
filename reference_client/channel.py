"""The reference client's connection: backupproto's blocking channel around a `ClientConnection`.

It turns every failure into the client's errors: 2107 -> `ServerRespondedWithError`;
refused, reset, closed or timed out -> `ConnectionFailed`; bytes the protocol forbids ->
`ProtocolFailure`.
"""

from __future__ import annotations

from typing import Final

from backupproto.engine import ClientConnection
from backupproto.errors import RemoteProtocolError
from backupproto.events import NEED_DATA, FileChunk, FileEnd, Request, Response, ServerError
from backupproto.io.channel import ChannelTimeout, ConnectionLost, EngineChannel

from .config import Server
from .errors import ConnectionFailed, ProtocolFailure, ServerRespondedWithError

DRAIN_TIMEOUT: Final = 2.0
"""After a failed write: how long to wait for the 2107 that may explain it."""


class Channel:
    """One TCP connection to the server, one request at a time."""

    def __init__(self, channel: EngineChannel[ClientConnection], server: Server) -> None:
        self.channel = channel
        self.server = server

    @property
    def connection(self) -> ClientConnection:
        """The sans-I/O engine."""
        return self.channel.engine

    @property
    def read_timeout(self) -> float:
        """Seconds a read or a write may wait."""
        assert self.channel.timeout is not None
        return self.channel.timeout

    @classmethod
    def open(cls, server: Server, *, connect_timeout: float, read_timeout: float) -> Channel:
        """Connect; ConnectionFailed if the server cannot be reached within `connect_timeout`."""
        try:
            channel = EngineChannel.connect(
                (server.host, server.port),
                ClientConnection(),
                connect_timeout=connect_timeout,
                timeout=read_timeout,
            )
        except ChannelTimeout:
            raise ConnectionFailed(
                f"cannot connect to {server}: no answer within {connect_timeout:g} s (connect timeout)"
            ) from None
        except ConnectionLost as error:
            raise ConnectionFailed(f"cannot connect to {server}: {error.reason}") from None
        return cls(channel, server)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.channel.close()

    def request(self, event: Request) -> Response:
        """Send a request and wait for its response (2107 raises)."""
        self.send(event)
        return self.receive()

    def send(self, event: Request | FileChunk | FileEnd) -> None:
        """Send a request without waiting (1105, a 1103's header and content)."""
        try:
            self.channel.send(event)
        except ChannelTimeout:
            raise ConnectionFailed(
                f"{self.server} accepted no data for {self.read_timeout:g} s (read timeout)"
            ) from None
        except ConnectionLost as error:
            self._explain_write_failure(error)

    def receive(self, timeout: float | None = None) -> Response:
        """The next response; raises on 2107, on a closed connection, a timeout or bad bytes.

        `timeout` replaces the read timeout for this wait (a large file's 2103 comes late)."""
        wait = timeout or self.read_timeout
        try:
            event = self.channel.next_event(wait)
        except RemoteProtocolError as error:
            raise ProtocolFailure(f"the server broke the protocol: {error}") from None
        except ChannelTimeout:
            raise ConnectionFailed(
                f"no response from {self.server} within {wait:g} s (read timeout)"
            ) from None
        except ConnectionLost as error:
            raise ConnectionFailed(f"connection to {self.server} lost: {error.reason}") from None
        if isinstance(event, ServerError):
            raise ServerRespondedWithError("the server answered 2107 (general server error)")
        if isinstance(event, Response):
            return event
        raise ProtocolFailure(f"the server closed the connection instead of answering ({event})")

    def _explain_write_failure(self, error: ConnectionLost) -> None:
        """A server that refuses a request mid-way sends 2107 and closes: report that if so."""
        try:
            while data := self.channel.receive_bytes(DRAIN_TIMEOUT):
                self.connection.receive_data(data)
        except (ChannelTimeout, ConnectionLost):
            pass
        self.channel.feed_end()
        try:
            while (event := self.connection.next_event()) is not NEED_DATA:
                if isinstance(event, ServerError):
                    raise ServerRespondedWithError("the server answered 2107 (general server error)")
                if not isinstance(event, Response):
                    break
        except RemoteProtocolError:
            pass
        raise ConnectionFailed(f"connection to {self.server} lost while sending: {error.reason}") from None
