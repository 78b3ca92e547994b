# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Sections 2.3, 3.1, 3.6, 9.1: bad headers and cut-off messages get 2107 (or a close), and the server survives."""

from __future__ import annotations

import os

from backupproto.crypto import public_key_der
from backupproto.dialect import DIALECTS, Dialect, RequestCode, ResponseCode
from backupproto.events import Register, SendPublicKey
from backupproto.frames import Frame, request_frame
from conformance.case import MUST, CaseContext, Wire, case
from conformance.flows import ZERO_ID, client_key, expect_refused, keyed_session, raw_send_file, unique_name

PAYLOAD_SIZE_RULE = (
    "`payload_size` fits the code's layout (section 4, catalogue), else `payload_size_mismatch` (field "
    "`payload_size`, offset 19)"
)
CUT_OFF = (
    "A peer that closes in the middle of a message (kind `connection_closed` for the reader; `truncated` for a "
    "whole-message parser) has sent nothing usable: the server stores nothing from it (section 9.2) and closes. "
    "It MAY send 2107 first."
)


def _register(wire: Wire) -> Frame:
    """A valid REGISTER of a fresh name in the run's dialect, to be altered."""
    return request_frame(Register.code, ZERO_ID, {"name": unique_name()}, schemas=wire.schemas)


def _unknown_codes(dialect: Dialect) -> list[int]:
    """Request codes the dialect does not have: around its range, a response code, 0, and the
    REGISTER codes of the other dialects (unknown_code even there, spec dialects 17.1)."""
    codes = sorted(dialect.requests.values())
    foreign = {d.requests[RequestCode.REGISTER] for d in DIALECTS.values()} - set(codes)
    wanted = [codes[-1] + 1, codes[0] - 1, dialect.responses[ResponseCode.REGISTERED], 0, *sorted(foreign)]
    return [code for code in dict.fromkeys(wanted) if dialect.request_role(code) is None]


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
    for code in _unknown_codes(case_context.dialect):
        wire = case_context.connect()
        wire.send_bytes(_register(wire).with_header(code=code).data)
        expect_refused(case_context, wire, f"unknown request code {code}")


@case("3.6-payload-size-too-small", level=MUST, requirement=PAYLOAD_SIZE_RULE)
def test_payload_size_too_small(case_context: CaseContext) -> None:
    """1100 with payload_size 254 and 254 bytes: 2107."""
    wire = case_context.connect()
    frame = _register(wire)
    wire.send_bytes(
        frame.with_header(payload_size=frame.size - frame.header_size - 1).truncated(frame.size - 1).data
    )
    expect_refused(case_context, wire, "1100 with payload_size 254")


@case("3.6-payload-size-too-large", level=MUST, requirement=PAYLOAD_SIZE_RULE)
def test_payload_size_too_large(case_context: CaseContext) -> None:
    """1100 with payload_size 256 and 256 bytes: 2107."""
    wire = case_context.connect()
    frame = _register(wire)
    wire.send_bytes(
        frame.with_header(payload_size=frame.size - frame.header_size + 1).with_trailing(b"\x00").data
    )
    expect_refused(case_context, wire, "1100 with payload_size 256")


@case("3.6-payload-size-zero-with-payload", level=MUST, requirement=PAYLOAD_SIZE_RULE)
def test_payload_size_zero(case_context: CaseContext) -> None:
    """1100 with payload_size 0 and a 255-byte name following anyway: 2107."""
    wire = case_context.connect()
    wire.send_bytes(_register(wire).with_header(payload_size=0).data)
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
    frame = _register(wire).with_header(payload_size=0xFFFFFFFF)
    wire.send_bytes(frame.truncated(frame.header_size).data)
    expect_refused(case_context, wire, "1100 with payload_size 4294967295 (header alone)")


@case("2.3-cut-off-header", level=MUST, requirement=CUT_OFF)
def test_cut_off_header(case_context: CaseContext) -> None:
    """10 bytes of a header, then the client half-closes: the server closes (2107 allowed)."""
    wire = case_context.connect()
    wire.send_bytes(_register(wire).truncated(10).data)
    wire.shutdown_write()
    expect_refused(case_context, wire, "a header cut off by the client's close", allow_silent_close=True)


@case("2.3-cut-off-payload", level=MUST, requirement=CUT_OFF)
def test_cut_off_payload(case_context: CaseContext) -> None:
    """A 1100 header and 100 of 255 payload bytes, then half-close: the server closes (2107 allowed)."""
    wire = case_context.connect()
    frame = _register(wire)
    wire.send_bytes(frame.truncated(frame.header_size + 100).data)
    wire.shutdown_write()
    expect_refused(case_context, wire, "a payload cut off by the client's close", allow_silent_close=True)


@case("2.3-cut-off-file-content", level=MUST, requirement=CUT_OFF)
def test_cut_off_content(case_context: CaseContext) -> None:
    """A 1103 announcing 1 MiB, 4 KiB sent, then half-close: the server closes (2107 allowed)."""
    session = keyed_session(case_context)
    size = 1 << 20
    content = os.urandom(4096)
    raw_send_file(session.wire, session.client_id, unique_name("cut"), size, content, announced=size)
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
