# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Sections 3.1, 3.4 and 4.1: 1100 REGISTER, the name grammar, duplicates."""

from __future__ import annotations

import os
import random
import string

from backupproto.events import Register, Registered, RegistrationFailed
from conformance.case import MUST, CaseContext, Wire, case
from conformance.flows import ZERO_ID, expect_refused, raw_name, register, unique_name

NEW_CLIENT = (
    "Otherwise the server MUST create a fresh client id from a cryptographically secure random source (UUID "
    "version 4), store the client (name, id, LastSeen; no public key yet) durably, and answer 2100 REGISTERED "
    "carrying the id."
)


def _send_raw_name(wire: Wire, field: bytes) -> None:
    wire.send_bytes(
        wire.schemas.build_request(Register.code, ZERO_ID, {"name": raw_name(field, wire.dialect)})
    )


@case("4.1-register-new", level=MUST, requirement=NEW_CLIENT)
def test_register_new(case_context: CaseContext) -> None:
    """1100 -> 2100 with a non-zero id; two registrations get different ids."""
    first, _ = register(case_context.connect())
    second, _ = register(case_context.connect())
    if first == second:
        case_context.fail("two registrations get two different client ids", f"both got {first.hex()}")


@case("4.1-client-id-uuid4", level=MUST, requirement=NEW_CLIENT)
def test_client_id_uuid4(case_context: CaseContext) -> None:
    """The id has the version-4 and RFC 4122 variant bits of a random UUID."""
    wire = case_context.connect()
    client_id, _ = register(wire)
    if client_id[6] >> 4 != 4 or client_id[8] & 0xC0 != 0x80:
        wire.fail(
            "a UUID version 4: byte 6 = 0x4_, byte 8 = 0x8_..0xb_ (RFC 4122)",
            f"client_id {client_id.hex()} (byte 6 = 0x{client_id[6]:02x}, byte 8 = 0x{client_id[8]:02x})",
        )


@case(
    "4.1-register-duplicate-name",
    level=MUST,
    requirement="If a client with this exact name exists: 2101 REGISTRATION_FAILED; the connection stays open "
    "in CONNECTED.",
)
def test_duplicate_name(case_context: CaseContext) -> None:
    """A taken name gets 2101 (not 2100, not silence), and the same connection can then register."""
    _, name = register(case_context.connect("first owner"))
    wire = case_context.connect("second claimant")
    wire.send(Register(ZERO_ID, name))
    try:
        received = wire.receive(
            waiting_for="2101 REGISTRATION_FAILED (the name is taken)",
            silence_hint="no answer to a 1100 whose name is taken: the duplicate was silently dropped",
        )
    except Exception as error:
        if type(error).__name__ == "Closed":
            wire.fail("2101 REGISTRATION_FAILED, connection open", "the server closed the connection")
        raise
    if isinstance(received.event, Registered):
        wire.fail(
            "2101 REGISTRATION_FAILED (the name is taken)",
            "2100 REGISTERED: the server accepted a duplicate name (a second client with the same name)",
        )
    if not isinstance(received.event, RegistrationFailed):
        wire.fail("2101 REGISTRATION_FAILED", f"{received.event}")
    register(wire)


@case("3.4-name-1-char", level=MUST, requirement="servers MUST accept 1 to 254.")
def test_name_one_char(case_context: CaseContext) -> None:
    """A 1-character name registers (tries up to 10 characters: earlier runs may hold some)."""
    wire = case_context.connect()
    letters = list(string.ascii_letters + string.digits + string.punctuation)
    random.shuffle(letters)
    for letter in letters[:10]:
        reply = wire.request(Register(ZERO_ID, letter), Registered, RegistrationFailed)
        if isinstance(reply, Registered):
            return
    import pytest

    pytest.skip("10 one-character names were all taken already (2101): run against a fresh server")


@case("3.4-name-254-chars", level=MUST, requirement="servers MUST accept 1 to 254.")
def test_name_254_chars(case_context: CaseContext) -> None:
    """A 254-character name (the field's NUL in byte 255) registers."""
    name = unique_name("long")
    register(case_context.connect(), name + "x" * (254 - len(name)))


@case(
    "3.4-name-255-without-nul",
    level=MUST,
    requirement="A 255-character text is of this kind: the field has no room for the terminator.",
)
def test_name_without_nul(case_context: CaseContext) -> None:
    """255 letters, no NUL: 2107 and close."""
    wire = case_context.connect()
    _send_raw_name(wire, os.urandom(128).hex().encode()[:255])
    expect_refused(case_context, wire, "a name field without NUL (missing_nul)")


@case("3.4-name-empty", level=MUST, requirement="The text is therefore 1 to 254 bytes long.")
def test_name_empty(case_context: CaseContext) -> None:
    """An empty name (NUL first): 2107 and close."""
    wire = case_context.connect()
    _send_raw_name(wire, b"")
    expect_refused(case_context, wire, "an empty name (invalid_name)")


@case(
    "3.4-name-nonzero-padding",
    level=MUST,
    requirement="A non-zero byte after the first NUL: `nonzero_padding` (offset: that byte).",
)
def test_name_nonzero_padding(case_context: CaseContext) -> None:
    """'abc' NUL 'x' ...: 2107 and close."""
    wire = case_context.connect()
    _send_raw_name(wire, unique_name().encode() + b"\x00x")
    expect_refused(case_context, wire, "a non-zero byte after the NUL (nonzero_padding)")


@case(
    "3.4-name-not-printable",
    level=MUST,
    requirement="**ASCII only** (no byte ≥ 0x80, no control character)",
)
def test_name_not_printable(case_context: CaseContext) -> None:
    """A name with a control byte, and one with a byte >= 0x80: each 2107 and close."""
    for bad in (b"\x01", b"\xc3\xa9"):
        wire = case_context.connect()
        _send_raw_name(wire, unique_name().encode() + bad)
        expect_refused(case_context, wire, f"a name with byte(s) {bad.hex(' ')} (invalid_name)")


@case(
    "3.4-names-case-sensitive",
    level=MUST,
    requirement="**Names are compared byte for byte** (case-sensitive). Client names may contain spaces anywhere",
)
def test_names_case_sensitive(case_context: CaseContext) -> None:
    """'Cf-X' and 'cf-x' are two clients; ' a b ' (spaces around) registers."""
    wire = case_context.connect()
    name = unique_name("case")
    register(wire, name.upper())
    register(case_context.connect(), name.lower())
    register(case_context.connect(), f" {name} with spaces ")


@case("3.1-register-client-id-ignored", level=MUST, requirement="In 1100 REGISTER the server ignores it")
def test_register_client_id_ignored(case_context: CaseContext) -> None:
    """1100 with a random (unknown) client_id still registers."""
    wire = case_context.connect()
    wire.request(Register(os.urandom(16), unique_name()), Registered)
