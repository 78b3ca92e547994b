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


class PacketReceiver:
    """Checks the packets of one incoming file across packets (spec dialects 18.2, second table).

    The checks of each packet on its own are the schemas' (`parse_send_file_prefix`).
    """

    def __init__(self, schemas: Schemas, first: Fields, packet_content: int) -> None:
        """`first` is the file's first packet's prefix, `packet_content` its content length."""
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
        """Check the next packet's prefix (rows 2-8); raise `RemoteProtocolError` if it is wrong."""
        first = self.first
        if prefix["file_name"] != first["file_name"]:
            raise self._error(
                ErrorKind.PACKET_MISSING,
                f"a packet of {prefix['file_name']!r} while {self._missing()} of {first['file_name']!r} "
                "are due",
                "file_name",
                f"packet {self.number + 1} of {first['file_name']!r}",
            )
        changed = (
            ("total_packets", ErrorKind.TOTAL_CHANGED),
            ("content_size", ErrorKind.CONTENT_SIZE_INCONSISTENT),
            ("orig_file_size", ErrorKind.BAD_ORIG_FILE_SIZE),
        )
        for field, kind in changed:
            if prefix[field] != first[field]:
                raise self._error(
                    kind,
                    f"packet {prefix['packet_number']} has {field} {prefix[field]}: {field} changed mid-file",
                    field,
                    f"{first[field]}, as in the file's first packet",
                )
        self._accept(prefix, packet_content)

    def _accept(self, prefix: Fields, packet_content: int) -> None:
        number, due = prefix["packet_number"], self.number + 1
        if number < due:
            raise self._error(
                ErrorKind.PACKET_DUPLICATE, f"duplicate packet {number}", "packet_number", f"{due}"
            )
        if number > due:
            gap = f"packet {due}" if number == due + 1 else f"packets {due}..{number - 1}"
            raise self._error(
                ErrorKind.PACKET_OUT_OF_ORDER,
                f"packet {number} out of order: {gap} missing",
                "packet_number",
                f"{due} (packets in order from 1)",
            )
        received = self.received + packet_content
        room = self.content_size - (self.total - number)  # later packets carry at least a byte each
        last = number == self.total
        if received > room or (last and received != self.content_size):
            raise self._error(
                ErrorKind.CONTENT_SIZE_INCONSISTENT,
                f"packet {number} of {self.total} brings the content to {received} bytes of content_size "
                f"{self.content_size}",
                "content_size",
                f"exactly {self.content_size} bytes at the last packet"
                if last
                else f"at most {room} bytes so far",
            )
        self.number = number
        self.received = received

    def packet_done(self) -> bool:
        """The current packet's content has passed: True if it was the file's last packet."""
        return self.number == self.total

    def interrupted(self, code: RequestCode) -> RemoteProtocolError:
        """The error for another request arriving while packets are still due (row 1)."""
        return self._error(
            ErrorKind.PACKET_MISSING,
            f"{code.name} arrived while {self._missing()} of {self.first['file_name']!r} are due",
            "code",
            f"SEND_FILE packet {self.number + 1}",
        )

    def closed(self) -> RemoteProtocolError:
        """The error for a connection that closes between packets."""
        return RemoteProtocolError(
            ErrorKind.CONNECTION_CLOSED,
            f"connection closed while {self._missing()} of {self.first['file_name']!r} are due",
            expected=f"SEND_FILE packet {self.number + 1}",
        )

    def _missing(self) -> str:
        due = self.number + 1
        return f"packet {due}" if due == self.total else f"packets {due}..{self.total}"

    def _error(self, kind: ErrorKind, message: str, field: str, expected: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            kind,
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
        """`data` (the next content bytes) with the starts of any packets it opens inserted.

        Copies `data` once (one join of the packet starts and views of `data`), or not at all
        when it opens no packet.
        """
        if len(data) <= self._left_in_packet:
            self._left_in_packet -= len(data)
            return data
        parts: list[bytes | memoryview] = []
        view = memoryview(data)
        while view:
            if self._left_in_packet == 0:
                parts.append(self._packet_start())
            take = min(self._left_in_packet, len(view))
            parts.append(view[:take])
            view = view[take:]
            self._left_in_packet -= take
        return b"".join(parts)

    def _packet_start(self) -> bytes:
        self.number += 1
        length = min(self.packet_size, self.content_size - self._sent)
        self._sent += length
        self._left_in_packet = length
        values = {**self.fields, "packet_number": self.number, "total_packets": self.total}
        return self.schemas.build_send_file_start(self.client_id, values, length)
