"""The POSIX CRC exactly as GNU ``cksum`` prints it (CRC-32 poly 0x04C11DB7, MSB first).

The CRC runs over the data, then over the data length as little-endian bytes of minimal
count (no bytes for length 0), and the result is complemented. `fastcrc` does the work:
its ``cksum(data, initial=prev)`` continues a previous result, so chunks chain cheaply.
"""

from __future__ import annotations

import os
from typing import Protocol

from fastcrc import crc32 as _fastcrc

__all__ = ["CHUNK_SIZE", "Cksum", "cksum", "cksum_file", "cksum_stream"]

CHUNK_SIZE = 1 << 20
"""Read size of `cksum_file` / `cksum_stream`: 1 MiB."""

_Buffer = bytes | bytearray | memoryview


class SupportsReadinto(Protocol):
    """A binary stream with ``readinto`` (files opened ``"rb"``, raw or buffered)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _length_bytes(length: int) -> bytes:
    """The length suffix: little-endian, minimal count of bytes (empty for 0)."""
    return length.to_bytes((length.bit_length() + 7) // 8, "little")


class Cksum:
    """Incremental POSIX cksum: ``update()`` chunks, read ``value`` whenever needed."""

    __slots__ = ("_crc", "_length")

    def __init__(self, data: _Buffer = b"") -> None:
        self._crc = _fastcrc.cksum(b"")  # the state is fastcrc's finished value, chainable
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: _Buffer) -> None:
        """Add a chunk (any bytes-like object; it is not copied)."""
        self._crc = _fastcrc.cksum(data, initial=self._crc)
        self._length += data.nbytes if isinstance(data, memoryview) else len(data)

    @property
    def value(self) -> int:
        """The finished CRC of everything so far; reading it does not disturb later updates."""
        return _fastcrc.cksum(_length_bytes(self._length), initial=self._crc)

    @property
    def length(self) -> int:
        """Number of bytes fed so far."""
        return self._length


def cksum(data: _Buffer) -> int:
    """The cksum CRC of `data`, as GNU ``cksum`` prints it."""
    return Cksum(data).value


def cksum_stream(stream: SupportsReadinto, chunk_size: int = CHUNK_SIZE) -> tuple[int, int]:
    """(crc, size) of everything left in a binary stream, in constant memory."""
    summer = Cksum()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    while True:
        count = stream.readinto(view)
        if not count:
            return summer.value, summer.length
        summer.update(view[:count] if count < chunk_size else view)


def cksum_file(path: str | os.PathLike[str] | bytes) -> tuple[int, int]:
    """(crc, size) of a file, read in 1 MiB chunks into one reused buffer."""
    with open(path, "rb", buffering=0) as stream:
        return cksum_stream(stream)


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_TABLE = _make_table()


def _reference_cksum(data: bytes) -> int:
    """Slow pure-Python cksum, table driven; a second oracle for the tests only."""
    crc = 0
    for byte in bytes(data) + _length_bytes(len(data)):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[(crc >> 24) ^ byte]
    return crc ^ 0xFFFFFFFF
