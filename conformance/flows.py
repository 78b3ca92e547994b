"""Building blocks of the cases: names, keys, registration, key exchange, file transfer, probes."""

from __future__ import annotations

import functools
import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from Crypto.PublicKey.RSA import RsaKey

from backupproto.cksum import Cksum
from backupproto.crypto import (
    CbcEncryptor,
    encrypted_size,
    generate_private_key,
    public_key_der,
    unwrap_aes_key,
)
from backupproto.dialect import DIALECT_2023A, Dialect
from backupproto.errors import CryptoError
from backupproto.events import (
    Acknowledged,
    AesKey,
    CrcOk,
    FileReceived,
    ReconnectApproved,
    Register,
    Registered,
    SendPublicKey,
)
from backupproto.frames import send_file_start

from .case import CaseContext, Wire
from .diagnose import explain_crc
from .profile import oaep_sha256
from .transport import adapting, connect, may_adapt
from .wire import Closed

ZERO_ID = bytes(DIALECT_2023A.client_id_size)


def with_reconnect(dialect: Dialect) -> bool:
    """Cases of the dialects that have 1102 RECONNECT (all but 2022C)."""
    return dialect.has_reconnect


def unique_name(tag: str = "c") -> str:
    """A client or file name no earlier run used: ``cf-<tag>-<random hex>``."""
    return f"cf-{tag}-{uuid.uuid4().hex[:16]}"


@functools.cache
def client_key() -> RsaKey:
    """One RSA-1024 e=17 key for every client of the run (the server does not care)."""
    return generate_private_key()


def unwrap_sha1(wire: Wire, key: RsaKey, wrapped: bytes, what: str) -> bytes:
    """The AES key, unwrapped with OAEP SHA-1 as spec 7.2 requires the server to wrap it; it must
    have the run's dialect's key size (16 bytes, 32 in 2024A/C: spec dialects 18.6)."""
    size = wire.dialect.aes_key_size
    if len(wrapped) != key.size_in_bytes():
        wire.fail(
            f"{what}: encrypted_aes_key of {key.size_in_bytes()} bytes (the RSA-1024 modulus size, spec 5)",
            f"{len(wrapped)} bytes",
        )
    try:
        aes_key = unwrap_aes_key(key, wrapped, size, hash_names=("sha1",))
    except CryptoError as error:
        if "bytes" in str(error) and "decrypt" not in str(error):
            _wrong_key_size(wire, what, str(error))
        hint = "it does not decrypt with RSA-OAEP SHA-1/MGF1-SHA-1"
        try:
            sha256_key = unwrap_aes_key(key, wrapped, size, hash_names=("sha256",))
            info = wire.context.info
            finding = oaep_sha256(info.id if info is not None else "a case")
            if may_adapt(info, finding):
                wire.note("AES key unwrapped with OAEP SHA-256 (adaptation: reported by 7.2-oaep-sha1)")
                return sha256_key
            hint += (
                "; it does decrypt with OAEP SHA-256: the server wraps with SHA-256 (spec 7.2: MUST SHA-1)"
            )
        except CryptoError:
            hint += " nor with SHA-256 (wrong key, wrong padding scheme, or garbage)"
        wire.fail(f"{what}: an AES key wrapped with RSA-OAEP SHA-1 to our public key (spec 7.2)", hint)
    return aes_key


def _wrong_key_size(wire: Wire, what: str, error: str) -> NoReturn:
    """Fail naming the key size; in 2024 a 16-byte key is the reading aes-128-in-2024."""
    dialect = wire.dialect
    size = dialect.aes_key_size
    hint = ""
    if dialect.packetised and "16 bytes" in error.split("expected")[0]:
        hint = (
            f"a 16-byte (AES-128) key where {dialect.name} needs AES-256: reading aes-128-in-2024 "
            "(a mixed dialect; spec dialects 18.6, 18.8)"
        )
    wire.fail(
        f"{what}: a {size}-byte AES-{size * 8} key inside the OAEP wrapping ({dialect.name}; spec 7.2)",
        error,
        hint=hint,
    )


def register(wire: Wire, name: str | None = None) -> tuple[bytes, str]:
    """1100 -> 2100; returns (client_id, name)."""
    name = name or unique_name()
    reply = wire.request(Register(ZERO_ID, name), Registered)
    if reply.client_id == ZERO_ID:
        wire.fail("2100 REGISTERED with a fresh client id (spec 4.1)", "an all-zero client_id")
    return reply.client_id, name


def send_key(wire: Wire, client_id: bytes, name: str) -> bytes:
    """1101 -> 2102; returns the unwrapped AES key."""
    key = client_key()
    reply = wire.request(SendPublicKey(client_id, name, public_key_der(key)), AesKey)
    return unwrap_sha1(wire, key, reply.encrypted_aes_key, "2102 AES_KEY")


@dataclass
class Session:
    """A keyed connection: the wire, the client's id and name, the session's AES key."""

    wire: Wire
    client_id: bytes
    name: str
    aes_key: bytes


def keyed_session(context: CaseContext, label: str | None = None) -> Session:
    """A new connection that registered a new client and exchanged keys (state KEYED)."""
    wire = context.connect(label)
    client_id, name = register(wire)
    return Session(wire, client_id, name, send_key(wire, client_id, name))


def reconnect_key(wire: Wire, reply: ReconnectApproved) -> bytes:
    """The AES key of a 2105."""
    return unwrap_sha1(wire, client_key(), reply.encrypted_aes_key, "2105 RECONNECT_APPROVED")


def payload(size: int, seed: int) -> bytes:
    """`size` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def payload_chunks(size: int, seed: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """`size` pseudo-random bytes in chunks (constant memory)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        piece = min(chunk, left)
        yield rng.randbytes(piece)
        left -= piece


def gnu_cksum(chunks: Iterator[bytes] | list[bytes]) -> int:
    """The CRC printed by the real ``cksum`` binary for the concatenated chunks (streamed to it)."""
    try:
        process = subprocess.Popen(["cksum"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except FileNotFoundError:  # pragma: no cover - every POSIX system has cksum
        summer = Cksum()
        for chunk in chunks:
            summer.update(chunk)
        return summer.value
    assert process.stdin is not None and process.stdout is not None
    for chunk in chunks:
        process.stdin.write(chunk)
    process.stdin.close()
    output = process.stdout.read().decode("ascii")
    process.wait(30)
    return int(output.split()[0])


def check_file_received(
    session: Session,
    reply: FileReceived,
    file_name: str,
    plain_size: int,
    expected_crc: int,
    plaintext: bytes | None,
) -> None:
    """2103's fields against the request: content_size (encrypted), file_name, cksum (GNU cksum)."""
    wire = session.wire
    content_size = encrypted_size(plain_size)
    if reply.content_size != content_size:
        hint = ""
        if reply.content_size == plain_size:
            hint = "it equals the PLAINTEXT size: content_size must repeat the encrypted size of the 1103"
        wire.fail(
            f"2103 FILE_RECEIVED with content_size {content_size} (the 1103's, the encrypted size; spec 5.4)",
            f"content_size {reply.content_size} (plaintext: {plain_size} bytes)",
            hint=hint,
        )
    if reply.file_name != file_name:
        wire.fail(
            f"2103 FILE_RECEIVED with file_name {file_name!r} (spec 5.4)", f"file_name {reply.file_name!r}"
        )
    if reply.cksum != expected_crc:
        hint = explain_crc(reply.cksum, plaintext, session.aes_key) if plaintext is not None else ""
        wire.fail(
            f"2103 cksum {expected_crc} (0x{expected_crc:08x}): GNU `cksum` of the "
            f"{plain_size}-byte plaintext (spec 6)",
            f"cksum {reply.cksum} (0x{reply.cksum:08x})",
            hint=hint or "the value matches none of the known wrong algorithms",
        )


def send_and_check(session: Session, file_name: str, plaintext: bytes) -> FileReceived:
    """1103 of `plaintext` -> 2103, checked against GNU cksum."""
    crc = gnu_cksum([plaintext])
    session.wire.send_file(session.client_id, file_name, plaintext, session.aes_key)
    reply = session.wire.expect(FileReceived, client_id=session.client_id, waiting_for="2103 FILE_RECEIVED")
    check_file_received(session, reply, file_name, len(plaintext), crc, plaintext)
    return reply


def raw_send_file(
    wire: Wire,
    client_id: bytes,
    file_name: str | bytes,
    content_size: int,
    content: bytes,
    *,
    announced: int | None = None,
) -> None:
    """A send-file of one message with any content_size and content (for refused cases), built
    through the schemas: payload_size counts the bytes actually sent. In a packetised dialect it is
    packet 1 of 1, with the orig_file_size that fits content_size (spec dialects 18.2, check 3).
    `announced`: the content bytes payload_size announces (default: those sent)."""
    fields: dict[str, object] = {"content_size": content_size, "file_name": file_name}
    if wire.dialect.packetised:
        fields.update(orig_file_size=max(content_size - 1, 0), packet_number=1, total_packets=1)
    frame = send_file_start(client_id, fields, schemas=wire.schemas)
    size = len(content) if announced is None else announced
    frame = frame.with_header(payload_size=wire.schemas.send_file_prefix_size + size)
    wire.send_bytes(frame.data + content)


def raw_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-CBC (zero IV) of whole blocks, WITHOUT padding: content that fails to decrypt (bad padding)."""
    return CbcEncryptor(key).update(data)


def confirm(session: Session, file_name: str) -> None:
    """1104 -> 2104."""
    session.wire.request(CrcOk(session.client_id, file_name), Acknowledged)


def check_listening(context: CaseContext, requirement: str, after: str, hint: str) -> None:
    """Fail unless a new TCP connection to the target is accepted (adaptation: a server that serves
    one connection at a time gets the case's connections closed, and time to listen again)."""
    if adapting(context.info, "one-connection-at-a-time"):
        context.close()  # a bare connect would take the server's one slot: the next connection shows it
        return
    address = (context.target.host, context.target.port)
    try:
        connect(context.info, address, context.timeout_s, context.close).close()
    except OSError as error:
        context.fail(requirement, f"connect failed after {after}: {error}", hint=hint)


def probe(context: CaseContext, after: str) -> None:
    """A fresh client registers: the server still serves after `after` (spec 9.1)."""
    check_listening(
        context,
        f"a fresh client can connect and register after {after} (spec 9.1: a failure on one "
        "connection MUST NOT affect other connections, and the server keeps listening)",
        after,
        hint="the server seems to have died or stopped listening",
    )
    wire = context.connect("sanity probe")
    name = unique_name("probe")
    try:
        wire.send(Register(ZERO_ID, name))
        received = wire.receive(waiting_for="2100 REGISTERED for a fresh client (sanity probe)")
    except Closed:
        wire.fail(
            f"a fresh client can still register after {after} (spec 9.1: a failure on one connection "
            "MUST NOT affect other connections)",
            "the server closed the probe's connection without a response",
        )
    if not isinstance(received.event, Registered):
        wire.fail(
            f"a fresh client can still register after {after} (spec 9.1)",
            f"{type(received.event).__name__} ({int(received.event.code)})",
        )
    wire.close()


def expect_refused(
    context: CaseContext, wire: Wire, because: str, *, allow_silent_close: bool = False
) -> None:
    """2107 then close (spec 9.1), then a fresh client can still register (the sanity probe)."""
    wire.expect_error_and_close(allow_silent_close=allow_silent_close, because=because)
    probe(context, after=because)


def raw_name(text: bytes, dialect: Dialect = DIALECT_2023A) -> bytes:
    """A name field holding exactly `text` then NUL padding (no checks: for bad names)."""
    return text.ljust(dialect.name_size, b"\x00")[: dialect.name_size]
