"""The client's raw byte stream split into its requests, beside the engine: the start of every
request (header and fixed payload, or a send-file prefix) and every send-file packet's fields,
read as they are on the wire even when the engine refuses them (so a case can name the reading a
client follows). Content is skipped, not kept: constant memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from construct import ConstructError, Struct

from backupproto.crypto import BLOCK
from backupproto.dialect import RequestCode
from backupproto.schemas import Schemas

MAX_FIXED_PAYLOAD = 4096
"""Payload bytes kept of a request that is not a send-file (the rest is skipped)."""


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


class RequestTap:
    """Feed it every byte the client sends; `starts` fills with the requests in order."""

    def __init__(self, schemas: Schemas) -> None:
        self.schemas = schemas
        self.starts: deque[RequestStart] = deque()
        self.packets: list[PacketRecord] = []
        self.codes: list[int] = []
        self._buffer = bytearray()
        self._skip = 0
        self._counted = False
        """The code of the request at the buffer's start is already in `codes`."""
        self._filling: PacketRecord | None = None
        """The packet whose content is being skipped, until its `first_block` is complete."""
        name_at = schemas.offset(RequestCode.SEND_FILE, "file_name") - schemas.request_header_size
        self._name = slice(name_at, name_at + schemas.dialect.name_size)
        self._numbers = Struct(*(sub for sub in schemas.send_file_prefix.subcons if sub.name != "file_name"))

    def feed(self, data: bytes) -> None:
        self._buffer += data
        schemas = self.schemas
        header_size = schemas.request_header_size
        while True:
            if self._skip:
                taken = min(self._skip, len(self._buffer))
                self._keep_first_block(taken)
                del self._buffer[:taken]
                self._skip -= taken
                if self._skip:
                    return
            if len(self._buffer) < header_size:
                return
            header = schemas.request_header.parse(bytes(self._buffer[:header_size]))
            if not self._counted:  # known as soon as the header is in, however long the payload
                self.codes.append(header.code)
                self._counted = True
            is_file = schemas.request_role(header.code) is RequestCode.SEND_FILE
            fixed = schemas.send_file_prefix_size if is_file else header.payload_size
            fixed = min(fixed, header.payload_size, MAX_FIXED_PAYLOAD)
            if len(self._buffer) < header_size + fixed:
                return
            raw = bytes(self._buffer[: header_size + fixed])
            del self._buffer[: header_size + fixed]
            self._counted = False
            self._skip = header.payload_size - fixed
            packet = self._packet(raw[header_size:], header.payload_size - fixed) if is_file else None
            self._filling = packet
            if packet is not None:
                self.packets.append(packet)
            self.starts.append(RequestStart(header.code, header.payload_size, raw, packet))

    def _keep_first_block(self, taken: int) -> None:
        """Copy the start of the content being skipped into its packet's `first_block`."""
        packet = self._filling
        if packet is None:
            return
        missing = BLOCK - len(packet.first_block)
        packet.first_block += bytes(self._buffer[: min(missing, taken)])
        if len(packet.first_block) == BLOCK:
            self._filling = None

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

    def pending(self) -> bytes:
        """The bytes of the next request not yet handed on (for the evidence of a refusal)."""
        head = self.starts[0].raw if self.starts else b""
        return head + bytes(self._buffer[:512])
