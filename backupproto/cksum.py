"""The POSIX CRC exactly as GNU ``cksum`` prints it (CRC-32 poly 0x04C11DB7, MSB first).

The CRC runs over the data, then over the data length as little-endian bytes of minimal
count (no bytes for length 0), and the result is complemented. `fastcrc` does the work:
its ``cksum(data, initial=prev)`` continues a previous result, so chunks chain cheaply, and
`Cksum.extend` joins the sums of consecutive parts computed separately. Pure computation: reading
files is the job of the command line (`backupproto.io.cli_cksum`).
"""

from __future__ import annotations

from fastcrc import crc32 as _fastcrc

__all__ = ["Cksum", "cksum"]

_MASK = 0xFFFFFFFF
_POLY = 0x04C11DB7
_BYTE_SHIFT = 0x100
"""The polynomial x^8: appending one zero byte multiplies the CRC register by it."""

_Buffer = bytes | bytearray | memoryview


def _length_bytes(length: int) -> bytes:
    """The length suffix: little-endian, minimal count of bytes (empty for 0)."""
    return length.to_bytes((length.bit_length() + 7) // 8, "little")


def _multiply(left: int, right: int) -> int:
    """Product of two CRC-32 register values as polynomials over GF(2), modulo the polynomial."""
    product = 0
    while right:
        if right & 1:
            product ^= left
        right >>= 1
        left <<= 1
        if left >> 32:
            left = (left ^ _POLY) & _MASK
    return product


def _shift_by_bytes(register: int, count: int) -> int:
    """The register after `count` zero bytes: ``register * x^(8*count) mod P``, in O(log count)."""
    factor, power = 1, _BYTE_SHIFT
    while count:
        if count & 1:
            factor = _multiply(factor, power)
        power = _multiply(power, power)
        count >>= 1
    return _multiply(register, factor)


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

    def extend(self, following: Cksum) -> None:
        """Add the data `following` has summed, without the data (zlib's ``crc32_combine``).

        Lets separate workers sum consecutive parts of a file and join the results in order.
        """
        # fastcrc's state is the CRC register (initial value 0) complemented; the register is
        # linear, so register(A + B) = register(A) * x^(8*len(B)) + register(B).
        register = _shift_by_bytes(self._crc ^ _MASK, following._length) ^ following._crc ^ _MASK
        self._crc = register ^ _MASK
        self._length += following._length

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


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) if crc & 0x80000000 else (crc << 1)
        table.append(crc & _MASK)
    return tuple(table)


_TABLE = _make_table()


def _reference_cksum(data: bytes) -> int:
    """Slow pure-Python cksum, table driven; a second oracle for the tests only."""
    crc = 0
    for byte in bytes(data) + _length_bytes(len(data)):
        crc = ((crc << 8) & _MASK) ^ _TABLE[(crc >> 24) ^ byte]
    return crc ^ _MASK
