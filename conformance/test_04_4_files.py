# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Sections 4.4-4.7, 5.4, 6: 1103 SEND_FILE, the cksum, 1104/1105/1106 and their answers."""

from __future__ import annotations

import os

import pytest

from backupproto.events import Acknowledged, CrcGiveUp, CrcOk, CrcRetry, FileReceived, Register
from conformance.case import MUST, CaseContext, case
from conformance.flows import (
    ZERO_ID,
    check_file_received,
    confirm,
    expect_refused,
    gnu_cksum,
    keyed_session,
    payload,
    payload_chunks,
    raw_encrypt,
    raw_send_file,
    send_and_check,
    unique_name,
)

CKSUM = "`cksum` is the POSIX cksum of the decrypted plaintext (section 6)."
BOUNDARY_SIZES = (0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 4097, 65535, 65536, 65537)
IN_VERIFYING = (
    "Allowed only in VERIFYING; `file_name` MUST be the file of the last 2103 on this connection, else 2107."
)


@case("4.4-file-crc-block-boundary", level=MUST, requirement=CKSUM)
def test_block_boundaries(case_context: CaseContext) -> None:
    """Files of 0, 1, 15, 16, 17, ... 65537 bytes on one connection: each 2103 matches GNU cksum."""
    session = keyed_session(case_context)
    for size in BOUNDARY_SIZES:
        name = unique_name(f"b{size}")
        send_and_check(session, name, payload(size, size))
        confirm(session, name)


@case("4.4-file-multi-mib", level=MUST, requirement=CKSUM)
def test_multi_mib(case_context: CaseContext) -> None:
    """A 3 MiB + 5 bytes file, streamed: 2103 matches GNU cksum (a chunked-CBC server fails here)."""
    session = keyed_session(case_context)
    name = unique_name("big")
    data = payload((3 << 20) + 5, 3)
    send_and_check(session, name, data)
    confirm(session, name)


@case("4.4-file-large", level=MUST, requirement=CKSUM)
def test_large(case_context: CaseContext, large_file_mib: int) -> None:
    """A file of --bp-large-file-mib MiB (skipped by default), in constant memory."""
    if large_file_mib <= 0:
        pytest.skip("a large file is sent only with --bp-large-file-mib N")
    size = (large_file_mib << 20) + 3
    session = keyed_session(case_context)
    name = unique_name("large")
    crc = gnu_cksum(payload_chunks(size, 11))
    session.wire.send_file(
        session.client_id, name, payload_chunks(size, 11), session.aes_key, plain_size=size
    )
    reply = session.wire.expect(FileReceived, client_id=session.client_id)
    check_file_received(session, reply, name, size, crc, None)
    confirm(session, name)


@case(
    "5.4-content-size-encrypted",
    level=MUST,
    requirement="`content_size` and `file_name` repeat the 1103; a client MUST check both and treat a difference "
    "as an error.",
)
def test_content_size_encrypted(case_context: CaseContext) -> None:
    """100 plaintext bytes travel as content_size 112: 2103 says 112 (not 100) and the same file_name."""
    session = keyed_session(case_context)
    name = unique_name("size")
    session.wire.send_file(session.client_id, name, payload(100, 1), session.aes_key)
    reply = session.wire.expect(FileReceived, client_id=session.client_id)
    check_file_received(session, reply, name, 100, gnu_cksum([payload(100, 1)]), payload(100, 1))


@case(
    "4.4-file-replace-same-name",
    level=MUST,
    requirement="Otherwise the server stores the file under `file_name` in the client's folder, replacing an "
    "earlier file of that name",
)
def test_replace(case_context: CaseContext) -> None:
    """Two versions of one name: the second 2103 has the second version's cksum."""
    session = keyed_session(case_context)
    name = unique_name("twice")
    for version in (1, 2):
        send_and_check(session, name, payload(3000 + version, version))
        confirm(session, name)


@case(
    "4.4-bad-content-size",
    level=MUST,
    requirement="`content_size` is the size of the encrypted content: a multiple of 16 and at least 16 (an empty "
    "file encrypts to one block of padding), else `bad_content_size` (offset 23).",
)
def test_bad_content_size(case_context: CaseContext) -> None:
    """content_size 17 (payload_size 276) and content_size 0 (payload_size 259): 2107 each."""
    for content_size in (17, 0):
        session = keyed_session(case_context)
        raw_send_file(
            session.wire, session.client_id, unique_name("f"), content_size, os.urandom(content_size)
        )
        expect_refused(case_context, session.wire, f"content_size {content_size}")


@case(
    "4.4-payload-size-mismatch",
    level=MUST,
    requirement="Then `payload_size` MUST equal `259 + content_size`, else `payload_size_mismatch` (field "
    "`payload_size`, offset 19).",
)
def test_file_payload_size_mismatch(case_context: CaseContext) -> None:
    """payload_size 259 + 32 with content_size 16: 2107."""
    session = keyed_session(case_context)
    raw_send_file(session.wire, session.client_id, unique_name("f"), 16, os.urandom(32))
    expect_refused(case_context, session.wire, "payload_size 291 with content_size 16")


@case(
    "4.4-bad-padding",
    level=MUST,
    requirement="If the content does not decrypt (`bad_padding`): 2107; nothing is stored.",
)
def test_bad_padding(case_context: CaseContext) -> None:
    """32 bytes whose decryption ends in 0x00 (no valid PKCS#7 padding): 2107."""
    session = keyed_session(case_context)
    content = raw_encrypt(session.aes_key, bytes(32))
    raw_send_file(session.wire, session.client_id, unique_name("pad"), 32, content)
    expect_refused(case_context, session.wire, "content without valid PKCS#7 padding (bad_padding)")


@case(
    "4.5-crc-ok-acknowledged",
    level=MUST,
    requirement="It answers 2104 ACKNOWLEDGED. The connection enters KEYED.",
)
def test_crc_ok(case_context: CaseContext) -> None:
    """1104 -> 2104 carrying our client_id; then another file on the same connection."""
    session = keyed_session(case_context)
    for index in range(2):
        name = unique_name("ok")
        send_and_check(session, name, payload(64, index))
        session.wire.request(CrcOk(session.client_id, name), Acknowledged)


@case("4.5-crc-ok-wrong-file", level=MUST, requirement=IN_VERIFYING)
def test_crc_ok_wrong_file(case_context: CaseContext) -> None:
    """1104 naming another file than the last 2103: 2107."""
    session = keyed_session(case_context)
    name = unique_name("right")
    send_and_check(session, name, payload(10, 1))
    session.wire.send(CrcOk(session.client_id, name + "-other"))
    expect_refused(case_context, session.wire, "1104 for another file than the one being verified")


@case(
    "4.6-crc-retry-no-response",
    level=MUST,
    requirement="**The server sends no response.** The connection enters RESENDING; the next request MUST be a "
    "1103 of the same file name.",
)
def test_crc_retry(case_context: CaseContext) -> None:
    """1103, 1105 -> nothing within 0.5 s; the resent 1103 (new content) -> 2103 with its cksum; 1104 -> 2104."""
    session = keyed_session(case_context)
    name = unique_name("retry")
    send_and_check(session, name, payload(500, 1))
    session.wire.send(CrcRetry(session.client_id, name))
    session.wire.expect_silence(0.5, because="1105 CRC_RETRY has no response (spec 4.6, 5.5)")
    send_and_check(session, name, payload(700, 2))
    confirm(session, name)


@case(
    "4.6-crc-retry-other-file",
    level=MUST,
    requirement="In RESENDING the `file_name` MUST be the one named by the 1105; otherwise 2107 "
    "(`unexpected_message`).",
)
def test_crc_retry_other_file(case_context: CaseContext) -> None:
    """After 1105 for A, a 1103 of B: 2107."""
    session = keyed_session(case_context)
    name = unique_name("a")
    send_and_check(session, name, payload(50, 1))
    session.wire.send(CrcRetry(session.client_id, name))
    session.wire.send_file(session.client_id, unique_name("b"), payload(50, 2), session.aes_key)
    expect_refused(case_context, session.wire, "a resend of another file than the 1105 named")


@case(
    "4.7-crc-give-up",
    level=MUST,
    requirement="The file stays stored with Verified = false, for inspection; a later 1103 of the same name "
    "replaces it. The server answers 2104 ACKNOWLEDGED.",
)
def test_crc_give_up(case_context: CaseContext) -> None:
    """Three sends (1103, 1105, 1103, 1105, 1103), then 1106 -> 2104; then the name is sent again."""
    session = keyed_session(case_context)
    name = unique_name("giveup")
    for attempt in range(3):
        send_and_check(session, name, payload(300, attempt))
        if attempt < 2:
            session.wire.send(CrcRetry(session.client_id, name))
    session.wire.request(CrcGiveUp(session.client_id, name), Acknowledged)
    send_and_check(session, name, payload(301, 9))
    confirm(session, name)


@case(
    "8.2-out-of-turn",
    level=MUST,
    requirement="Every (state, request) pair not in the table is out of turn: the server answers 2107 "
    "(`unexpected_message`) and closes",
)
def test_out_of_turn(case_context: CaseContext) -> None:
    """On a keyed connection: 1104 with no file, 1100, 1105 with no file: 2107 each."""
    for label in ("1104", "1100", "1105"):
        session = keyed_session(case_context)
        wire, client_id = session.wire, session.client_id
        if label == "1104":
            wire.send(CrcOk(client_id, unique_name("nofile")))
        elif label == "1100":
            wire.send(Register(ZERO_ID, unique_name()))
        else:
            wire.send(CrcRetry(client_id, unique_name("nofile")))
        expect_refused(case_context, wire, f"{label} on a keyed connection with no file being verified")


@case(
    "4-client-id-bound-to-connection",
    level=MUST,
    requirement="After a 2100, 2102 or 2105 on a connection, every later request on it MUST carry the id that "
    "response named; another id: 2107.",
)
def test_client_id_binding(case_context: CaseContext) -> None:
    """A keyed connection's 1103 carrying another registered client's id: 2107."""
    other = keyed_session(case_context, "other client")
    session = keyed_session(case_context, "this client")
    session.wire.send_file(other.client_id, unique_name("f"), payload(20, 1), session.aes_key)
    expect_refused(case_context, session.wire, "1103 with another client's id")
