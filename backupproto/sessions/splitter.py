"""The splitter: cuts one direction's byte stream into protocol messages (spec/sessions.md 3).

Sans-I/O: fed bytes, it returns pieces; the framing is `backupproto.framing.Framer`'s, so a
1103's content (and the body after an invalid header) leaves it as `Body` pieces and a file of
any size passes in constant memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..dialect import RequestCode
from ..errors import BackupProtoError, ErrorKind, MalformedMessage
from ..events import NEED_DATA, _NeedData
from ..framing import Body, Framer, Head
from ..framing import End as FramerEnd
from ..framing import Piece as FramerPiece
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
class End:
    """The message is complete (or `error`: the stream ended inside it)."""

    error: dict[str, Any] | None = None


Piece = Start | Body | End
"""`Body`: a piece of the body announced by the last `Start` (the `Framer`'s own)."""


class Splitter:
    """Cuts one direction's byte stream into protocol messages (spec/sessions.md 3).

    The framing is `backupproto.framing.Framer`'s: payload_size frames a message even when its
    header is invalid, so the bytes of malformed traffic stay together with the header that
    announced them. A valid header's message is decoded from its first bytes (a 1103's header and
    prefix, any other message whole: at most 23 + 415 bytes for a request, 7 + 528 for a
    response); a 1103's content and the payload after an invalid header stream out as `Body`.
    What the splitter adds to the framing: the decoded fields or the parse error of each message,
    and a stream that ends inside a message as a `truncated` error (spec/sessions.md 3.1).
    """

    def __init__(self, direction: Direction, schemas: Schemas = V3_SCHEMAS) -> None:
        self.direction = direction
        self.schemas = schemas
        self._framer = Framer(schemas, requests=direction is Direction.REQUEST)
        self._ended = False
        self._ready: deque[Piece] = deque()

    @property
    def inside_message(self) -> bool:
        """True when the stream stopped in the middle of a message."""
        return self._framer.inside_message

    def feed(self, data: bytes) -> list[Piece]:
        """Bytes received in this direction; the pieces they complete."""
        if self._ended:
            raise SessionError("data fed to a splitter after its stream ended")
        return [self._message_piece(piece) for piece in self._framer.feed(data)]

    def receive_data(self, data: bytes) -> None:
        """Feed bytes (``b""``: the stream ended); pieces wait for `next_event` (a channel's receiver)."""
        self._ready.extend(self.feed(data) if data else self.end())

    def next_event(self) -> Piece | _NeedData:
        """The next piece fed through `receive_data`, or NEED_DATA."""
        return self._ready.popleft() if self._ready else NEED_DATA

    def end(self) -> list[Piece]:
        """The stream ended; closes a message left open with a `truncated` error whose `missing`
        counts the bytes the message still lacked (up to the end of its payload, once its header
        is whole; up to the end of the header before)."""
        self._ended = True
        pieces = self._framer.end()
        if not pieces:
            return []
        last = pieces[-1]
        assert isinstance(last, FramerEnd)
        if len(pieces) == 1:  # inside a streamed body
            left = last.missing
            return [End(_truncated(f"stream ended {left} bytes before the end of the body", left))]
        head = pieces[0]
        assert isinstance(head, Head)
        error = _truncated(f"stream ended {len(head.data)} bytes into a message", last.missing)
        if head.code is not None and self.direction is Direction.REQUEST:
            role = self.schemas.request_role(head.code)  # a whole header that buffers is valid
            if role is not None:
                error["header"] = {"code": head.code, "type": role.name, "payload_size": head.payload_size}
        return [Start(head.data, None, error, 0), End(error)]

    def _message_piece(self, piece: FramerPiece) -> Piece:
        """A framed piece as a message piece: a `Head` decoded into a `Start`."""
        if isinstance(piece, Body):
            return piece
        if isinstance(piece, FramerEnd):
            return End()
        assert piece.payload_size is not None
        try:
            if self.direction is Direction.REQUEST:
                decoded = decode_request_start(self.schemas, piece.data, piece.payload_size)
            else:
                decoded = decode_response(self.schemas, piece.data)
        except MalformedMessage as error:
            return Start(piece.data, None, error_record(error), piece.streamed)
        return Start(piece.data, decoded, None, piece.streamed)


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
