"""Packetised file transfer (2024A, 2024C): the receiver's checks and the sender's split.

A file's ONE AES-CBC ciphertext travels in numbered send-file packets: every packet
repeats content_size (the whole ciphertext's size), orig_file_size, total_packets and
file_name, and carries the next part of the ciphertext; packets are numbered from 1.
`PacketReceiver` checks each packet against the first and counts the content (the
engine streams the content itself); `PacketSender` inserts the packet starts into the
content as it is sent. Both hold a few integers: constant memory for any file size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .dialect import RequestCode
from .errors import ErrorKind, RemoteProtocolError
from .schemas import Fields, Schemas

_REPEATED = ("content_size", "orig_file_size", "total_packets", "file_name")
"""Fields every packet of a file must repeat unchanged."""


class PacketReceiver:
    """Checks the packets of one incoming file: numbering, totals and sizes."""

    def __init__(self, schemas: Schemas, first: Fields, packet_content: int) -> None:
        """`first` is packet 1's prefix, `packet_content` its content length."""
        self.schemas = schemas
        self.first = first
        self.number = 0
        self.received = 0
        self._accept(first, packet_content)

    @property
    def content_size(self) -> int:
        return int(self.first["content_size"])

    @property
    def total(self) -> int:
        return int(self.first["total_packets"])

    def next_packet(self, prefix: Fields, packet_content: int) -> None:
        """Check the prefix of the packet after the current one; raise `RemoteProtocolError` if wrong."""
        for field in _REPEATED:
            if prefix[field] != self.first[field]:
                kind = "total changed mid-file" if field == "total_packets" else f"{field} changed mid-file"
                raise self._error(
                    f"packet {prefix['packet_number']}: {kind}: {prefix[field]!r}",
                    field,
                    f"{self.first[field]!r}, as in packet 1",
                )
        self._accept(prefix, packet_content)

    def _accept(self, prefix: Fields, packet_content: int) -> None:
        number, expected = prefix["packet_number"], self.number + 1
        if number < expected:
            raise self._error(f"duplicate packet {number}", "packet_number", f"packet {expected}")
        if number > expected:
            missing = f"packet {expected}" if number == expected + 1 else f"packets {expected}..{number - 1}"
            raise self._error(
                f"packet {number} out of order: {missing} missing", "packet_number", f"packet {expected}"
            )
        left = self.content_size - self.received
        if packet_content > left:
            raise self._error(
                f"packet {number} carries {packet_content} content bytes; {left} of content_size "
                f"{self.content_size} are left: content_size inconsistent with the packets",
                "payload_size",
                f"at most {left} content bytes",
            )
        self.number = number
        self.received += packet_content

    def packet_done(self) -> bool:
        """The current packet's content has passed: True if the file is complete, False if more follow."""
        complete = self.received == self.content_size
        if complete and self.number < self.total:
            raise self._error(
                f"all {self.content_size} content bytes arrived by packet {self.number} of {self.total}: "
                "content_size inconsistent with total_packets",
                "total_packets",
                f"{self.number} packets",
            )
        if not complete and self.number == self.total:
            raise self._error(
                f"the last packet ({self.number}) ends after {self.received} of content_size "
                f"{self.content_size} bytes: content_size inconsistent with the packets",
                "content_size",
                f"{self.received}",
            )
        return complete

    def interrupted(self, code: RequestCode) -> RemoteProtocolError:
        """The error for another request arriving while packets are still due."""
        due = self.number + 1
        missing = f"packet {due}" if due == self.total else f"packets {due}..{self.total}"
        return self._error(
            f"{code.name} arrived mid-file: {missing} of {self.first['file_name']!r} missing",
            "code",
            f"SEND_FILE packet {due}",
        )

    def _error(self, message: str, field: str, expected: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            ErrorKind.BAD_PACKET,
            message,
            field=field,
            offset=self.schemas.offset(RequestCode.SEND_FILE, field),
            expected=expected,
        )


class PacketSender:
    """Splits one outgoing file's content into packets of `packet_size` bytes (the last shorter)."""

    def __init__(
        self, schemas: Schemas, client_id: bytes, fields: Mapping[str, Any], packet_size: int
    ) -> None:
        self.schemas = schemas
        self.client_id = client_id
        self.fields = dict(fields)
        self.packet_size = packet_size
        self.content_size = int(fields["content_size"])
        self.total = -(-self.content_size // packet_size)
        self.number = 0
        self._left_in_packet = 0
        self._sent = 0

    def start(self) -> bytes:
        """Packet 1's header and prefix."""
        return self._packet_start()

    def content(self, data: bytes) -> bytes:
        """`data` (the next content bytes) with the starts of any packets it opens inserted."""
        if len(data) <= self._left_in_packet:
            self._left_in_packet -= len(data)
            return data
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._left_in_packet == 0:
                out += self._packet_start()
            take = min(self._left_in_packet, len(view))
            out += view[:take]
            view = view[take:]
            self._left_in_packet -= take
        return bytes(out)

    def _packet_start(self) -> bytes:
        self.number += 1
        length = min(self.packet_size, self.content_size - self._sent)
        self._sent += length
        self._left_in_packet = length
        values = {**self.fields, "packet_number": self.number, "total_packets": self.total}
        return self.schemas.build_send_file_start(self.client_id, values, length)
