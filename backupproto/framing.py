"""Cutting a byte stream into messages by their headers alone, without the state machine.

`Framer` is the framing the engine uses, offered on its own for tools that record or
inspect traffic (the session splitter is built on it): it reads each header's code and
payload_size (even when the header is invalid, so malformed traffic stays with the header
that announced it), buffers the part of the payload that is parsed as a whole, and streams
the rest as `Body` pieces, so a file of any size passes in constant memory. Only a header
the dialect accepts (version, code and payload_size, spec 3.6) has payload buffered: the
payload of a rejected header streams, unparsed, as `Body`. Pure: bytes in, pieces out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialect import RequestCode, ResponseCode
from .errors import MalformedMessage
from .schemas import V3_SCHEMAS, Schemas


@dataclass(frozen=True)
class Head:
    """A header and the payload bytes parsed with it; `streamed` more body bytes follow as `Body`."""

    data: bytes
    code: int | None
    """The wire code as the header says it (None: the stream ended inside the header)."""
    payload_size: int | None
    streamed: int


@dataclass(frozen=True)
class Body:
    """Payload bytes streamed through (a 1103's content, or the body after an invalid header)."""

    data: bytes


@dataclass(frozen=True)
class End:
    """The message announced by the last `Head` is complete (`missing` > 0: the stream ended first)."""

    missing: int = 0


Piece = Head | Body | End


def buffered_payload_size(
    schemas: Schemas, role: RequestCode | ResponseCode | None, payload_size: int
) -> int:
    """How much of a payload is buffered and parsed whole; the rest streams.

    A send-file request buffers its prefix, any other known message its whole payload if the
    size fits its rule; an unknown code or an impossible size buffers nothing.
    """
    if role is None:
        return 0
    if role is RequestCode.SEND_FILE:
        return min(schemas.send_file_prefix_size, payload_size)
    rule = (
        schemas.request_size_rule(role) if isinstance(role, RequestCode) else schemas.response_size_rule(role)
    )
    return payload_size if rule.minimum <= payload_size <= rule.maximum else 0


class Framer:
    """Splits one direction's byte stream (requests or responses) into `Head`, `Body`, `End` pieces."""

    def __init__(self, schemas: Schemas = V3_SCHEMAS, *, requests: bool) -> None:
        self.schemas = schemas
        self.requests = requests
        self.header_size = schemas.request_header_size if requests else schemas.response_header_size
        self._buffer = bytearray()
        self._want = self.header_size
        self._head: tuple[int, int] | None = None
        """(code, payload_size) of a header whose buffered payload is still arriving."""
        self._body_left: int | None = None

    @property
    def inside_message(self) -> bool:
        """True when the bytes so far stop inside a message."""
        return bool(self._buffer) or self._body_left is not None

    @property
    def arriving_code(self) -> int | None:
        """The wire code of a header that is in while the payload buffered with it is still
        arriving (its `Head` comes once that payload is complete); None otherwise."""
        return None if self._head is None else self._head[0]

    @property
    def buffered(self) -> bytes:
        """A copy of the bytes of the message not yet handed out: part of a header, or a
        header and the part of its buffered payload that arrived."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces that `data` completes."""
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
            take = min(self._want - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == self._want:
                pieces.extend(self._complete())
        return pieces

    def end(self) -> list[Piece]:
        """The stream ended: an open message ends with the count of bytes it lacks."""
        if self._body_left is not None:
            left, self._body_left = self._body_left, None
            return [End(left)]
        if not self._buffer:
            return []
        missing = self._want - len(self._buffer)
        raw, code_size = bytes(self._buffer), self._head
        self._buffer.clear()
        self._want, self._head = self.header_size, None
        if code_size is None:
            return [Head(raw, None, None, 0), End(missing)]
        code, payload_size = code_size
        streamed = payload_size - (len(raw) + missing - self.header_size)
        return [Head(raw, code, payload_size, 0), End(missing + streamed)]

    def _complete(self) -> list[Piece]:
        if self._head is None:
            header = self.schemas.request_header if self.requests else self.schemas.response_header
            values = header.parse(bytes(self._buffer))
            code, payload_size = values["code"], values["payload_size"]
            buffered = buffered_payload_size(self.schemas, self._accepted_role(), payload_size)
            self._head = (code, payload_size)
            if buffered:
                self._want = self.header_size + buffered
                return []
        code, payload_size = self._head
        raw = bytes(self._buffer)
        self._buffer.clear()
        self._want, self._head = self.header_size, None
        streamed = payload_size - (len(raw) - self.header_size)
        if streamed:
            self._body_left = streamed
            return [Head(raw, code, payload_size, streamed)]
        return [Head(raw, code, payload_size, 0), End()]

    def _accepted_role(self) -> RequestCode | ResponseCode | None:
        """The role of the header in the buffer if the dialect accepts the header, else None."""
        header = bytes(self._buffer)
        try:
            if self.requests:
                return self.schemas.parse_request_header(header).code
            return self.schemas.parse_response_header(header).code
        except MalformedMessage:
            return None
