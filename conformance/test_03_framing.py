"""Section 3: response header fields, byte order, exact framing, requests arriving in pieces."""

from __future__ import annotations

import time

from backupproto.dialect import ResponseCode
from backupproto.events import Register, Registered
from conformance.case import MUST, CaseContext, case
from conformance.flows import ZERO_ID, unique_name

_REGISTERED_HEADER = {2100: "03 3408 10000000", 1600: "03 4006 10000000"}
"""REGISTERED's header written by hand, by its wire code (spec 3.2, dialects 17.2)."""


@case("3.2-response-version-3", level=MUST, requirement="`version`: a server MUST send 3.")
def test_response_version(case_context: CaseContext) -> None:
    """The first byte of 2100 is 3."""
    wire = case_context.connect()
    wire.send(Register(ZERO_ID, unique_name()))
    received = wire.receive(waiting_for="2100 REGISTERED")
    version = case_context.dialect.version
    if received.raw[0] != version:
        wire.fail(f"response version byte {version:02x}", f"{received.raw[0]:02x}")


@case(
    "3.3-little-endian",
    level=MUST,
    requirement="All integers are unsigned, little-endian, of the stated width.",
)
def test_little_endian(case_context: CaseContext) -> None:
    """2100's header is, byte for byte, 03 34 08 10 00 00 00 (2100 = 0x0834, payload_size 16);
    1600's (2024) 03 40 06 10 00 00 00."""
    wire = case_context.connect()
    wire.send(Register(ZERO_ID, unique_name()))
    received = wire.receive(waiting_for="REGISTERED")
    expected = bytes.fromhex(_REGISTERED_HEADER[case_context.dialect.responses[ResponseCode.REGISTERED]])
    if received.raw[1:7] != expected[1:]:  # the version byte (03) is case 3.2's
        wire.fail(f"header bytes {expected.hex(' ')}", received.raw[:7].hex(" "))


@case(
    "3-no-padding-between-messages",
    level=MUST,
    requirement="Every message is a header followed by exactly `payload_size` bytes of payload. There is no "
    "delimiter and no padding between messages.",
)
def test_no_padding(case_context: CaseContext) -> None:
    """After 2100 (23 bytes) nothing else arrives: no zero padding to a fixed packet size."""
    wire = case_context.connect()
    wire.send(Register(ZERO_ID, unique_name()))
    wire.expect(Registered)
    extra = wire.drain(0.5)
    if extra:
        kind = "zero bytes" if extra == bytes(len(extra)) else "bytes"
        wire.note(f"{len(extra)} more {kind} after the 23-byte 2100")
        wire.fail(
            "nothing after the 23 bytes of 2100 (7 header + payload_size 16)",
            f"{len(extra)} more {kind}: {extra[:32].hex(' ')}",
            hint=f"the response was zero-padded to a fixed packet size of {23 + len(extra)} bytes"
            if kind == "zero bytes"
            else "trailing bytes after the payload",
        )


@case(
    "3.6-request-in-pieces",
    level=MUST,
    requirement="23 header bytes present. (On a stream: wait, subject to the stall timeout.",
)
def test_request_in_pieces(case_context: CaseContext) -> None:
    """A 1100 arriving in four pieces (the header split too) is answered 2100."""
    wire = case_context.connect()
    data = wire.schemas.build_request(Register.code, ZERO_ID, {"name": unique_name()})
    for start, end in ((0, 5), (5, 23), (23, 100), (100, len(data))):
        wire.send_bytes(data[start:end], f"bytes {start}..{end - 1} of a 1100 REGISTER")
        time.sleep(0.05)
    wire.expect(Registered)
