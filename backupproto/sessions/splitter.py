"""The splitter: cuts one direction's byte stream into protocol messages (spec/sessions.md 3).

Sans-I/O: fed bytes, it returns pieces; a 1103's content (and the body after an unparseable
header) leaves it as `Body` pieces, so a file of any size passes in constant memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..dialect import RequestCode, ResponseCode
from ..errors import BackupProtoError, ErrorKind, MalformedMessage
from ..events import NEED_DATA, _NeedData
from ..schemas import V3_SCHEMAS, Schemas
from .model import Direction, SessionError

# --- decoding a message's first bytes ------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def error_record(error: BackupProtoError) -> dict[str, Any]:
    """An error as the session file notes it."""
    record: dict[str, Any] = {"kind": error.kind.value, "message": str(error)}
    if error.field is not None:
        record["field"] = error.field
    if error.offset is not None:
        record["offset"] = error.offset
    return record


def decode_request_start(schemas: Schemas, data: bytes, payload_size: int) -> dict[str, Any]:
    """Decoded fields of a request whose first bytes are `data` (for 1103: header + prefix)."""
    size = schemas.request_header_size
    header = schemas.parse_request_header(data[:size])
    if header.code is RequestCode.SEND_FILE:
        fields = schemas.parse_send_file_prefix(data[size:], payload_size, size, client_id=header.client_id)
    else:
        fields = schemas.parse_request(data)[1]
    return {
        "code": schemas.wire_code(header.code),
        "type": header.code.name,
        "version": header.version,
        "client_id": header.client_id.hex(),
        "payload_size": header.payload_size,
        "fields": {key: _jsonable(value) for key, value in fields.items()},
    }


def decode_response(schemas: Schemas, data: bytes) -> dict[str, Any]:
    """Decoded fields of one whole response."""
    header, fields = schemas.parse_response(data)
    return {
        "code": schemas.wire_code(header.code),
        "type": header.code.name,
        "version": header.version,
        "payload_size": header.payload_size,
        "fields": {key: _jsonable(value) for key, value in fields.items()},
    }


@dataclass
class Start:
    """A message begins: its first bytes, decoded (or the parse error), and how many body bytes follow."""

    raw: bytes
    decoded: dict[str, Any] | None
    error: dict[str, Any] | None
    body_size: int


@dataclass
class Body:
    """A piece of the body announced by the last `Start`."""

    data: bytes


@dataclass
class End:
    """The message is complete (or `error`: the stream ended inside it)."""

    error: dict[str, Any] | None = None


Piece = Start | Body | End


class Splitter:
    """Cuts one direction's byte stream into protocol messages (spec/sessions.md 3).

    Framing follows the header's payload_size even when the header is invalid, so the bytes of
    malformed traffic stay together with the header that announced them. Only a 1103's content and
    the body after an invalid header are streamed out as `Body`; everything else is buffered whole
    (at most 23 + 415 bytes for a request, 7 + 528 for a response).
    """

    def __init__(self, direction: Direction, schemas: Schemas = V3_SCHEMAS) -> None:
        self.direction = direction
        self.schemas = schemas
        self._buffer = bytearray()
        self._body_left: int | None = None
        self._want: int | None = None
        self._payload_size = 0
        self._ended = False
        self._ready: deque[Piece] = deque()

    @property
    def _header_size(self) -> int:
        s = self.schemas
        return s.request_header_size if self.direction is Direction.REQUEST else s.response_header_size

    @property
    def inside_message(self) -> bool:
        """True when the stream stopped in the middle of a message."""
        return bool(self._buffer) or self._body_left is not None

    def feed(self, data: bytes) -> list[Piece]:
        """Bytes received in this direction; the pieces they complete."""
        if self._ended:
            raise SessionError("data fed to a splitter after its stream ended")
        pieces: list[Piece] = []
        view = memoryview(data)
        while view:
            if self._body_left is not None:
                take = min(self._body_left, len(view))
                pieces.append(Body(bytes(view[:take])))
                view = view[take:]
                self._body_left -= take
                if self._body_left == 0:
                    self._body_left = None
                    pieces.append(End())
                continue
            want = self._want if self._want is not None else self._header_size
            take = min(want - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == want:
                pieces.extend(self._framed())
        return pieces

    def receive_data(self, data: bytes) -> None:
        """Feed bytes (``b""``: the stream ended); pieces wait for `next_event` (a channel's receiver)."""
        self._ready.extend(self.feed(data) if data else self.end())

    def next_event(self) -> Piece | _NeedData:
        """The next piece fed through `receive_data`, or NEED_DATA."""
        return self._ready.popleft() if self._ready else NEED_DATA

    def end(self) -> list[Piece]:
        """The stream ended; closes a message left open (with a `truncated` error)."""
        self._ended = True
        if self._body_left is not None:
            left, self._body_left = self._body_left, None
            return [End(_truncated(f"stream ended {left} bytes before the end of the body", left))]
        if self._buffer:
            raw = bytes(self._buffer)
            self._buffer.clear()
            want = self._want if self._want is not None else self._header_size
            error = _truncated(f"stream ended {len(raw)} bytes into a message", want - len(raw))
            decoded = None
            if self._want is not None and self.direction is Direction.REQUEST:
                decoded_header = self._try_header(raw[: self._header_size])
                if decoded_header is not None:
                    error["header"] = decoded_header
            self._want = None
            return [Start(raw, decoded, error, 0), End(error)]
        return []

    def _framed(self) -> list[Piece]:
        """The buffer holds what was wanted: a header, or a header and the bytes to decode."""
        schemas, size = self.schemas, self._header_size
        raw = bytes(self._buffer)
        if self._want is None:  # a header is complete
            try:
                code, payload_size = self._parse_header(raw)
            except MalformedMessage as error:
                payload_size = self._raw_payload_size(raw)
                self._buffer.clear()
                return self._start(raw, None, error_record(error), payload_size)
            self._payload_size = payload_size
            if code is RequestCode.SEND_FILE:
                self._want = size + schemas.send_file_prefix_size
            else:
                self._want = size + payload_size
            if len(self._buffer) < self._want:
                return []
        self._buffer.clear()
        self._want = None
        payload_size = self._payload_size
        try:
            if self.direction is Direction.REQUEST:
                decoded = decode_request_start(schemas, raw, payload_size)
            else:
                decoded = decode_response(schemas, raw)
        except MalformedMessage as error:
            return self._start(raw, None, error_record(error), size + payload_size - len(raw))
        return self._start(raw, decoded, None, size + payload_size - len(raw))

    def _start(self, raw: bytes, decoded: Any, error: Any, body_size: int) -> list[Piece]:
        pieces: list[Piece] = [Start(raw, decoded, error, body_size)]
        if body_size > 0:
            self._body_left = body_size
        else:
            pieces.append(End())
        return pieces

    def _parse_header(self, raw: bytes) -> tuple[RequestCode | ResponseCode, int]:
        if self.direction is Direction.REQUEST:
            header = self.schemas.parse_request_header(raw)
            return header.code, header.payload_size
        response = self.schemas.parse_response_header(raw)
        return response.code, response.payload_size

    def _raw_payload_size(self, raw: bytes) -> int:
        """payload_size read without validation (it frames even a rejected header)."""
        schema = (
            self.schemas.request_header
            if self.direction is Direction.REQUEST
            else self.schemas.response_header
        )
        return int(schema.parse(raw)["payload_size"])

    def _try_header(self, raw: bytes) -> dict[str, Any] | None:
        try:
            header = self.schemas.parse_request_header(raw)
        except MalformedMessage:
            return None
        code = self.schemas.wire_code(header.code)
        return {"code": code, "type": header.code.name, "payload_size": header.payload_size}


def _truncated(message: str, missing: int) -> dict[str, Any]:
    return {"kind": ErrorKind.TRUNCATED.value, "message": message, "missing": missing}


def split_all(direction: Direction, data: bytes, schemas: Schemas = V3_SCHEMAS) -> list[Piece]:
    """All pieces of a whole stream (convenience for tests and small tools)."""
    splitter = Splitter(direction, schemas)
    return splitter.feed(data) + splitter.end()


__all__ = [
    "Body",
    "End",
    "Piece",
    "Splitter",
    "Start",
    "decode_request_start",
    "decode_response",
    "error_record",
    "split_all",
]
