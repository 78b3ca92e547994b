"""Sans-I/O connections: bytes in, events out; events in, bytes out (in the manner of h11).

`ServerConnection` is the server's side of one TCP connection, `ClientConnection` the
client's. Neither touches a socket, a file or a clock: the caller feeds received bytes to
`receive_data` (``b""`` when the peer closed), pulls events with `next_event`, and turns
the events it wants to send into bytes with `send`. A 1103's content is delivered and sent
as `FileChunk` events, so a file of any size passes in constant memory.

Both are built from a `Dialect` (default 2023A): its wire codes, layouts and messages. In
a packetised dialect (2024A/C) the engines number, split and check the packets of a file
(`backupproto.packets`) while the caller still sees one `SendFile`, its `FileChunk`s and
one `FileEnd`. In a dialect without a server-error code (2022C) `send(ServerError())`
returns no bytes: the caller closes instead.

`next_event` returns `NEED_DATA` when more bytes must be fed, and (server side) `PAUSED`
while a request awaits our own response: send the response, then ask again.

Errors: what the peer did wrong raises `RemoteProtocolError` (a server answers it with
`ServerError()` and closes); what the caller did wrong raises `LocalProtocolError`. `send`
builds the bytes first and only then advances the state, so a message that cannot be built
changes nothing. Either kind of error is latched: every later `next_event` raises it again,
and the only message a server may still send is `ServerError()`.

Bytes that pile up without being consumed (a peer talking while we owe it a response) are
bounded by `max_buffer_size`; a 1103's content streams through and does not count.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .conversation import Conversation
from .crypto import encrypted_size
from .dialect import V3, Dialect, RequestCode, ResponseCode
from .errors import ErrorKind, LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    PAUSED,
    REQUEST_EVENTS,
    RESPONSE_EVENTS,
    ConnectionClosed,
    Event,
    FileChunk,
    FileEnd,
    Request,
    Response,
    SendFile,
    ServerError,
    _NeedData,
    _Paused,
)
from .framing import buffered_payload_size
from .packets import PacketReceiver, PacketSender
from .schemas import schemas_for
from .states import State


def event_fields(event: Request | Response) -> dict[str, Any]:
    """The payload fields of an event, by schema field name (a request's client_id is a header field).

    Fields of other dialects left at None (SendFile's orig_file_size outside 2024) are omitted.
    """
    values = {field.name: getattr(event, field.name) for field in fields(event)}
    if isinstance(event, Request):
        del values["client_id"]
    if isinstance(event, SendFile) and event.orig_file_size is None:
        del values["orig_file_size"]
    return values


class _InputBuffer:
    """Received bytes not yet consumed; taken from the front by moving a read position (no shifting)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def append(self, data: bytes) -> None:
        if self._start and self._start * 2 >= len(self._data):
            del self._data[: self._start]  # compact: amortised linear
            self._start = 0
        self._data += data

    def prepend(self, data: bytes | memoryview) -> None:
        """Put `data` back in front (what was handed out too early)."""
        if not len(self):
            self._data, self._start = bytearray(data), 0
        else:
            self._data[: self._start] = data
            self._start = 0

    def peek(self, size: int) -> bytes:
        return bytes(self._data[self._start : self._start + size])

    def take(self, size: int) -> bytes:
        chunk = self.peek(size)
        self._start += len(chunk)
        return chunk

    def clear(self) -> None:
        self._data.clear()
        self._start = 0


DEFAULT_MAX_BUFFER_SIZE = 65536
"""Bytes a connection keeps unconsumed by default: far more than the largest message's header part."""


class _Connection:
    """What both sides share: the input buffer, the conversation, the error latch."""

    def __init__(self, dialect: Dialect, max_buffer_size: int) -> None:
        self.schemas = schemas_for(dialect)
        self.conversation = Conversation(self.schemas)
        self.max_buffer_size = max_buffer_size
        self._buffer = _InputBuffer()
        self._closed_by_peer = False
        self._error: ProtocolError | None = None

    @property
    def state(self) -> State:
        """The conversation's state (spec 8.1)."""
        return self.conversation.state

    @property
    def at_message_boundary(self) -> bool:
        """True when no byte of a next message has arrived: the peer is idle, not stalled."""
        return not len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self._closed_by_peer = True
            return
        if self._closed_by_peer:
            raise LocalProtocolError(ErrorKind.CONNECTION_CLOSED, "data fed after the end of stream")
        if self._error is not None:
            return  # nothing more is read from a connection in error
        self._store(data)
        if self._bounded() and len(self._buffer) > self.max_buffer_size:
            self._fail(
                RemoteProtocolError(
                    ErrorKind.BUFFER_FULL,
                    f"{len(self._buffer)} bytes received {self._bounded_while()}",
                    expected=f"at most {self.max_buffer_size} bytes (max_buffer_size)",
                )
            )
            self._buffer.clear()

    def _bounded(self) -> bool:
        """True when every byte in the buffer counts against `max_buffer_size`."""
        return True

    def _bounded_while(self) -> str:
        return "that no response consumes"

    def _store(self, data: bytes) -> None:
        self._buffer.append(data)

    def _fail(self, error: ProtocolError) -> ProtocolError:
        """Latch `error` (the first one stays) and return it for raising."""
        if self._error is None:
            self._error = error
        return error

    def _check_no_local_error(self, what: str) -> None:
        if isinstance(self._error, LocalProtocolError):
            raise LocalProtocolError(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{what} after an earlier local error ({self._error.detail})",
                expected="nothing more on this connection"
                if isinstance(self, ClientConnection)
                else f"{self._way_out()} only",
            )

    def _way_out(self) -> str:
        """How a server ends a conversation in error, in this dialect."""
        code = self.schemas.dialect.responses.get(ResponseCode.SERVER_ERROR)
        return (
            "ServerError() (a close: the dialect has no error code)"
            if code is None
            else f"SERVER_ERROR ({code})"
        )

    def _take(self, size: int) -> bytes:
        return self._buffer.take(size)

    def _incomplete(self, needed: int, what: str) -> _NeedData:
        """NEED_DATA, or a truncation error if the peer has closed."""
        if self._closed_by_peer:
            raise self._fail(
                RemoteProtocolError(
                    ErrorKind.TRUNCATED,
                    f"connection closed {len(self._buffer)} bytes into {what}",
                    offset=len(self._buffer),
                    expected=f"{needed} bytes",
                )
            )
        return NEED_DATA


class ServerConnection(_Connection):
    """The server's side of one connection."""

    def __init__(
        self,
        dialect: Dialect = V3,
        *,
        max_content_size: int | None = None,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    ) -> None:
        super().__init__(dialect, max_buffer_size)
        limit = self.schemas.max_content_size
        self.max_content_size = limit if max_content_size is None else min(max_content_size, limit)
        self._header: Any = None
        self._content_left: int | None = None
        self._packets: PacketReceiver | None = None
        """The packets of a file in transit (packetised dialects), between its first and last packet."""
        self._direct: bytes | None = None
        """Received file content handed on as it came, without copying through the buffer."""

    @property
    def at_message_boundary(self) -> bool:
        """True when no byte of a next request has arrived (and no file content is due)."""
        return not len(self._buffer) and not self.receiving_content

    def _bounded(self) -> bool:
        # Outside "paused" the caller is consuming: what waits is one incomplete message,
        # or content that streams through. While paused nothing is consumed.
        return self._content_left is None and self.conversation.pending is not None

    def _bounded_while(self) -> str:
        pending = self.conversation.pending
        assert pending is not None
        return f"while {pending.code.name} awaits our response"

    def _store(self, data: bytes) -> None:
        if self._content_left and self._direct is None and not len(self._buffer):
            self._direct = data if isinstance(data, bytes) else bytes(data)
        else:
            self._buffer.append(data)

    @property
    def receiving_content(self) -> bool:
        """True while a 1103's content is still arriving (in a packetised dialect: any packet of it)."""
        return self._content_left is not None or self._packets is not None

    def next_event(self) -> Event | _NeedData | _Paused:
        """The next request, file chunk or end of the conversation; NEED_DATA; or PAUSED.

        PAUSED: a request awaits our response; `send` it, then call again.
        """
        if self._error is not None:
            raise self._error
        if self.conversation.state is State.CLOSED:
            return ConnectionClosed()
        try:
            if self._content_left is not None:
                return self._next_content()
            if self.conversation.pending is not None:
                return PAUSED
            return self._next_request()
        except RemoteProtocolError as error:
            raise self._fail(error) from None

    def _next_content(self) -> Event | _NeedData:
        left = self._content_left
        assert left is not None
        if left == 0:
            self._content_left = None
            if self._packets is not None:
                if not self._packets.packet_done():
                    return self._next_request()  # the next packet's start
                self._packets = None
            request = self.conversation.file
            assert request is not None
            self.conversation.request_sent(request)
            return FileEnd()
        if self._direct is not None:
            chunk, self._direct = self._direct, None
            if len(chunk) > left:
                self._buffer.prepend(memoryview(chunk)[left:])
                chunk = chunk[:left]
        elif not len(self._buffer):
            return self._incomplete(left, "the file content")
        else:
            chunk = self._take(left)
        self._content_left = left - len(chunk)
        return FileChunk(chunk)

    def _next_request(self) -> Event | _NeedData:
        schemas = self.schemas
        header_size = schemas.request_header_size
        if self._header is None:
            if len(self._buffer) < header_size:
                if self._closed_by_peer and not len(self._buffer):
                    if self._packets is not None:
                        raise self._packets.closed()
                    return ConnectionClosed()
                return self._incomplete(header_size, "a request header")
            header = schemas.parse_request_header(self._buffer.peek(header_size))
            self._check_header(header)
            self._header = header
        header = self._header
        is_file = header.code is RequestCode.SEND_FILE
        needed = buffered_payload_size(schemas, header.code, header.payload_size)
        if len(self._buffer) < header_size + needed:
            return self._incomplete(header_size + needed, f"a {header.code.name} request")
        self._take(header_size)
        payload = self._take(needed)
        self._header = None
        if not is_file:
            values = schemas.parse_payload(
                schemas.requests[header.code], payload, header_size, header.client_id
            )
            request = REQUEST_EVENTS[header.code](client_id=header.client_id, **values)
            self.conversation.check_request(request, RemoteProtocolError)
            self.conversation.request_sent(request)
            return request
        values = schemas.parse_send_file_prefix(
            payload, header.payload_size, header_size, self.max_content_size, header.client_id
        )
        packet_content = header.payload_size - schemas.send_file_prefix_size
        if self._packets is not None:  # a later packet of the file in transit
            self._packets.next_packet(values, packet_content)
            self._content_left = packet_content
            return self._next_content()
        file = SendFile(
            header.client_id, values["content_size"], values["file_name"], values.get("orig_file_size")
        )
        self.conversation.check_request(file, RemoteProtocolError)
        if schemas.dialect.packetised:
            self._packets = PacketReceiver(schemas, values, packet_content)
            self._content_left = packet_content
        else:
            self._content_left = file.content_size
        self.conversation.file = file
        return file

    def _check_header(self, header: Any) -> None:
        if self._packets is not None and header.code is not RequestCode.SEND_FILE:
            raise self._packets.interrupted(header.code)
        limit = self.schemas.send_file_prefix_size + self.max_content_size
        if header.code is RequestCode.SEND_FILE and header.payload_size > limit:
            raise RemoteProtocolError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"payload_size {header.payload_size} exceeds this server's limit",
                field="payload_size",
                offset=self.schemas.offset(RequestCode.SEND_FILE, "payload_size"),
                expected=f"at most {limit}",
            )
        # turn and identity are checked before the payload is read
        self.conversation.check_header(header.code, header.client_id, RemoteProtocolError)

    def send(self, event: Response) -> bytes:
        """The bytes of a response; `ServerError()` is allowed at any time and ends the conversation.

        The bytes are built before the state advances: a response that is not allowed now or
        cannot be built raises `LocalProtocolError`, changes nothing, and is latched.

        In a dialect without a server-error code (2022C) `ServerError()` still ends the
        conversation but its bytes are empty: the server signals the failure by closing.
        """
        if self.conversation.state is State.CLOSED:
            raise LocalProtocolError(ErrorKind.CONNECTION_CLOSED, "the conversation is over")
        if isinstance(event, ServerError):
            data = (
                self.schemas.build_response(event.code, {}) if self.schemas.dialect.has_server_error else b""
            )
            self.conversation.response_sent(event, State.CLOSED)
            self._content_left = self._direct = self._packets = None
            self._error = None
            return data
        self._check_no_local_error(f"{event.code.name}")
        try:
            following = self._check_response(event)
            data = self.schemas.build_response(event.code, event_fields(event))
        except LocalProtocolError as error:
            raise self._fail(error) from None
        self.conversation.response_sent(event, following)
        return data

    def _check_response(self, event: Response) -> State:
        if self._error is not None:
            raise LocalProtocolError(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{event.code.name} after a protocol error",
                expected=self._way_out(),
            )
        if self._content_left is not None:
            raise LocalProtocolError(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{event.code.name} before the file content was received",
                expected="the end of the content first",
            )
        return self.conversation.check_response(event, LocalProtocolError)


class ClientConnection(_Connection):
    """The client's side of one connection."""

    def __init__(self, dialect: Dialect = V3, *, max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE) -> None:
        super().__init__(dialect, max_buffer_size)
        self._content_left: int | None = None
        self._packets: PacketSender | None = None

    def send(self, event: Request | FileChunk | FileEnd) -> bytes:
        """The bytes of a request, of a piece of file content, or b"" at the content's end.

        Built before the state advances; a `LocalProtocolError` changes nothing and is latched.
        """
        if self.conversation.state is State.CLOSED:
            raise LocalProtocolError(ErrorKind.CONNECTION_CLOSED, "the conversation is over")
        self._check_no_local_error(type(event).__name__)
        try:
            if isinstance(event, FileChunk | FileEnd):
                return self._send_content(event)
            return self._send_request(event)
        except LocalProtocolError as error:
            raise self._fail(error) from None

    def _send_request(self, event: Request) -> bytes:
        if self._content_left is not None:
            raise LocalProtocolError(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{event.code.name} while {self._content_left} content bytes are still due",
                expected="FileChunk events, then FileEnd",
            )
        self.conversation.check_request(event, LocalProtocolError)
        schemas = self.schemas
        if isinstance(event, SendFile):
            self._check_content_size(event.content_size)
            packet_size = schemas.dialect.packet_size
            if packet_size is None:
                data = schemas.build_send_file_start(event.client_id, event_fields(event))
            else:
                self._check_orig_file_size(event)
                sender = PacketSender(schemas, event.client_id, event_fields(event), packet_size)
                data = sender.start()
                self._packets = sender
            self.conversation.file = event
            self._content_left = event.content_size
            return data
        data = schemas.build_request(event.code, event.client_id, event_fields(event))
        self.conversation.request_sent(event)
        return data

    def _check_content_size(self, size: int) -> None:
        block = self.schemas.dialect.aes_block_size
        if size == 0 or size % block or size > self.schemas.max_content_size:
            raise LocalProtocolError(
                ErrorKind.BAD_CONTENT_SIZE,
                f"content_size {size}",
                field="content_size",
                expected=f"a non-zero multiple of {block} up to {self.schemas.max_content_size}",
            )

    def _check_orig_file_size(self, event: SendFile) -> None:
        original, block = event.orig_file_size, self.schemas.dialect.aes_block_size
        if original is None or encrypted_size(original) != event.content_size:
            raise LocalProtocolError(
                ErrorKind.BAD_CONTENT_SIZE,
                f"orig_file_size {original} with content_size {event.content_size}",
                field="orig_file_size",
                expected=f"the plaintext size, {event.content_size - block}..{event.content_size - 1} "
                f"(sent in every {self.schemas.dialect.name} packet)",
            )

    def _send_content(self, event: FileChunk | FileEnd) -> bytes:
        left = self._content_left
        if left is None:
            raise LocalProtocolError(ErrorKind.UNEXPECTED_MESSAGE, "file content without a SendFile")
        if isinstance(event, FileChunk):
            if len(event.data) > left:
                raise LocalProtocolError(
                    ErrorKind.PAYLOAD_SIZE_MISMATCH,
                    f"{len(event.data)} content bytes sent with {left} left",
                    field="content",
                    expected=f"at most {left} bytes",
                )
            self._content_left = left - len(event.data)
            return event.data if self._packets is None else self._packets.content(event.data)
        if left:
            raise LocalProtocolError(
                ErrorKind.PAYLOAD_SIZE_MISMATCH,
                f"content ended with {left} bytes still due",
                field="content",
                expected="exactly content_size bytes",
            )
        self._content_left = self._packets = None
        request = self.conversation.file
        assert request is not None
        self.conversation.request_sent(request)
        return b""

    def next_event(self) -> Event | _NeedData:
        """The next response, ConnectionClosed, or NEED_DATA."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_response()
        except RemoteProtocolError as error:
            raise self._fail(error) from None

    def _next_response(self) -> Event | _NeedData:
        schemas = self.schemas
        size = schemas.response_header_size
        if len(self._buffer) < size:
            if self._closed_by_peer and not len(self._buffer):
                return self._closed()
            return self._incomplete(size, "a response header")
        header = schemas.parse_response_header(self._buffer.peek(size))
        if len(self._buffer) < size + header.payload_size:
            return self._incomplete(size + header.payload_size, f"a {header.code.name} response")
        self._take(size)
        payload = self._take(header.payload_size)
        values = schemas.parse_payload(schemas.responses[header.code], payload, size)
        response = RESPONSE_EVENTS[header.code](**values)
        following = self.conversation.check_response(response, RemoteProtocolError)
        self.conversation.response_sent(response, following)
        if following is State.CLOSED:
            self._content_left = None
        return response

    def _closed(self) -> Event:
        pending = self.conversation.pending
        if pending is not None and self.conversation.state is not State.CLOSED:
            raise RemoteProtocolError(
                ErrorKind.CONNECTION_CLOSED,
                f"the server closed the connection while {pending.code.name} ({int(pending.code)}) "
                "awaited its response",
                expected="a response",
            )
        self.conversation.state = State.CLOSED
        return ConnectionClosed()
