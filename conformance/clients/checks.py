"""Judgments shared by the client cases, each with a diagnosis that names the usual fault."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from backupproto import crypto, detect
from backupproto.cksum import cksum
from backupproto.dialect import DIALECTS, RequestCode
from backupproto.schemas import schemas_for

from .context import ClientCase, Outcome
from .server import Connection, FileRecord
from .tap import PacketRecord
from .workdir import ME_INFO, PRIV_KEY, BadClientFile, Identity, read_me_info, read_priv_key

CHUNK_GUESSES = tuple(1 << bits for bits in range(10, 21))
"""Chunk sizes a client may (wrongly) encrypt separately: 1 KiB .. 1 MiB."""


def _sha256(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _chunked(key: bytes, plain: bytes, chunk: int, *, pad_each: bool) -> str:
    """sha256 of `plain` encrypted as one CBC stream per `chunk` bytes (padded each, or only at the end)."""
    parts = []
    for start in range(0, max(len(plain), 1), chunk):
        piece = plain[start : start + chunk]
        encryptor = crypto.CbcEncryptor(key)
        body = encryptor.update(piece)
        last = start + chunk >= len(plain)
        parts.append(body + encryptor.finalize() if pad_each or last else body + encryptor.update(b""))
    return _sha256(parts)


def explain_content(record: FileRecord, plain: bytes, key: bytes | None) -> str:
    """Why a 1103's content is not the file as one AES-CBC stream with PKCS#7 (best guess)."""
    size = len(plain)
    if record.content_size == size and size % 16 == 0:
        return (
            f"no padding block: content_size {size} equals the plaintext size, a multiple of 16; "
            "PKCS#7 always adds padding, a whole block of 16 bytes 0x10 here (spec 7.3)"
        )
    if key is None:
        return "no AES key was agreed on this connection"
    if record.short_key_cksum is not None and record.short_key_cksum == cksum(plain):
        return (
            "the client follows the aes-128-in-2024 reading: it encrypts with only the first 16 bytes "
            f"of the {len(key)}-byte session key (AES-128); 2024A/2024C use AES-256, all 32 bytes "
            "(dialects 18.6)"
        )
    if size <= 16 << 20:
        for chunk in CHUNK_GUESSES:
            if chunk >= size:
                break
            for pad_each in (True, False):
                if _chunked(key, plain, chunk, pad_each=pad_each) == record.cipher_sha256:
                    how = "each padded" if pad_each else "a new IV for each"
                    return (
                        f"the client encrypts each {chunk}-byte chunk as a separate CBC stream ({how}); "
                        "the whole file must be ONE CBC stream with one padding at its end (spec 7.3)"
                    )
    if record.decrypt_error:
        return f"the content does not decrypt with the session key: {record.decrypt_error}"
    return "the content decrypts, but not to the file's bytes: wrong key or data encrypted"


def check_file_sent(case: ClientCase, outcome: Outcome, file_name: str, plain: bytes) -> FileRecord:
    """The last complete 1103 of `file_name`: right sizes, and content that decrypts to `plain`."""
    found = [
        (connection, record)
        for connection in outcome.connections
        for record in connection.files
        if record.file_name == file_name
    ]
    if not found:
        explain_rejected(case, outcome)
        case.fail(f"a 1103 SEND_FILE of {file_name!r}", f"no 1103 of it ({_codes(outcome)})")
    connection, record = found[-1]
    want = crypto.encrypted_size(len(plain))
    prefix = schemas_for(case.dialect).send_file_prefix_size
    if record.content_size != want:
        hint = explain_content(record, plain, connection.aes_key)
        if record.content_size == len(plain) and len(plain) % 16:
            hint = "content_size is the PLAINTEXT size; it must be the encrypted size (with PKCS#7 padding)"
        case.fail(
            f"content_size {want} for a {len(plain)}-byte file (spec 4.4, 7.3)",
            f"content_size {record.content_size}",
            hint=hint,
        )
    if not case.dialect.packetised and record.payload_size != prefix + want:
        case.fail(f"payload_size {prefix} + {want}", f"payload_size {record.payload_size}")
    if case.dialect.packetised:
        mine = [packet for packet in connection.packets if packet.file_name == file_name]
        check_packets(case, mine, plain, connection.aes_key)
    if not record.complete:
        case.fail(f"{want} content bytes", f"{record.received} before the connection ended")
    if record.decrypt_error or (record.plain_size, record.plain_cksum) != (len(plain), cksum(plain)):
        case.fail(
            "content that decrypts (session key, zero IV, one CBC stream, PKCS#7) to the "
            f"{len(plain)}-byte file",
            record.decrypt_error or f"{record.plain_size} bytes with cksum {record.plain_cksum}",
            hint=explain_content(record, plain, connection.aes_key),
        )
    return record


def packet_reading(packets: list[PacketRecord]) -> str | None:
    """The named reading of dialects 18.2 the packets of a 2024 client follow (None: none seen)."""
    for packet in packets:
        number, total, orig = packet.packet_number, packet.total_packets, packet.orig_file_size
        size = packet.content_size
        if number is None or total is None or orig is None:
            continue
        one_stream = crypto.encrypted_size(orig)
        if total == 1 and number > 1:
            return (
                f"the total-first reading: a packet reads as packet {number} of {total}; the client writes "
                "total_packets before packet_number (the order is packet_number, then total_packets)"
            )
        if number == 0:
            return "the from-0 reading: the client numbers its packets from 0; they are numbered from 1"
        if total > 1 and size == packet.length and size != one_stream:
            return (
                f"the per-packet-content-size reading: content_size {size} is this packet's length; it is "
                f"the whole file's encrypted size ({one_stream}) in every packet"
            )
        if total > 1 and size == one_stream + 16 * (total - 1):
            return (
                f"the per-packet-encryption reading: content_size {size} counts one PKCS#7 padding per "
                f"packet ({total} packets); the file is ONE CBC stream ({one_stream} bytes) cut into packets"
            )
    return None


def _sends(packets: list[PacketRecord]) -> list[list[PacketRecord]]:
    """The packets grouped by send of the file (a send starts again at a number not above the last)."""
    sends: list[list[PacketRecord]] = []
    for packet in packets:
        last = sends[-1][-1].packet_number if sends else None
        if last is None or packet.packet_number is None or packet.packet_number <= last:
            sends.append([])
        sends[-1].append(packet)
    return sends


def _starts_own_chain(packet: PacketRecord, offset: int, key: bytes, plain: bytes) -> bool:
    """Whether the packet's first cipher block, decrypted from the zero IV as if the packet were a
    CBC stream of its own, gives the file's bytes at `offset` (in one stream it gives them XOR the
    previous cipher block instead)."""
    if len(packet.first_block) < crypto.BLOCK or offset < 0:
        return False
    alone = crypto.CbcDecryptor(key).update(packet.first_block + bytes(crypto.BLOCK))
    return alone == plain[offset : offset + crypto.BLOCK]


def packets_decrypting_alone(packets: list[PacketRecord], key: bytes | None, plain: bytes) -> str | None:
    """The per-packet-encryption reading, proven from the content: in some send of the file every
    packet after the first starts a CBC chain of its own (the zero IV), padded or not (18.2)."""
    if key is None:
        return None
    for send in _sends(packets):
        offset, own = 0, []
        for index, packet in enumerate(send):
            if index:  # the file offset of a chain restarted per packet, or of one padding per packet
                at = (offset, offset - crypto.BLOCK * index)
                own.append(any(_starts_own_chain(packet, where, key, plain) for where in at))
            offset += packet.length
        if own and all(own):
            return (
                "the per-packet-encryption reading: each packet decrypts on its own (packets 2 to "
                f"{len(send)} each start a new CBC chain from the zero IV); the file is ONE CBC stream "
                "cut into packets, each packet continuing the chain of the one before it (dialects 18.2, 7.3)"
            )
    return None


def check_packets(case: ClientCase, packets: list[PacketRecord], plain: bytes, key: bytes | None) -> None:
    """2024: every packet numbered from 1, total content_size and orig_file_size in each, and the
    packets cut from one CBC stream (18.2)."""
    reading = packet_reading(packets) or packets_decrypting_alone(packets, key, plain)
    if reading is not None:
        case.fail(
            "packets numbered 1..N, total content_size and orig_file_size in each, cut from ONE CBC "
            "stream of the file (dialects 18.2)",
            reading,
        )
    plain_size = len(plain)
    want = crypto.encrypted_size(plain_size)
    wrong = [p for p in packets if (p.content_size, p.orig_file_size) != (want, plain_size)]
    if wrong:
        case.fail(
            f"content_size {want} and orig_file_size {plain_size} in every packet (dialects 18.2)",
            f"content_size {wrong[0].content_size}, orig_file_size {wrong[0].orig_file_size} "
            f"in packet {wrong[0].packet_number}",
        )


def _codes(outcome: Outcome) -> str:
    codes = outcome.requests()
    return "requests " + ", ".join(map(str, codes)) if codes else "no request"


def explain_rejected(case: ClientCase, outcome: Outcome) -> None:
    """If the engine refused a request, fail naming the fault (version, byte order, sizes)."""
    for connection in outcome.connections:
        if connection.error is None or not connection.rejected_bytes:
            continue
        case.fail("well-formed requests (spec 3, 4)", f"a malformed request: {connection.error}",
                  hint=_diagnose(case, connection, outcome))


def _diagnose(case: ClientCase, connection: Connection, outcome: Outcome) -> str:
    schemas = schemas_for(case.dialect)
    reading = packet_reading(connection.packets) if case.dialect.packetised else None
    if reading is not None:
        return reading
    foreign = _foreign_code(case, connection)
    if foreign:
        return foreign
    data = connection.rejected_bytes
    if len(data) < schemas.request_header_size:
        return "the request header is incomplete"
    header: Any = schemas.request_header.parse(data[: schemas.request_header_size])
    version = case.dialect.version
    if header.version != version:
        return f"the version byte is {header.version}; every request carries version {version} (spec 3.1)"
    swapped_code = int.from_bytes(int(header.code).to_bytes(2, "little"), "big")
    if header.code not in set(RequestCode) and swapped_code in set(RequestCode):
        return (
            f"the code is big-endian ({swapped_code} sent as {header.code}); "
            "integers are little-endian (spec 3.3)"
        )
    swapped = int.from_bytes(int(header.payload_size).to_bytes(4, "little"), "big")
    if header.code in set(RequestCode) and swapped < header.payload_size:
        return (
            f"payload_size is big-endian ({swapped} sent as {header.payload_size}); "
            "integers are little-endian (spec 3.3)"
        )
    if header.code == RequestCode.SEND_FILE and connection.packets:  # its numbers, as the tap read them
        content_size = connection.packets[-1].content_size
        if content_size in {len(content) for content in outcome.files.values()}:
            return (
                f"content_size {content_size} is the PLAINTEXT size; it must be the encrypted "
                "size, a multiple of 16 with PKCS#7 padding (spec 4.4)"
            )
    return str(connection.error)


def _foreign_code(case: ClientCase, connection: Connection) -> str:
    """A request code of another dialect, named (a client of another or a mixed dialect)."""
    dialect = case.dialect
    for code in connection.wire_codes:
        if dialect.request_role(code) is not None:
            continue
        others = [other.name for other in detect.dialects_with_code(code, requests=True)]
        if others:
            role = next(d.request_role(code) for d in DIALECTS.values() if d.request_role(code) is not None)
            return (
                f"the client sent {code} ({role.name if role else '?'}), a request of {'/'.join(others)}, "
                f"not of {dialect.name}"
                + (" (a reconnect 2022C does not have: a returning 2022C client re-sends its 1101, spec 17.4)"
                   if role is RequestCode.RECONNECT and dialect.name == "2022C" else "")
            )
    return ""


def check_me_info_written(case: ClientCase, outcome: Outcome) -> Identity | None:
    """me.info and priv.key as spec 12 says; the identity (None when the client ran elsewhere)."""
    if outcome.run.by_hand:
        return None
    me_info, priv_key = outcome.folder / ME_INFO, outcome.folder / PRIV_KEY
    if not me_info.exists():
        case.fail(f"{ME_INFO} written after 2100 (spec 8.4 step 4, 12.2)", f"no {ME_INFO} in the folder")
    try:
        identity = read_me_info(me_info)
    except BadClientFile as error:
        case.fail("me.info: name, 32 hex digits of the id, base64 PKCS#8 key (spec 12.2)", str(error))
    if not priv_key.exists():
        case.fail(f"{PRIV_KEY} beside {ME_INFO} (spec 12.3)", f"no {PRIV_KEY}")
    try:
        key = read_priv_key(priv_key)
    except BadClientFile as error:
        case.fail("priv.key: one line, base64 of the PKCS#8 DER (spec 12.3)", str(error))
    if key != identity.private_key:
        case.fail("priv.key holds the key of me.info line 3", "a different key")
    return identity


def raw_field(case: ClientCase, raw: bytes, code: RequestCode | None, field: str) -> Any:
    """A header field's value (`code` None), or a payload field's raw bytes, from a received request
    (offsets from the schemas' declarations)."""
    schemas = schemas_for(case.dialect)
    if code is None:
        return getattr(schemas.request_header.parse(raw[: schemas.request_header_size]), field)
    schema = schemas.requests[code]
    start = schemas.offset(code, field)
    size = next(sub for sub in schema.subcons if sub.name == field).sizeof()
    return raw[start : start + size]


def check_first_request_identity(case: ClientCase, outcome: Outcome, want: Identity, what: str) -> None:
    """The first request of the run carries me.info's id (header) and name: a returning client."""
    request = outcome.connections[0].requests[0]
    if (request.client_id, getattr(request, "name", None)) != (want.client_id, want.name):
        case.fail(
            f"{what} with me.info's client_id {want.client_id.hex()} and name {want.name!r}",
            f"client_id {request.client_id.hex()}, name {getattr(request, 'name', None)!r}",
        )


def content(size: int, seed: int = 1) -> bytes:
    """`size` reproducible binary bytes."""
    return random.Random(seed).randbytes(size)


def backup_ok(case: ClientCase, outcome: Outcome, files: dict[str, bytes]) -> None:
    """The run backed every file up: sent, decrypted, confirmed with 1104; exit 0."""
    case.check_finished(outcome)
    explain_rejected(case, outcome)
    for file_name, plain in files.items():
        check_file_sent(case, outcome, file_name, plain)
        confirmed = [
            request.file_name  # type: ignore[attr-defined]
            for connection in outcome.connections
            for request in connection.requests
            if request.code is RequestCode.CRC_OK
        ]
        if file_name not in confirmed:
            case.fail(f"1104 CRC_OK for {file_name!r} after a matching 2103", _codes(outcome))
    case.check_exit(outcome, success=True, why="every file was backed up and verified")


def first_requests(case: ClientCase, outcome: Outcome, want: list[RequestCode], what: str) -> None:
    """The first connection begins with `want`."""
    case.check_finished(outcome)
    explain_rejected(case, outcome)
    if not outcome.connections:
        case.fail(what, "the client never connected")
    codes = outcome.connections[0].codes()[: len(want)]
    if codes != [int(code) for code in want]:
        case.fail(what, f"requests {codes or 'none'} on the first connection")
