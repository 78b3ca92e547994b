"""Name a wrong cksum: compute the usual wrong algorithms on the same data and say which one matches."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

from fastcrc import crc32 as _fastcrc

from backupproto.cksum import cksum
from backupproto.crypto import CbcDecryptor, CbcEncryptor

_CHUNK_SIZES = (16, 64, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 1 << 20)
_LIMIT = 16 << 20


def _posix_crc_without_length(data: bytes) -> int:
    """The POSIX CRC (poly 0x04C11DB7, MSB first, complemented) without the length suffix."""
    return int(_fastcrc.cksum(data))


def _swap32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "little"), "big")


def _encrypt(key: bytes, plaintext: bytes) -> bytes:
    encryptor = CbcEncryptor(key)
    return encryptor.update(plaintext) + encryptor.finalize()


def _raw_decrypt(key: bytes, piece: bytes) -> bytes:
    """AES-CBC decryption of whole blocks from the zero IV, padding kept: the decryptor holds back
    the last block of what it is given, so one spare block is fed after the piece."""
    return CbcDecryptor(key).update(piece + bytes(16))[: len(piece)]


def _chunkwise_plaintexts(key: bytes, ciphertext: bytes) -> list[tuple[str, bytes]]:
    """The plaintexts a server gets when it decrypts the one-stream content chunk by chunk."""
    found = []
    for size in _CHUNK_SIZES:
        if size >= len(ciphertext):
            break
        pieces = [ciphertext[i : i + size] for i in range(0, len(ciphertext), size)]
        raw = b"".join(_raw_decrypt(key, piece) for piece in pieces)
        found.append((f"{size}-byte chunks each decrypted from IV 0", raw))
        stripped = raw[: -raw[-1]] if 1 <= raw[-1] <= 16 else raw
        found.append((f"{size}-byte chunks each decrypted from IV 0, padding stripped", stripped))
    return found


def explain_crc(value: int, plaintext: bytes, aes_key: bytes) -> str:
    """Say which wrong computation on this file gives `value` (empty if none does)."""
    if len(plaintext) > _LIMIT:
        return ""
    ciphertext = _encrypt(aes_key, plaintext)
    md5 = hashlib.md5(plaintext).digest()
    candidates: list[tuple[str, Callable[[], int]]] = [
        ("zlib.crc32 of the plaintext (CRC-32/ISO-HDLC, not POSIX cksum)", lambda: zlib.crc32(plaintext)),
        (
            "the POSIX CRC of the plaintext WITHOUT the length appended",
            lambda: _posix_crc_without_length(plaintext),
        ),
        (
            "the cksum of the plaintext, byte-swapped (big-endian u32 field)",
            lambda: _swap32(cksum(plaintext)),
        ),
        ("the cksum of the ENCRYPTED content, not of the plaintext", lambda: cksum(ciphertext)),
        ("zlib.crc32 of the ENCRYPTED content", lambda: zlib.crc32(ciphertext)),
        (
            "the first 4 bytes of md5(plaintext), big-endian (an md5-derived number)",
            lambda: int.from_bytes(md5[:4], "big"),
        ),
        (
            "the first 4 bytes of md5(plaintext), little-endian (an md5-derived number)",
            lambda: int.from_bytes(md5[:4], "little"),
        ),
        (
            "the last 4 bytes of md5(plaintext), big-endian (an md5-derived number)",
            lambda: int.from_bytes(md5[-4:], "big"),
        ),
        (
            "the last 4 bytes of md5(plaintext), little-endian (an md5-derived number)",
            lambda: int.from_bytes(md5[-4:], "little"),
        ),
        (
            "md5(plaintext) as an integer mod 2^32 (an md5-derived number)",
            lambda: int.from_bytes(md5, "big") & 0xFFFFFFFF,
        ),
        (
            "the cksum of the plaintext with its PKCS#7 padding left on",
            lambda: cksum(plaintext + bytes([16 - len(plaintext) % 16]) * (16 - len(plaintext) % 16)),
        ),
    ]
    for description, compute in candidates:
        if compute() == value:
            return f"the value equals {description}"
    for description, data in _chunkwise_plaintexts(aes_key, ciphertext):
        if cksum(data) == value:
            return (
                f"the value equals the cksum of the content decrypted in {description}: the server does not "
                "decrypt the file as ONE CBC stream (spec 7.3: chunked encryption is not conformant)"
            )
    return ""
