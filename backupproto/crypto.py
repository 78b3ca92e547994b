"""The cryptography of protocol v3: RSA-1024 keys, OAEP-wrapped AES keys, and streaming
AES-CBC (128- or 256-bit keys) with a zero IV and PKCS#7 padding (as Crypto++ does it).

Two libraries, each where it is best. pycryptodome's `RsaKey` is part of this module's API
and its DER reader gives the precise refusals of `import_public_key`; a server pays one key
import and one OAEP wrap per session, which cost about 0.2 ms on pycryptodome (5% of a small
session's CPU) and 0.05 ms on OpenSSL, so with `cryptography` installed a key in canonical
DER is parsed by OpenSSL and OAEP wrapping runs there (anything else takes the pycryptodome
path, which words the refusal). OAEP unwrapping runs there too (0.09 ms against 0.29 ms; the
private key converted once per key object), `backend=` choosing as for AES. Bulk AES
runs on OpenSSL through the `cryptography` package when it is installed (a declared
dependency): OpenSSL uses AES-NI and decrypts CBC blocks in parallel (about 10x
pycryptodome's decryption here) and lets other threads run meanwhile; pycryptodome is the
fallback when `cryptography` cannot be imported. Both give the same bytes; the test vectors
run on both (`AES_BACKENDS`, the `backend=` argument of the CBC classes).

Keys travel as Crypto++ writes them: the public key as X.509 SubjectPublicKeyInfo DER
(160 bytes for RSA-1024 with e=17), the private key as PKCS#8 DER. Refused keys and
ciphertexts raise `CryptoError` with a kind from `ErrorKind` and a message saying why.
"""

from __future__ import annotations

import base64
import binascii
import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Random import get_random_bytes
from Crypto.Util.asn1 import DerBitString, DerObjectId, DerOctetString, DerSequence

try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
except ImportError:  # pragma: no cover - the fallback when `cryptography` is not installed
    Cipher = None  # type: ignore[assignment,misc]

from backupproto.dialect import V3
from backupproto.errors import CryptoError, ErrorKind

if TYPE_CHECKING:
    from Crypto.Cipher.PKCS1_OAEP import PKCS1OAEP_Cipher

# pycryptodome's AES and OAEP (the fallbacks) and OpenSSL's DER reader (the server's) are
# imported where used: together about 15 ms of every client's start-up otherwise.

__all__ = [
    "AES_BACKENDS",
    "AES_KEY_SIZES",
    "DEFAULT_AES_BACKEND",
    "UPDATE_INTO_SLACK",
    "CbcDecryptor",
    "CbcEncryptor",
    "RsaKey",
    "encrypted_size",
    "export_private_key",
    "generate_private_key",
    "import_private_key",
    "import_public_key",
    "new_aes_key",
    "public_key_der",
    "unwrap_aes_key",
    "wrap_aes_key",
]

RSA_ENCRYPTION_OID: Final = "1.2.840.113549.1.1.1"
BLOCK: Final = V3.aes_block_size
ZERO_IV: Final = bytes(BLOCK)
_OAEP_HASHES: Final = ("sha1", "sha256")
AES_KEY_SIZES: Final = (16, 32)
"""AES-128 (v3, 2022C, 2023A/C) and AES-256 (2024A/C)."""
AES_BACKENDS: Final[tuple[str, ...]] = (
    ("openssl", "pycryptodome") if Cipher is not None else ("pycryptodome",)
)
"""The AES implementations available here, preferred first."""
DEFAULT_AES_BACKEND: Final = AES_BACKENDS[0]
UPDATE_INTO_SLACK: Final = 2 * BLOCK
"""`update_into` needs room for len(data) plus this (held bytes, and OpenSSL's one-block margin)."""

_Buffer = bytes | bytearray | memoryview
_Twin = TypeVar("_Twin")


# --- OpenSSL twins of pycryptodome keys ----------------------------------------------------


class _OpenSslTwins(Generic[_Twin]):
    """OpenSSL twins of pycryptodome keys, by key object (its id(), checked by a weak
    reference); an entry goes when its key is garbage collected. A key is converted once,
    then found in about 0.2 us."""

    def __init__(self) -> None:
        self._twins: dict[int, tuple[weakref.ref[RsaKey], _Twin]] = {}

    def get(self, key: RsaKey, convert: Callable[[RsaKey], _Twin]) -> _Twin:
        """The twin of `key`, made by `convert` the first time."""
        entry = self._twins.get(id(key))
        if entry is not None and entry[0]() is key:
            return entry[1]
        twin = convert(key)
        self.put(key, twin)
        return twin

    def put(self, key: RsaKey, twin: _Twin) -> None:
        """Remember `twin` for `key` (for as long as `key` lives)."""
        ident = id(key)
        self._twins[ident] = (weakref.ref(key, lambda _: self._twins.pop(ident, None)), twin)

    def __contains__(self, key: RsaKey) -> bool:
        entry = self._twins.get(id(key))
        return entry is not None and entry[0]() is key


_PRIVATE_TWINS: _OpenSslTwins[rsa.RSAPrivateKey | None] = _OpenSslTwins()
"""Private keys for `unwrap_aes_key` (None: OpenSSL refused the key, pycryptodome decrypts)."""
_PUBLIC_TWINS: _OpenSslTwins[rsa.RSAPublicKey] = _OpenSslTwins()
"""Public keys for `wrap_aes_key`; `import_public_key` leaves the key OpenSSL parsed here."""


# --- RSA keys -------------------------------------------------------------------------------


def generate_private_key(bits: int = V3.rsa_bits, e: int = V3.rsa_exponent) -> RsaKey:
    """A fresh RSA private key; for the protocol's 1024 bits, checks its public DER fits 160."""
    key = RSA.generate(bits, e=e)
    if bits == V3.rsa_bits:
        size = len(public_key_der(key))
        if size > V3.public_key_size:  # cannot happen for e=17; guards other exponents
            raise ValueError(f"public key DER is {size} bytes; the field holds {V3.public_key_size}")
    return key


def public_key_der(key: RsaKey) -> bytes:
    """The X.509 SubjectPublicKeyInfo DER of the key's public half (unpadded)."""
    der: bytes = key.public_key().export_key(format="DER")
    return der


def _bad_public_key(message: str) -> CryptoError:
    return CryptoError(ErrorKind.BAD_PUBLIC_KEY, message, field="public_key")


def _spki_algorithm(der: bytes) -> str:
    """The algorithm OID of a SubjectPublicKeyInfo; ValueError if it is not one."""
    spki = DerSequence().decode(der, strict=True)
    if len(spki) != 2:
        raise ValueError(
            f"a SEQUENCE of {len(spki)} elements, expected 2"
            + (" (this looks like a private key)" if len(spki) >= 3 else "")
        )
    DerBitString().decode(spki[1], strict=True)
    algorithm = DerSequence().decode(spki[0], strict=True)
    if not 1 <= len(algorithm) <= 2:
        raise ValueError("malformed AlgorithmIdentifier")
    oid: str = DerObjectId().decode(algorithm[0], strict=True).value
    return oid


def import_public_key(der: _Buffer, bits: int | None = V3.rsa_bits) -> RsaKey:
    """Parse an RSA public key from SubjectPublicKeyInfo DER (no padding, no trailing bytes).

    `bits`: the required modulus size (None accepts any). Raises CryptoError bad_public_key
    for anything that is not such a key: not DER, another algorithm, private key material,
    wrong modulus size, an even or too small exponent.
    """
    data = bytes(der)
    key = _import_canonical_public_key(data)
    if key is None:
        key = _import_any_public_key(data)
    if bits is not None and key.size_in_bits() != bits:
        raise _bad_public_key(f"RSA modulus is {key.size_in_bits()} bits; expected {bits}")
    if key.e < 3 or key.e % 2 == 0:
        raise _bad_public_key(f"RSA public exponent {key.e} is not an odd number >= 3")
    return key


def _import_canonical_public_key(data: bytes) -> RsaKey | None:
    """The fast path (OpenSSL): an RSA SubjectPublicKeyInfo that OpenSSL writes back byte for
    byte; None for anything else (the slow path then says what is wrong)."""
    if Cipher is None:  # pragma: no cover - without `cryptography`
        return None
    from cryptography.hazmat.primitives import serialization

    try:
        parsed = serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (
        not isinstance(parsed, rsa.RSAPublicKey)
        or parsed.public_bytes(serialization.Encoding.DER, spki) != data
    ):
        return None
    numbers = parsed.public_numbers()
    key = RSA.construct((numbers.n, numbers.e), consistency_check=False)
    _PUBLIC_TWINS.put(key, parsed)  # spares `wrap_aes_key` a conversion
    return key


def _import_any_public_key(data: bytes) -> RsaKey:
    """The pycryptodome path: any DER it can read, and a precise refusal otherwise."""
    if not data:
        raise _bad_public_key("empty public key")
    if data[0] != 0x30:
        raise _bad_public_key(f"not a DER SEQUENCE (first byte is 0x{data[0]:02x})")
    try:
        oid = _spki_algorithm(data)
    except (ValueError, IndexError, TypeError) as error:
        raise _bad_public_key(f"not an X.509 SubjectPublicKeyInfo DER structure: {error}") from None
    if oid != RSA_ENCRYPTION_OID:
        raise _bad_public_key(
            f"not an RSA key: algorithm OID {oid}, expected rsaEncryption {RSA_ENCRYPTION_OID}"
        )
    try:
        key = RSA.import_key(data)
    except (ValueError, IndexError, TypeError) as error:
        raise _bad_public_key(f"malformed RSA public key: {error}") from None
    if key.has_private():
        raise _bad_public_key("private key material where a public key was expected")
    return key


def export_private_key(key: RsaKey) -> bytes:
    """The private key as PKCS#8 PrivateKeyInfo DER, as Crypto++ saves it."""
    if not key.has_private():
        raise ValueError("not a private key")
    der: bytes = key.export_key(format="DER", pkcs=8)
    return der


def _bad_private_key(message: str) -> CryptoError:
    return CryptoError(ErrorKind.BAD_PRIVATE_KEY, f"RSA private key: {message}", field="private_key")


def import_private_key(data: _Buffer | str) -> RsaKey:
    """Parse an RSA private key from DER (PKCS#8 or PKCS#1), PEM, or base64 of the DER
    (whitespace and line breaks ignored, as in ``me.info``). CryptoError if it is none."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    if not stripped:
        raise _bad_private_key("empty")
    if stripped.startswith(b"-----BEGIN"):
        source: bytes = stripped
    elif raw[0] == 0x30:
        source = raw
    else:
        try:
            source = base64.b64decode(b"".join(stripped.split()), validate=True)
        except (binascii.Error, ValueError) as error:
            raise _bad_private_key(f"neither DER, PEM nor base64 ({error})") from None
    try:
        key = _import_private_der(source) or RSA.import_key(source)
    except (ValueError, IndexError, TypeError) as error:
        raise _bad_private_key(f"not a readable RSA key ({error})") from None
    if not key.has_private():
        raise _bad_private_key("this is a public key; a private key was expected")
    return key


def _import_private_der(der: bytes) -> RsaKey | None:
    """An unencrypted RSA private key in PKCS#8 or PKCS#1 DER whose numbers fit together; None
    for anything else (`RSA.import_key` then reads it or words the refusal).

    A client reads its own key at every start: this path spares it `RSA.import_key`'s import of
    the PEM reader and its ciphers (14 ms) and the primality tests of p and q (4.5 ms). What
    decryption needs is checked in plain integers: n = p*q, and d inverts e modulo
    lcm(p-1, q-1), which catches a changed byte in any of them."""
    if not der.startswith(b"\x30"):
        return None
    outer = DerSequence().decode(der, strict=True)
    if len(outer) == 3 and outer[0] == 0:  # PKCS#8 PrivateKeyInfo: version 0, algorithm, key
        algorithm = DerSequence().decode(outer[1], strict=True)
        if DerObjectId().decode(algorithm[0], strict=True).value != RSA_ENCRYPTION_OID:
            return None
        outer = DerSequence().decode(DerOctetString().decode(outer[2], strict=True).payload, strict=True)
    if len(outer) != 9 or outer[0] != 0 or not outer.hasOnlyInts():  # PKCS#1 RSAPrivateKey, two primes
        return None
    n, e, d, p, q = outer[1:6]
    if not (1 < p < n and 1 < q < n and p * q == n and 1 < e < n and 1 < d < n):
        raise ValueError("the modulus is not the product of the two primes, or a number is out of range")
    if e * d % math.lcm(p - 1, q - 1) != 1:
        raise ValueError("the private exponent does not invert the public one")
    return RSA.construct((n, e, d, p, q), consistency_check=False)


# --- AES key transport ----------------------------------------------------------------------


def new_aes_key(size: int = V3.aes_key_size) -> bytes:
    """A fresh random AES key: 16 bytes (AES-128, the default) or 32 (AES-256)."""
    if size not in AES_KEY_SIZES:
        raise ValueError(f"AES key size must be one of {AES_KEY_SIZES}, not {size}")
    return get_random_bytes(size)


def _check_oaep_hash(hash_name: str) -> None:
    if hash_name not in _OAEP_HASHES:
        raise ValueError(f"hash_name must be 'sha1' or 'sha256', not {hash_name!r}")


def _oaep(key: RsaKey, hash_name: str) -> PKCS1OAEP_Cipher:
    from Crypto.Cipher import PKCS1_OAEP
    from Crypto.Hash import SHA1, SHA256

    _check_oaep_hash(hash_name)
    return PKCS1_OAEP.new(key, hashAlgo=SHA1 if hash_name == "sha1" else SHA256)  # MGF1: same hash


def wrap_aes_key(public_key: RsaKey, aes_key: _Buffer, hash_name: str = "sha1") -> bytes:
    """RSA-OAEP encryption of `aes_key` (hash and MGF1 hash: "sha1" or "sha256").

    The key length is not checked, so tests can wrap deliberately wrong keys. Runs on OpenSSL
    when `cryptography` is installed (4x faster than pycryptodome), else on pycryptodome.
    """
    if Cipher is None:  # pragma: no cover - without `cryptography`
        wrapped: bytes = _oaep(public_key, hash_name).encrypt(bytes(aes_key))
        return wrapped
    return _PUBLIC_TWINS.get(public_key, _to_openssl_public_key).encrypt(
        bytes(aes_key), _openssl_oaep(hash_name)
    )


def _to_openssl_public_key(key: RsaKey) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(key.e, key.n).public_key()


def _openssl_oaep(hash_name: str) -> padding.OAEP:
    """OpenSSL's OAEP padding with `hash_name` for the hash and MGF1 ("sha1" or "sha256")."""
    _check_oaep_hash(hash_name)
    algorithm = hashes.SHA1() if hash_name == "sha1" else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def unwrap_aes_key(
    private_key: RsaKey,
    wrapped: _Buffer,
    key_size: int = V3.aes_key_size,
    *,
    hash_names: tuple[str, ...] = ("sha1", "sha256"),
    backend: str = DEFAULT_AES_BACKEND,
) -> bytes:
    """Decrypt an OAEP-wrapped AES key, trying SHA-1 then SHA-256 (or only `hash_names`); it must
    be `key_size` bytes (the dialect's: 16, or 32 in 2024A/C).

    `backend`: one of `AES_BACKENDS`; OpenSSL (the default when installed) decrypts about 4x
    faster than pycryptodome, with the same results. Raises CryptoError bad_ciphertext otherwise.
    """
    if backend not in AES_BACKENDS:
        raise ValueError(f"OAEP backend must be one of {AES_BACKENDS}, not {backend!r}")
    data = bytes(wrapped)
    modulus_size = private_key.size_in_bytes()
    if len(data) != modulus_size:
        raise CryptoError(
            ErrorKind.BAD_CIPHERTEXT,
            f"wrapped AES key is {len(data)} bytes",
            field="encrypted_aes_key",
            expected=f"{modulus_size} bytes (the RSA modulus size)",
        )
    openssl_key = _PRIVATE_TWINS.get(private_key, _to_openssl_private_key) if backend == "openssl" else None
    for hash_name in hash_names:
        try:
            if openssl_key is None:
                aes_key: bytes = _oaep(private_key, hash_name).decrypt(data)
            else:
                aes_key = openssl_key.decrypt(data, _openssl_oaep(hash_name))
        except ValueError:
            continue
        if len(aes_key) != key_size:
            raise CryptoError(
                ErrorKind.BAD_CIPHERTEXT,
                f"unwrapped AES key (OAEP-{hash_name.upper()}) is {len(aes_key)} bytes",
                field="encrypted_aes_key",
                expected=f"{key_size} bytes",
            )
        return aes_key
    raise CryptoError(
        ErrorKind.BAD_CIPHERTEXT,
        "wrapped AES key does not decrypt with RSA-OAEP (tried SHA-1 and SHA-256)",
        field="encrypted_aes_key",
    )


def _to_openssl_private_key(key: RsaKey) -> rsa.RSAPrivateKey | None:
    """`key` for OpenSSL (0.07 ms); None if OpenSSL refuses it."""
    n, e, d, p, q = key.n, key.e, key.d, key.p, key.q
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    try:
        # pycryptodome checked the key when it was imported or generated (RSA.import_key,
        # RSA.generate); OpenSSL's own check costs 4.8 ms against 0.07 ms for the conversion.
        return numbers.private_key(unsafe_skip_rsa_key_validation=True)
    except ValueError:
        return None


# --- AES-CBC, zero IV, PKCS#7, streaming ----------------------------------------------------


def encrypted_size(plain_size: int) -> int:
    """Ciphertext size of `plain_size` bytes: PKCS#7 always adds 1..16 bytes."""
    return (plain_size // BLOCK + 1) * BLOCK


def _check_key(key: _Buffer) -> bytes:
    key = bytes(key)
    if len(key) not in AES_KEY_SIZES:
        raise ValueError(f"AES key must be 16 or 32 bytes, not {len(key)}")
    return key


class _CbcStream:
    """Shared machinery: feed whole blocks to the AES backend, at most two calls per update.

    Bytes carried over from the previous call (`_pending`) are completed to a block with the
    head of the new chunk (at most 32 bytes copied); the rest of the chunk goes to the
    backend as a view. Output goes into a reused buffer (`update_into`: the caller's).
    `backend`: one of `AES_BACKENDS` (default `DEFAULT_AES_BACKEND`).
    """

    _encrypting = True

    def __init__(self, key: _Buffer, *, backend: str = DEFAULT_AES_BACKEND) -> None:
        key = _check_key(key)
        if backend not in AES_BACKENDS:
            raise ValueError(f"AES backend must be one of {AES_BACKENDS}, not {backend!r}")
        self.backend = backend
        self._openssl: CipherContext | None = None
        self._out = bytearray()
        if backend == "openssl":
            cipher = Cipher(algorithms.AES(key), modes.CBC(ZERO_IV))
            self._openssl = cipher.encryptor() if self._encrypting else cipher.decryptor()
        else:
            from Crypto.Cipher import AES

            self._cipher = AES.new(key, AES.MODE_CBC, iv=ZERO_IV)
        self._pending = bytearray()
        self._length = 0
        self._done = False

    def _run(self, part: bytes | bytearray | memoryview, target: memoryview) -> None:
        """Encrypt or decrypt `part` (whole blocks) into the start of `target` (room: len + 16)."""
        if self._openssl is not None:
            self._openssl.update_into(part, target)
        elif self._encrypting:
            self._cipher.encrypt(part, output=target[: len(part)])
        else:
            self._cipher.decrypt(part, output=target[: len(part)])

    def _process(self, data: bytes | bytearray | memoryview) -> bytes:
        """Whole blocks in, their output as bytes: through a reused buffer, then one copy out
        (OpenSSL's own ``update()`` allocates its output in slower steps: about 4x slower)."""
        if len(self._out) < len(data) + BLOCK:
            self._out = bytearray(len(data) + BLOCK)
        target = memoryview(self._out)
        self._run(data, target)
        return bytes(target[: len(data)])

    def _keep(self, total: int) -> int:
        """How many of `total` available bytes to keep for later."""
        raise NotImplementedError

    def update(self, data: _Buffer) -> bytes:
        """Process every block that can be processed now; keep the rest for later."""
        parts = self._blocks(data)
        size = sum(len(part) for part in parts)
        if not size:
            return b""
        if len(self._out) < size + BLOCK:
            self._out = bytearray(size + BLOCK)
        target = memoryview(self._out)
        self._run_parts(parts, target)
        self._consumed(data, size)
        return bytes(target[:size])

    def update_into(self, data: _Buffer, out: bytearray | memoryview) -> memoryview:
        """`update()` writing into the caller's `out` (at least ``len(data) + UPDATE_INTO_SLACK``
        bytes) instead of a new bytes object: a view of the bytes produced. Reusing `out` spares
        an allocation and its page faults per call, which costs more than the AES itself."""
        if len(out) < len(data) + UPDATE_INTO_SLACK:
            raise ValueError(f"out holds {len(out)} bytes; needs len(data) + {UPDATE_INTO_SLACK}")
        parts = self._blocks(data)
        size = sum(len(part) for part in parts)
        target = memoryview(out)
        if size:
            self._run_parts(parts, target)
            self._consumed(data, size)
        return target[:size]

    def _run_parts(self, parts: list[memoryview | bytes], target: memoryview) -> None:
        offset = 0
        for part in parts:
            self._run(part, target[offset:])
            offset += len(part)

    def _blocks(self, data: _Buffer) -> list[memoryview | bytes]:
        """The whole blocks to process now, in order: the held bytes completed to a block from
        the head of `data` (at most 32 bytes copied), then the rest of `data` as a view."""
        if self._done:
            raise ValueError("update() after finalize()")
        view = memoryview(data).cast("B")
        self._length += len(view)
        held = len(self._pending)
        total = held + len(view)
        cut = total - self._keep(total)  # a multiple of 16
        if cut <= 0:
            self._pending += view
            return []
        if not held:
            return [view[:cut]]
        head = -held % BLOCK  # bytes of `data` that complete the held partial block
        parts: list[memoryview | bytes] = [bytes(self._pending) + bytes(view[:head])]
        if cut - held > head:
            parts.append(view[head : cut - held])
        return parts

    def _consumed(self, data: _Buffer, cut: int) -> None:
        """After processing `cut` bytes: keep the rest of `data` (beyond the held bytes) for later."""
        held = len(self._pending)
        self._pending.clear()
        self._pending += memoryview(data).cast("B")[cut - held :]

    def _finish(self) -> bytes:
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        last = bytes(self._pending)
        self._pending.clear()
        return last


class CbcEncryptor(_CbcStream):
    """Streaming AES-CBC encryption (IV zero, PKCS#7): ``update()`` chunks, then
    ``finalize()``. Only a partial block (< 16 bytes) is kept between calls."""

    def _keep(self, total: int) -> int:
        return total % BLOCK

    def finalize(self) -> bytes:
        """Encrypt the last block with its PKCS#7 padding (a full block if none pending)."""
        last = self._finish()
        pad = BLOCK - len(last)
        return self._process(last + bytes([pad]) * pad)


class CbcDecryptor(_CbcStream):
    """Streaming AES-CBC decryption (IV zero, PKCS#7). ``update()`` holds back the last
    full block so that ``finalize()`` can check and strip the padding."""

    _encrypting = False

    def _keep(self, total: int) -> int:
        return total % BLOCK or BLOCK

    def finalize(self) -> bytes:
        """Decrypt the last block and strip its padding.

        CryptoError bad_ciphertext for an empty input or a length that is not a multiple of
        16; bad_padding when the last block does not end in valid PKCS#7 padding.
        """
        last = self._finish()
        if self._length == 0 or self._length % BLOCK:
            raise CryptoError(
                ErrorKind.BAD_CIPHERTEXT,
                f"ciphertext is {self._length} bytes",
                field="content",
                expected="a positive multiple of 16 bytes",
            )
        plain = self._process(last)
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CryptoError(
                ErrorKind.BAD_PADDING,
                "the last block does not end in valid PKCS#7 padding",
                field="content",
                expected="1..16 bytes each equal to the padding length",
            )
        return plain[:-pad]
