# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Sections 2.3, 3.1, 3.6, 9.1: bad headers and cut-off messages get 2107 (or a close), and the server survives."""

from __future__ import annotations

import os

from backupproto.crypto import public_key_der
from backupproto.events import Register, SendPublicKey
from backupproto.schemas import V3_SCHEMAS
from conformance.case import MUST, CaseContext, case
from conformance.flows import ZERO_ID, client_key, expect_refused, keyed_session, unique_name

PAYLOAD_SIZE_RULE = (
    "`payload_size` fits the code's layout (section 4, catalogue), else `payload_size_mismatch` (field "
    "`payload_size`, offset 19)"
)
CUT_OFF = (
    "A peer that closes in the middle of a message (kind `connection_closed` for the reader; `truncated` for a "
    "whole-message parser) has sent nothing usable: the server stores nothing from it (section 9.2) and closes. "
    "It MAY send 2107 first."
)


def _name_field() -> bytes:
    return unique_name().encode().ljust(255, b"\x00")


@case(
    "3.1-bad-version",
    level=MUST,
    requirement="`version`: MUST be 3. Any other value: `unsupported_version`, answered with 2107.",
)
def test_bad_version(case_context: CaseContext) -> None:
    """A 1100 with version 2, and one with version 4: 2107 and close each."""
    for version in (2, 4):
        wire = case_context.connect()
        wire.send(Register(ZERO_ID, unique_name()), version=version)
        expect_refused(case_context, wire, f"version {version}")


@case(
    "3.1-unknown-code",
    level=MUST,
    requirement="`code`: one of 1100..1106 (section 4). Any other value: `unknown_code`, 2107.",
)
def test_unknown_code(case_context: CaseContext) -> None:
    """Codes 1107, 1099, 2100 and 0 (payload_size 255, a name following): 2107 and close each."""
    for code in (1107, 1099, 2100, 0):
        wire = case_context.connect()
        wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, code, 255) + _name_field())
        expect_refused(case_context, wire, f"unknown request code {code}")


@case("3.6-payload-size-too-small", level=MUST, requirement=PAYLOAD_SIZE_RULE)
def test_payload_size_too_small(case_context: CaseContext) -> None:
    """1100 with payload_size 254 and 254 bytes: 2107."""
    wire = case_context.connect()
    wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, Register.code, 254) + _name_field()[:254])
    expect_refused(case_context, wire, "1100 with payload_size 254")


@case("3.6-payload-size-too-large", level=MUST, requirement=PAYLOAD_SIZE_RULE)
def test_payload_size_too_large(case_context: CaseContext) -> None:
    """1100 with payload_size 256 and 256 bytes: 2107."""
    wire = case_context.connect()
    wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, Register.code, 256) + _name_field() + b"\x00")
    expect_refused(case_context, wire, "1100 with payload_size 256")


@case("3.6-payload-size-zero-with-payload", level=MUST, requirement=PAYLOAD_SIZE_RULE)
def test_payload_size_zero(case_context: CaseContext) -> None:
    """1100 with payload_size 0 and a 255-byte name following anyway: 2107."""
    wire = case_context.connect()
    wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, Register.code, 0) + _name_field())
    expect_refused(case_context, wire, "1100 with payload_size 0 and a payload following")


@case(
    "3.6-header-decides",
    level=MUST,
    requirement="It MUST NOT read the payload of a request whose header failed steps 1 to 5: the header alone "
    "decides that the request is refused",
)
def test_header_decides(case_context: CaseContext) -> None:
    """1100 with payload_size 0xFFFFFFFF and nothing after it: 2107 at once, not a wait for 4 GiB."""
    wire = case_context.connect()
    wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, Register.code, 0xFFFFFFFF))
    expect_refused(case_context, wire, "1100 with payload_size 4294967295 (header alone)")


@case("2.3-cut-off-header", level=MUST, requirement=CUT_OFF)
def test_cut_off_header(case_context: CaseContext) -> None:
    """10 bytes of a header, then the client half-closes: the server closes (2107 allowed)."""
    wire = case_context.connect()
    wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, Register.code, 255)[:10])
    wire.shutdown_write()
    expect_refused(case_context, wire, "a header cut off by the client's close", allow_silent_close=True)


@case("2.3-cut-off-payload", level=MUST, requirement=CUT_OFF)
def test_cut_off_payload(case_context: CaseContext) -> None:
    """A 1100 header and 100 of 255 payload bytes, then half-close: the server closes (2107 allowed)."""
    wire = case_context.connect()
    wire.send_bytes(V3_SCHEMAS.build_request_header(ZERO_ID, Register.code, 255) + _name_field()[:100])
    wire.shutdown_write()
    expect_refused(case_context, wire, "a payload cut off by the client's close", allow_silent_close=True)


@case("2.3-cut-off-file-content", level=MUST, requirement=CUT_OFF)
def test_cut_off_content(case_context: CaseContext) -> None:
    """A 1103 announcing 1 MiB, 4 KiB sent, then half-close: the server closes (2107 allowed)."""
    session = keyed_session(case_context)
    size = 1 << 20
    header = V3_SCHEMAS.build_request_header(session.client_id, 1103, 259 + size)
    prefix = V3_SCHEMAS.send_file_prefix.build({"content_size": size, "file_name": unique_name("cut")})
    session.wire.send_bytes(header + prefix + os.urandom(4096))
    session.wire.shutdown_write()
    expect_refused(
        case_context, session.wire, "file content cut off by the client's close", allow_silent_close=True
    )


@case(
    "9.1-garbage",
    level=MUST,
    requirement="A failure on one connection MUST NOT affect other connections: the server keeps serving them "
    "and keeps listening.",
)
def test_garbage(case_context: CaseContext) -> None:
    """1 KiB of random bytes: 2107 or close; a fresh client still registers."""
    wire = case_context.connect()
    wire.send_bytes(os.urandom(1024), "1024 random bytes")
    expect_refused(case_context, wire, "1 KiB of random bytes", allow_silent_close=True)


@case(
    "5.8-close-after-server-error",
    level=MUST,
    requirement="The server closes the connection after it (section 2.3).",
)
def test_close_after_server_error(case_context: CaseContext) -> None:
    """1101 for a client id nobody registered: 2107, then the server closes the connection."""
    wire = case_context.connect()
    wire.send(SendPublicKey(os.urandom(16), unique_name(), public_key_der(client_key())))
    wire.expect_error_and_close(because="1101 for an unknown client id")
