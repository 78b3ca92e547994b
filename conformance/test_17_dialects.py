# ruff: noqa: E501 - requirement texts are quoted from spec/dialects.md
"""Sections 17 and 18 of spec/dialects.md: the cases of one dialect only (requirements quoted from it).

2024A/2024C: files in numbered packets (18.2), AES-256 (18.6). 2022C: the client_id in the
payloads, no reconnect, the returning client's re-sent 1101 (17.4). In the other dialects these
cases are deselected. A server that refuses our packets is asked again in the other readings of
18.2 (total-first, from-0, per-packet-content-size), so that the failure names the one it follows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NoReturn

from backupproto.crypto import CbcEncryptor, generate_private_key, public_key_der
from backupproto.dialect import PAYLOAD_CLIENT_ID, ResponseCode
from backupproto.events import CrcOk, FileReceived, Register, SendPublicKey
from backupproto.frames import request_frame, send_file_start
from conformance.case import MUST, CaseContext, Wire, case
from conformance.describe import RESPONSE_HEADER_SIZE, response_code
from conformance.flows import (
    Session,
    check_file_received,
    confirm,
    expect_refused,
    gnu_cksum,
    keyed_session,
    payload,
    send_key,
    unique_name,
)
from conformance.storage import file_row
from conformance.wire import Closed, Received

PACKETISED = ("2024A", "2024C")
PACKETS = "one 1603 FILE_RECEIVED for the file, with the file's total `content_size` and the cksum of the whole plaintext. Intermediate packets get no response"
PACKET_CHECKS = "Every check above is answered as any malformed or out-of-turn request in 9.1: **1607 SERVER_ERROR**, then close; nothing of the file is stored"
PART = 1000
"""Content bytes per packet in these cases (any split that adds up is conformant, 18.2)."""
_QUIET_S = 0.3


def _packets(
    wire: Wire, client_id: bytes, name: str, ciphertext: bytes, plain_size: int, **changes: Any
) -> Iterator[bytes]:
    """The packets of one file, built through the schemas (`changes`: a reading's field values,
    as functions of the packet's index and part, or constants)."""
    parts = [ciphertext[i : i + PART] for i in range(0, len(ciphertext), PART)]
    for index, part in enumerate(parts):
        fields: dict[str, Any] = {
            "content_size": len(ciphertext),
            "orig_file_size": plain_size,
            "packet_number": index + 1,
            "total_packets": len(parts),
            "file_name": name,
        }
        for key, value in changes.items():
            fields[key] = value(index, part) if callable(value) else value
        yield wire.schemas.build_send_file_start(client_id, fields, len(part)) + part


def _encrypt(key: bytes, data: bytes) -> bytes:
    encryptor = CbcEncryptor(key)
    return encryptor.update(data) + encryptor.finalize()


def _readings(total: int) -> dict[str, dict[str, Any]]:
    """The field values of the other readings of 18.2 for a file of `total` packets."""
    return {
        "total-first": {"packet_number": lambda i, p: total, "total_packets": lambda i, p: i + 1},
        "from-0": {"packet_number": lambda i, p: i},
        "per-packet-content-size": {"content_size": lambda i, p: len(p)},
    }


READINGS = tuple(_readings(1))


def _reading_packets(session: Session, reading: str, name: str, data: bytes) -> list[bytes]:
    ciphertext = _encrypt(session.aes_key, data)
    changes = _readings(-(-len(ciphertext) // PART))[reading]
    return list(_packets(session.wire, session.client_id, name, ciphertext, len(data), **changes))


def _followed_reading(case_context: CaseContext, data: bytes) -> str:
    """The reading of 18.2 whose packets the server accepts ('' if none), each on a new session."""
    for reading in READINGS:
        session = keyed_session(case_context, f"trying the {reading} reading")
        name = unique_name(reading)
        for packet in _reading_packets(session, reading, name, data):
            session.wire.send_bytes(packet)
        try:
            received = session.wire.receive(waiting_for=f"an answer to packets of the {reading} reading")
        except Closed:
            continue
        if isinstance(received.event, FileReceived):
            return reading
    return ""


@case("18.2-packets-several", level=MUST, requirement=PACKETS, dialects=PACKETISED)
def test_several_packets(case_context: CaseContext) -> None:
    """A file of 3 packets of 1000, 1000 and 16 bytes: silence until the last, then one FILE_RECEIVED with the
    total content_size and the GNU cksum of the whole plaintext."""
    session = keyed_session(case_context)
    wire, name, data = session.wire, unique_name("packets"), payload(2010, 18)
    packets = list(_packets(wire, session.client_id, name, _encrypt(session.aes_key, data), len(data)))
    for packet in packets[:-1]:
        wire.send_bytes(packet)
    early = wire.drain(_QUIET_S)
    received = None
    if not early and not wire.peer_closed:
        wire.send_bytes(packets[-1])
        try:
            received = wire.receive(waiting_for="FILE_RECEIVED after the last packet")
        except Closed:
            received = None
    if received is None or not isinstance(received.event, FileReceived):
        _fail_packets(case_context, wire, data, len(packets), early, received)
    assert isinstance(received.event, FileReceived)
    check_file_received(session, received.event, name, len(data), gnu_cksum([data]), data)
    confirm(session, name)


def _fail_packets(
    case_context: CaseContext, wire: Wire, data: bytes, count: int, early: bytes, received: Received | None
) -> NoReturn:
    """The packets were refused (or answered early): name the reading of 18.2 the server follows."""
    wanted = f"FILE_RECEIVED for a file of {count} packets, after the last one only (spec dialects 18.2)"
    if early:
        code = response_code(early)
        got = f"{len(early)} bytes before the last packet (code {code})"
        if code is not None and wire.dialect.response_role(code) is ResponseCode.FILE_RECEIVED:
            hint = "a response to an intermediate packet: reading answers-intermediate-packets (spec dialects 18.2)"
            wire.fail(wanted, got, hint=hint)
    elif received is None:
        got = "a close" + (" before the last packet" if wire.peer_closed else "")
    else:
        got = f"code {received.code}"
    reading = _followed_reading(case_context, data)
    hint = (
        f"the server accepts the packets of the {reading} reading: it follows the {reading} reading (spec dialects 18.2, 18.8)"
        if reading
        else "the server accepts none of the known readings of 18.2 either (total-first, from-0, per-packet-content-size)"
    )
    wire.fail(wanted, got, hint=hint)


def _file_of_3(case_context: CaseContext, what: str, **changes: Any) -> tuple[Session, str, list[bytes]]:
    """A keyed session and the 3 packets of a new file (with `changes`, see `_packets`)."""
    session = keyed_session(case_context, what)
    data, name = payload(2010, 19), unique_name("packets")
    ciphertext = _encrypt(session.aes_key, data)
    return (
        session,
        name,
        list(_packets(session.wire, session.client_id, name, ciphertext, len(data), **changes)),
    )


def _violation(
    case_context: CaseContext, what: str, order: tuple[int, ...] = (0, 1, 2), **changes: Any
) -> None:
    """The 3 packets of a file (in `order`, with `changes`) break a rule: the server refuses, stores nothing."""
    session, name, packets = _file_of_3(case_context, what, **changes)
    session.wire.send_bytes(b"".join(packets[index] for index in order))
    expect_refused(case_context, session.wire, what)
    _nothing_stored(case_context, session, name)


def _nothing_stored(case_context: CaseContext, session: Session, name: str) -> None:
    """With --bp-data-dir: no files row for the refused file (spec dialects 18.2, 9.2)."""
    data_dir = case_context.data_dir
    if data_dir is None or not (data_dir / case_context.dialect.database_name).is_file():
        return  # the database is optional in 2024 (dialects 18.7); without the folder nothing can be seen
    if file_row(case_context, data_dir, session.client_id, name) is not None:
        case_context.fail(
            "nothing of a refused file is stored (spec dialects 18.2, 9.2)", f"a files row for {name!r}"
        )


@case("18.2-packet-number-zero", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_packet_zero(case_context: CaseContext) -> None:
    """Packets numbered from 0 (reading from-0): refused (bad_packet_number)."""
    _violation(case_context, "packets numbered from 0 (bad_packet_number)", packet_number=lambda i, p: i)


@case("18.2-total-packets-zero", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_total_zero(case_context: CaseContext) -> None:
    """total_packets 0: refused (bad_total_packets)."""
    _violation(case_context, "total_packets 0 (bad_total_packets)", total_packets=0)


@case("18.2-total-changed", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_total_changed(case_context: CaseContext) -> None:
    """total_packets 3, then 4 in packet 2: refused (total_changed)."""
    _violation(
        case_context, "total_packets changed mid-file (total_changed)", total_packets=lambda i, p: 3 + (i > 0)
    )


@case("18.2-packet-duplicate", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_packet_duplicate(case_context: CaseContext) -> None:
    """Packet 1 twice: refused (packet_duplicate)."""
    _violation(case_context, "packet 1 twice (packet_duplicate)", order=(0, 0))


@case("18.2-packet-out-of-order", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_packet_out_of_order(case_context: CaseContext) -> None:
    """Packet 2 first: refused (packet_out_of_order)."""
    _violation(case_context, "packet 2 of 3 first (packet_out_of_order)", order=(1,))


@case("18.2-packet-missing", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_packet_missing(case_context: CaseContext) -> None:
    """Packet 1 of 3, then CRC_OK: refused (packet_missing)."""
    session, name, packets = _file_of_3(case_context, "missing")
    session.wire.send_bytes(packets[0])
    session.wire.send(CrcOk(session.client_id, name))
    expect_refused(case_context, session.wire, "another request while packets are due (packet_missing)")
    _nothing_stored(case_context, session, name)


@case("18.2-per-packet-content-size", level=MUST, requirement=PACKET_CHECKS, dialects=PACKETISED)
def test_per_packet_content_size(case_context: CaseContext) -> None:
    """content_size = the packet's length (reading per-packet-content-size): refused."""
    _violation(
        case_context,
        "content_size of each packet's own length (reading per-packet-content-size)",
        content_size=lambda i, p: len(p),
    )


@case(
    "18.6-aes-256",
    level=MUST,
    requirement="The AES key is 32 bytes (AES-256-CBC, zero IV, PKCS#7; content sizes as 7.3, the block is still 16 bytes). The server makes a fresh 32-byte key for every AES_KEY and RECONNECT_APPROVED (7.4)",
    dialects=PACKETISED,
)
def test_aes_256(case_context: CaseContext) -> None:
    """The unwrapped key has 32 bytes (a 16-byte key is the reading aes-128-in-2024) and a file sent with it checks."""
    session = keyed_session(case_context)
    if len(session.aes_key) != 32:  # unwrap_sha1 fails first, naming the reading
        session.wire.fail("a 32-byte AES key", f"{len(session.aes_key)} bytes")
    name = unique_name("aes256")
    data = payload(100, 23)
    session.wire.send_file(session.client_id, name, data, session.aes_key)
    reply = session.wire.expect(FileReceived, client_id=session.client_id)
    check_file_received(session, reply, name, len(data), gnu_cksum([data]), data)
    confirm(session, name)


# -- 2022C ---------------------------------------------------------------------------------------

NO_RECONNECT = "Codes 1102, 2105, 2106 and 2107 are `unknown_code` for a 2022C reader."
RETURNING = "The server makes a fresh AES key (7.4), stores it, answers **2102 AES_KEY** wrapped to that public key."
SAME_KEY = "If the client has a public key on record, the received 160-byte field MUST be byte-for-byte equal to the stored field, else close (`unexpected_message`)."
PAYLOAD_ID = "In 1103-1106 the payload begins with a copy of the client id. It MUST equal the header's `client_id`, else `client_id_mismatch` (field `client_id`, offset 23), checked as the first payload field (3.6 step 7); the server closes (see below)."


@case("17.4-no-reconnect", level=MUST, requirement=NO_RECONNECT, dialects=("2022C",))
def test_no_reconnect(case_context: CaseContext) -> None:
    """1102 of a registered, keyed client: the server closes without a response."""
    session = keyed_session(case_context)
    wire = case_context.connect("1102 in 2022C")
    frame = request_frame(Register.code, session.client_id, {"name": session.name}, schemas=wire.schemas)
    wire.send_bytes(frame.with_header(code=1102).data, "1102 (RECONNECT of 2023A; unknown in 2022C)")
    data = wire.drain(case_context.timeout_s)
    if data:
        code = response_code(data)
        hint = ""
        if code in (int(ResponseCode.RECONNECT_APPROVED), int(ResponseCode.RECONNECT_DENIED)):
            hint = f"the server answered {code}: reading reconnect-in-2022C (it speaks 2023A's reconnect in 2022C; spec dialects 18.3, 18.8)"
        elif code == int(ResponseCode.SERVER_ERROR):
            hint = "the server answered 2107: reading 2107-in-2022C (spec dialects 17.4)"
        wire.fail(
            "a close without a response (1102 is unknown_code in 2022C)",
            f"{len(data)} bytes: {data[:RESPONSE_HEADER_SIZE].hex(' ')}",
            hint=hint,
        )
    if not wire.peer_closed:
        wire.fail(
            "a close (1102 is unknown_code in 2022C)",
            f"the connection was still open {case_context.timeout_s:g} s later",
        )


@case("17.4-returning-client-resends-key", level=MUST, requirement=RETURNING, dialects=("2022C",))
def test_returning_client(case_context: CaseContext) -> None:
    """A keyed client re-sends 1101 (same id, name, key) on a new connection: 2102 with a fresh key that works."""
    session = keyed_session(case_context, "first run")
    wire = case_context.connect("second run")
    aes_key = send_key(wire, session.client_id, session.name)
    if aes_key == session.aes_key:
        wire.fail("a fresh AES key for the returning client (spec 7.4)", "the key of the first run again")
    resumed = Session(wire, session.client_id, session.name, aes_key)
    name = unique_name("returning")
    data = payload(500, 24)
    wire.send_file(session.client_id, name, data, aes_key)
    reply = wire.expect(FileReceived, client_id=session.client_id)
    check_file_received(resumed, reply, name, len(data), gnu_cksum([data]), data)
    confirm(resumed, name)


@case("17.4-returning-client-other-key", level=MUST, requirement=SAME_KEY, dialects=("2022C",))
def test_returning_other_key(case_context: CaseContext) -> None:
    """A keyed client's 1101 with another public key: refused (a key is set once)."""
    session = keyed_session(case_context, "first run")
    wire = case_context.connect("other key")
    other = public_key_der(generate_private_key())
    wire.send(SendPublicKey(session.client_id, session.name, other))
    expect_refused(case_context, wire, "1101 with a public key other than the one on record")


@case("17.4-payload-client-id-mismatch", level=MUST, requirement=PAYLOAD_ID, dialects=("2022C",))
def test_payload_client_id(case_context: CaseContext) -> None:
    """A 1103 whose payload client_id differs from the header's: the server closes."""
    session = keyed_session(case_context)
    content = _encrypt(session.aes_key, payload(100, 25))
    fields = {PAYLOAD_CLIENT_ID: os.urandom(16), "content_size": len(content), "file_name": unique_name("id")}
    frame = send_file_start(session.client_id, fields, schemas=session.wire.schemas)
    session.wire.send_bytes(frame.data + content)
    expect_refused(
        case_context, session.wire, "payload client_id differs from the header's (client_id_mismatch)"
    )
