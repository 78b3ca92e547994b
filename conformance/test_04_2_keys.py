# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Sections 3.5, 4.2, 4.3, 7: public keys, AES key wrapping, reconnect, session keys."""

from __future__ import annotations

import functools
import os

from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Util.number import GCD, getPrime

from backupproto.crypto import public_key_der
from backupproto.events import (
    AesKey,
    Reconnect,
    ReconnectApproved,
    ReconnectDenied,
    SendPublicKey,
)
from conformance.case import MUST, SHOULD, CaseContext, Wire, case
from conformance.flows import (
    Session,
    client_key,
    confirm,
    expect_refused,
    keyed_session,
    payload,
    reconnect_key,
    register,
    send_and_check,
    send_key,
    unique_name,
    unwrap_sha1,
    with_reconnect,
)

KEY_RULE = (
    "A server MUST accept any RSA key with a 1024-bit modulus and an odd exponent ≥ 3 that fits the field, and "
    "MUST refuse other keys (other sizes, other algorithms) with 2107 (`bad_public_key`)."
)
WHO_MAY_SEND_KEY = (
    "`client_id` MUST name a registered client and `name` MUST equal its registered name; otherwise 2107."
)
DENIED = (
    "If `client_id` is unknown, `name` differs from the registered name, or the client has no public key on "
    "record: 2106 RECONNECT_DENIED carrying the request's `client_id`; the connection stays open in CONNECTED."
)


@functools.cache
def _small_key() -> RsaKey:
    """A 512-bit RSA public key (pycryptodome does not generate keys under 1024 bits)."""
    while True:
        p, q = getPrime(256), getPrime(256)
        if p != q and GCD(17, (p - 1) * (q - 1)) == 1:
            return RSA.construct((p * q, 17))


@functools.cache
def _big_key_der() -> bytes:
    return public_key_der(RSA.generate(2048, e=17))


def _send_key_field(wire: Wire, client_id: bytes, name: str, field: bytes) -> None:
    """1101 with a raw 160-byte public_key field."""
    # the schema pads a shorter field and sends a 160-byte one as it is, unchecked
    fields = {"name": name, "public_key": field}
    wire.send_bytes(wire.schemas.build_request(SendPublicKey.code, client_id, fields))


def _registered(case_context: CaseContext) -> tuple[Wire, bytes, str]:
    wire = case_context.connect()
    client_id, name = register(wire)
    return wire, client_id, name


@case(
    "4.2-public-key-accepted",
    level=MUST,
    requirement="The server stores the key, makes a fresh AES key (section 7.4), stores it, and answers 2102 "
    "AES_KEY with the AES key wrapped to this public key (section 7.2).",
)
def test_public_key_accepted(case_context: CaseContext) -> None:
    """160-byte DER (RSA-1024, e=17) -> 2102: payload_size 16 + 128, our client_id, 16 bytes inside OAEP."""
    wire, client_id, name = _registered(case_context)
    key = client_key()
    der = public_key_der(key)
    assert len(der) == 160
    wire.send(SendPublicKey(client_id, name, der))
    received = wire.receive(waiting_for="2102 AES_KEY")
    if not isinstance(received.event, AesKey):
        wire.fail("2102 AES_KEY", f"{received.event}")
    if received.payload_size != 16 + 128:
        wire.fail("2102 with payload_size 144 (client_id 16 + RSA-1024 OAEP 128)", f"{received.payload_size}")
    if received.event.client_id != client_id:
        wire.fail(f"2102 carrying our client_id {client_id.hex()}", received.event.client_id.hex())
    unwrap_sha1(wire, key, received.event.encrypted_aes_key, "2102 AES_KEY")


@case(
    "7.2-oaep-sha1",
    level=MUST,
    requirement="A server MUST wrap with SHA-1 as the hash and MGF1 with SHA-1",
)
def test_oaep_sha1(case_context: CaseContext) -> None:
    """The 2102 key decrypts with OAEP SHA-1/MGF1-SHA-1 (not only SHA-256) to 16 bytes."""
    wire, client_id, name = _registered(case_context)
    send_key(wire, client_id, name)


@case("7.1-public-key-exponent-3", level=MUST, requirement=KEY_RULE)
def test_exponent_3(case_context: CaseContext) -> None:
    """An RSA-1024 key with e=3 (160-byte DER) is accepted and used."""
    key = RSA.generate(1024, e=3)
    wire, client_id, name = _registered(case_context)
    reply = wire.request(SendPublicKey(client_id, name, public_key_der(key)), AesKey)
    unwrap_sha1(wire, key, reply.encrypted_aes_key, "2102 AES_KEY for an e=3 key")


@case("7.1-public-key-512-bit", level=MUST, requirement=KEY_RULE)
def test_small_key(case_context: CaseContext) -> None:
    """A 512-bit RSA key (94-byte DER, zero-padded) -> 2107."""
    wire, client_id, name = _registered(case_context)
    der = public_key_der(_small_key())
    _send_key_field(wire, client_id, name, der.ljust(wire.dialect.public_key_size, b"\x00"))
    expect_refused(case_context, wire, "a 512-bit RSA key (bad_public_key)")


@case(
    "3.5-public-key-too-long",
    level=MUST,
    requirement="The field MUST begin with a DER SEQUENCE tag 0x30",
)
def test_key_too_long(case_context: CaseContext) -> None:
    """The first 160 bytes of a 162-byte (RSA-1024 e=65537) and of a 2048-bit key's DER -> 2107."""
    e65537 = public_key_der(RSA.generate(1024, e=65537))
    assert len(e65537) == 162
    for label, der in (("1024-bit e=65537 (162-byte DER)", e65537), ("2048-bit", _big_key_der())):
        wire, client_id, name = _registered(case_context)
        _send_key_field(wire, client_id, name, der[:160])
        expect_refused(case_context, wire, f"the first 160 bytes of a {label} key (bad_public_key)")


@case(
    "3.5-public-key-garbage",
    level=MUST,
    requirement="The field MUST begin with a DER SEQUENCE tag 0x30",
)
def test_key_garbage(case_context: CaseContext) -> None:
    """160 random bytes (not starting with 0x30) -> 2107."""
    wire, client_id, name = _registered(case_context)
    _send_key_field(wire, client_id, name, b"\x04" + os.urandom(159))
    expect_refused(case_context, wire, "a public_key field of random bytes (bad_public_key)")


@case("4.2-public-key-unknown-client", level=MUST, requirement=WHO_MAY_SEND_KEY)
def test_key_unknown_client(case_context: CaseContext) -> None:
    """1101 with an id nobody registered -> 2107."""
    wire = case_context.connect()
    wire.send(SendPublicKey(os.urandom(16), unique_name(), public_key_der(client_key())))
    expect_refused(case_context, wire, "1101 for an unknown client_id")


@case("4.2-public-key-name-mismatch", level=MUST, requirement=WHO_MAY_SEND_KEY)
def test_key_name_mismatch(case_context: CaseContext) -> None:
    """1101 with the right id and another name -> 2107."""
    _, client_id, name = _registered(case_context)
    wire = case_context.connect()
    wire.send(SendPublicKey(client_id, name + "x", public_key_der(client_key())))
    expect_refused(case_context, wire, "1101 whose name is not the id's registered name")


@case(
    "4.2-public-key-new-connection",
    level=MUST,
    requirement="Allowed in REGISTERED (after 2100 on this connection) and in CONNECTED (a client whose "
    "registration completed on an earlier connection but whose key never reached the server).",
)
def test_key_on_new_connection(case_context: CaseContext) -> None:
    """Register on one connection, send the key on another: 2102."""
    _, client_id, name = _registered(case_context)
    send_key(case_context.connect(), client_id, name)


@case(
    "4.2-public-key-twice",
    dialects=with_reconnect,
    level=SHOULD,
    requirement="If the client already has a public key on record, the server SHOULD refuse with 2107",
)
def test_key_twice(case_context: CaseContext) -> None:
    """A second 1101 for a client that has a key (on a new connection) -> 2107."""
    wire, client_id, name = _registered(case_context)
    send_key(wire, client_id, name)
    other = case_context.connect()
    other.send(SendPublicKey(client_id, name, public_key_der(client_key())))
    expect_refused(case_context, other, "a second 1101 for a client whose key is on record")


def _keyed_then_reconnect(case_context: CaseContext) -> tuple[Session, Wire, bytes]:
    session = keyed_session(case_context, "registration")
    wire = case_context.connect("reconnect")
    reply = wire.request(Reconnect(session.client_id, session.name), ReconnectApproved)
    return session, wire, reconnect_key(wire, reply)


@case(
    "4.3-reconnect-approved",
    dialects=with_reconnect,
    level=MUST,
    requirement="Otherwise the server makes a fresh AES key, stores it, and answers 2105 RECONNECT_APPROVED with "
    "the key wrapped to the stored public key.",
)
def test_reconnect_approved(case_context: CaseContext) -> None:
    """1102 -> 2105 (OAEP SHA-1 to the stored key); a file sent with that key gets the right cksum."""
    session, wire, aes_key = _keyed_then_reconnect(case_context)
    resumed = Session(wire, session.client_id, session.name, aes_key)
    name = unique_name("after-reconnect")
    send_and_check(resumed, name, payload(5000, 7))
    confirm(resumed, name)


@case(
    "7.4-fresh-aes-key",
    dialects=with_reconnect,
    level=MUST,
    requirement="The server makes a new AES key, from a cryptographically secure random source, for every "
    "successful 1101 and 1102.",
)
def test_fresh_aes_key(case_context: CaseContext) -> None:
    """The keys of 2102 and of two 2105 all differ."""
    session, _, first = _keyed_then_reconnect(case_context)
    wire = case_context.connect("second reconnect")
    second = reconnect_key(wire, wire.request(Reconnect(session.client_id, session.name), ReconnectApproved))
    keys = [session.aes_key, first, second]
    if len(set(keys)) != 3:
        wire.fail("three different AES keys (2102, 2105, 2105)", " ".join(key.hex() for key in keys))


@case("4.3-reconnect-unknown-client", dialects=with_reconnect, level=MUST, requirement=DENIED)
def test_reconnect_unknown(case_context: CaseContext) -> None:
    """1102 for an unknown id -> 2106 with that id; the connection still registers."""
    wire = case_context.connect()
    client_id = os.urandom(16)
    wire.request(Reconnect(client_id, unique_name()), ReconnectDenied, client_id=client_id)
    register(wire)


@case("4.3-reconnect-name-mismatch", dialects=with_reconnect, level=MUST, requirement=DENIED)
def test_reconnect_name_mismatch(case_context: CaseContext) -> None:
    """1102 with a registered, keyed id and another name -> 2106."""
    session = keyed_session(case_context)
    wire = case_context.connect()
    wire.request(Reconnect(session.client_id, session.name + "x"), ReconnectDenied)


@case("4.3-reconnect-without-key", dialects=with_reconnect, level=MUST, requirement=DENIED)
def test_reconnect_without_key(case_context: CaseContext) -> None:
    """1102 for a registered client that never sent its key -> 2106."""
    _, client_id, name = _registered(case_context)
    wire = case_context.connect()
    wire.request(Reconnect(client_id, name), ReconnectDenied)


@case(
    "7.4-file-needs-session-key",
    level=MUST,
    requirement="A 1103 is allowed only after a 1101 or 1102 succeeded on the same connection.",
)
def test_file_needs_session_key(case_context: CaseContext) -> None:
    """A keyed client's 1103 on a new connection, without 1101/1102 there -> 2107."""
    session = keyed_session(case_context)
    wire = case_context.connect("no key on this connection")
    wire.send_file(session.client_id, unique_name("f"), payload(100, 1), session.aes_key)
    expect_refused(case_context, wire, "1103 on a connection without a session key")
