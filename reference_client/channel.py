"""The reference client's connection: backupproto's blocking channel around a `ClientConnection`
of the client's dialect.

It turns every failure into the client's errors: the dialect's server error (2107's role), or
a close where a response is due (2022C's only error signal) -> `ServerRespondedWithError`; another dialect's
response code -> `ForeignDialect`; refused, reset, closed or a connect timeout -> `ConnectionFailed`;
no response (or no byte taken) for the response timeout -> `TimedOut`; bytes the protocol
forbids -> `ProtocolFailure`.
"""

from __future__ import annotations

from typing import Any, Final

from backupproto.dialect import V3, Dialect, RequestCode
from backupproto.engine import ClientConnection
from backupproto.errors import ErrorKind, RemoteProtocolError
from backupproto.events import NEED_DATA, FileChunk, FileEnd, Request, Response, ServerError
from backupproto.io.channel import ChannelTimeout, ConnectionLost, EngineChannel

from .config import Server
from .errors import ConnectionFailed, ForeignDialect, ProtocolFailure, ServerRespondedWithError, TimedOut
from .mismatch import foreign_code, run_with

DRAIN_TIMEOUT: Final = 2.0
"""After a failed write: how long to wait for the server error that may explain it."""


class _HeaderTap:
    """The engine, keeping the first response-header bytes received after each request we send:
    the code of an answer the engine refuses as unknown (another dialect's) is read from them."""

    def __init__(self, engine: ClientConnection) -> None:
        self.engine = engine
        self.header = bytearray()

    def receive_data(self, data: bytes) -> None:
        missing = self.engine.schemas.response_header_size - len(self.header)
        if missing > 0:
            self.header += data[:missing]
        self.engine.receive_data(data)

    def next_event(self) -> Any:
        return self.engine.next_event()

    def send(self, event: Request | FileChunk | FileEnd) -> bytes:
        if isinstance(event, Request):
            self.header.clear()
        return self.engine.send(event)

    def answer_code(self) -> int | None:
        """The code field of the answer's header, read without validation (None: incomplete)."""
        schemas = self.engine.schemas
        if len(self.header) < schemas.response_header_size:
            return None
        return int(schemas.response_header.parse(bytes(self.header))["code"])


class Channel:
    """One TCP connection to the server, one request at a time."""

    def __init__(self, channel: EngineChannel[_HeaderTap], server: Server) -> None:
        self.channel = channel
        self.server = server
        self._last_request: RequestCode | None = None
        self._answered = 0
        """Responses received on this connection (0: the first request is still unanswered)."""

    @property
    def connection(self) -> ClientConnection:
        """The sans-I/O engine."""
        return self.channel.engine.engine

    @property
    def dialect(self) -> Dialect:
        """The dialect this connection speaks."""
        return self.connection.schemas.dialect

    @property
    def read_timeout(self) -> float:
        """Seconds a response (or a write) may take: the response timeout of spec 2.4."""
        assert self.channel.timeout is not None
        return self.channel.timeout

    @classmethod
    def open(
        cls, server: Server, *, connect_timeout: float, read_timeout: float, dialect: Dialect = V3
    ) -> Channel:
        """Connect; ConnectionFailed if the server cannot be reached within `connect_timeout`."""
        try:
            channel = EngineChannel.connect(
                (server.host, server.port),
                _HeaderTap(ClientConnection(dialect)),
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
        """Send a request and wait for its response (a server error raises)."""
        self.send(event)
        return self.receive()

    def send(self, event: Request | FileChunk | FileEnd) -> None:
        """Send a request without waiting (1105, a 1103's header and content)."""
        if isinstance(event, Request):
            self._last_request = event.code
        try:
            self.channel.send(event)
        except ChannelTimeout:
            raise TimedOut(
                f"{self.server} accepted no data for {self.read_timeout:g} s (response timeout)"
            ) from None
        except ConnectionLost as error:
            self._explain_write_failure(error)

    def receive(self, timeout: float | None = None) -> Response:
        """The next response; raises on a server error, a closed connection, a timeout or bad bytes.

        `timeout` replaces the response timeout for this wait (a large file's 2103 comes late)."""
        wait = timeout or self.read_timeout
        try:
            event = self.channel.next_event(wait)
        except RemoteProtocolError as error:
            raise self._refusal(error) from None
        except ChannelTimeout:
            raise TimedOut(f"no response from {self.server} within {wait:g} s (response timeout)") from None
        except ConnectionLost as error:
            raise ConnectionFailed(f"connection to {self.server} lost: {error.reason}") from None
        if isinstance(event, ServerError):
            raise self._server_error(self.connection.schemas.wire_code(event.code))
        if isinstance(event, Response):
            self._answered += 1
            return event
        raise ProtocolFailure(f"the server closed the connection instead of answering ({event})")

    def _server_error(self, wire: int | None) -> ServerRespondedWithError:
        """`wire`: the error code received (None: a close)."""
        if wire is None:
            text = "the server closed the connection instead of answering"
            if not self.dialect.has_server_error:
                text += f" ({self.dialect.name}'s error signal: it has no error code)"
        else:
            text = f"the server answered {wire} (general server error)"
        return ServerRespondedWithError(text, wire, self._first_request())

    def _first_request(self) -> RequestCode | None:
        """The request just sent when it is the first of this connection (None after an answer)."""
        return self._last_request if not self._answered else None

    def _refusal(self, error: RemoteProtocolError) -> Exception:
        """What an answer the engine refused means: a close, a foreign dialect, or bad bytes."""
        if error.kind is ErrorKind.CONNECTION_CLOSED:  # an error like the server-error code (8.4)
            return self._server_error(None)
        code = self.channel.engine.answer_code() if error.kind is ErrorKind.UNKNOWN_CODE else None
        foreign = None if code is None else foreign_code(self.dialect, code, self._last_request)
        if foreign is not None and foreign.is_server_error:
            reading = f"; not a {self.dialect.name} code, taken as an error like a close"
            return ServerRespondedWithError(f"{foreign.describe()}{reading}", code, self._first_request())
        if foreign is not None:
            return ForeignDialect(f"{foreign.describe()}: {run_with(foreign.likely)}")
        return ProtocolFailure(f"the server broke the protocol: {error}")

    def _explain_write_failure(self, error: ConnectionLost) -> None:
        """A server that refuses a request mid-way sends its error and closes: report that if so."""
        try:
            while data := self.channel.receive_bytes(DRAIN_TIMEOUT):
                self.channel.engine.receive_data(data)
        except (ChannelTimeout, ConnectionLost):
            pass
        self.channel.feed_end()
        try:
            while (event := self.connection.next_event()) is not NEED_DATA:
                if isinstance(event, ServerError):
                    raise self._server_error(self.connection.schemas.wire_code(event.code))
                if not isinstance(event, Response):
                    break
        except RemoteProtocolError:
            pass
        raise ConnectionFailed(f"connection to {self.server} lost while sending: {error.reason}") from None
