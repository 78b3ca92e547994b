"""The client's raw byte stream split into its requests, beside the engine: the start of every
request (header and fixed payload, or a send-file prefix) and every send-file packet's fields,
read as they are on the wire even when the engine refuses them (so a case can name the reading a
client follows). The cutting is backupproto's `Framer`; the tap only keeps evidence from its
pieces: the first bytes of each message (from the `Body` when the dialect rejected the header, so
a malformed request is still shown) and the first cipher block of each send-file's content.
Content is skipped, not kept: constant memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from construct import ConstructError, Struct

from backupproto.crypto import BLOCK
from backupproto.dialect import RequestCode
from backupproto.framing import Body, Framer, Head
from backupproto.schemas import Schemas

MAX_FIXED_PAYLOAD = 4096
"""Payload bytes kept of a request that is not a send-file (the rest is skipped)."""
MAX_PENDING = 512
"""Bytes shown of a request whose start is still incomplete (`RequestTap.pending`)."""


@dataclass
class PacketRecord:
    """The numbers of one send-file message as sent (2024: one packet), and its first cipher block."""

    content_size: int
    orig_file_size: int | None
    packet_number: int | None
    total_packets: int | None
    length: int
    """This message's own content bytes (payload_size minus the prefix)."""
    file_name: str = ""
    """The file name field up to its first NUL (undecoded bytes as latin-1)."""
    first_block: bytes = b""
    """The first cipher block of its content (fewer bytes if the content is shorter): decrypted
    from the zero IV it shows whether the packet starts a CBC chain of its own."""


@dataclass(frozen=True)
class RequestStart:
    """One request's header and fixed part, as received."""

    code: int
    payload_size: int
    raw: bytes
    packet: PacketRecord | None = None


@dataclass
class _Opening:
    """A message whose start is being completed from `Body` pieces (its header was rejected)."""

    head: Head
    raw: bytearray
    size: int
    """Header and fixed part: the bytes `raw` is complete at."""


class RequestTap:
    """Feed it every byte the client sends; `starts` fills with the requests in order."""

    def __init__(self, schemas: Schemas) -> None:
        self.schemas = schemas
        self.starts: deque[RequestStart] = deque()
        self.packets: list[PacketRecord] = []
        self.codes: list[int] = []
        self._framer = Framer(schemas, requests=True)
        self._counted = False
        """The code of the message the framer is in is already in `codes`."""
        self._opening: _Opening | None = None
        self._filling: PacketRecord | None = None
        """The packet whose content is streaming, until its `first_block` is complete."""
        name_at = schemas.offset(RequestCode.SEND_FILE, "file_name") - schemas.request_header_size
        self._name = slice(name_at, name_at + schemas.dialect.name_size)
        self._numbers = Struct(*(sub for sub in schemas.send_file_prefix.subcons if sub.name != "file_name"))

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream (``b""``, its end, changes nothing)."""
        for piece in self._framer.feed(data):
            if isinstance(piece, Head):
                self._head(piece)
            elif isinstance(piece, Body):
                self._body(piece.data)
            else:
                self._opening = self._filling = None
        arriving = self._framer.arriving_code
        if arriving is not None and not self._counted:  # known as soon as the header is in
            self.codes.append(arriving)
            self._counted = True

    def pending(self) -> bytes:
        """The start of the next request not yet handed on (for the evidence of a refusal): its
        header and fixed part, or the first bytes of it that arrived."""
        if self.starts:
            return self.starts[0].raw
        partial = self._opening.raw if self._opening is not None else self._framer.buffered
        return bytes(partial[:MAX_PENDING])

    def _head(self, head: Head) -> None:
        assert head.code is not None and head.payload_size is not None  # a whole header: fed, not ended
        if not self._counted:
            self.codes.append(head.code)
        self._counted = False
        is_file = self.schemas.request_role(head.code) is RequestCode.SEND_FILE
        fixed = self.schemas.send_file_prefix_size if is_file else head.payload_size
        size = self.schemas.request_header_size + min(fixed, head.payload_size, MAX_FIXED_PAYLOAD)
        self._opening = _Opening(head, bytearray(head.data[:size]), size)
        self._filling = None
        self._body(head.data[size:])

    def _body(self, data: bytes) -> None:
        opening = self._opening
        if opening is not None:
            taken = opening.size - len(opening.raw)
            opening.raw += data[:taken]
            data = data[taken:]
            if len(opening.raw) == opening.size:
                self._opening = None
                self._start(opening)
        packet = self._filling
        if packet is not None and data:
            packet.first_block += data[: BLOCK - len(packet.first_block)]
            if len(packet.first_block) == BLOCK:
                self._filling = None

    def _start(self, opening: _Opening) -> None:
        head, raw = opening.head, bytes(opening.raw)
        assert head.code is not None and head.payload_size is not None
        header_size = self.schemas.request_header_size
        packet = None
        if self.schemas.request_role(head.code) is RequestCode.SEND_FILE:
            packet = self._packet(raw[header_size:], head.payload_size - (len(raw) - header_size))
            if packet is not None:
                self.packets.append(packet)
        self._filling = packet
        self.starts.append(RequestStart(head.code, head.payload_size, raw, packet))

    def _packet(self, prefix: bytes, length: int) -> PacketRecord | None:
        try:
            numbers: Any = self._numbers.parse(prefix)
        except ConstructError:
            return None
        return PacketRecord(
            numbers.content_size,
            numbers.get("orig_file_size"),
            numbers.get("packet_number"),
            numbers.get("total_packets"),
            length,
            prefix[self._name].split(b"\0", 1)[0].decode("latin-1"),
        )
