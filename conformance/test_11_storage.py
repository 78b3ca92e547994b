# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Sections 9.2, 11, 13: what the server stores (needs --bp-data-dir), names that are paths, SQL in names."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from backupproto.events import (
    Acknowledged,
    CrcGiveUp,
    Reconnect,
    ReconnectApproved,
    Register,
    RegistrationFailed,
)
from conformance.case import INFO, MUST, CaseContext, case
from conformance.flows import (
    ZERO_ID,
    Session,
    confirm,
    expect_refused,
    keyed_session,
    payload,
    raw_encrypt,
    raw_name,
    raw_send_file,
    reconnect_key,
    register,
    send_and_check,
    unique_name,
    with_reconnect,
)
from conformance.storage import column_type, file_row, query, stored_content


@case(
    "11.2-client-recorded",
    level=MUST,
    requirement="2100 is sent only after the client row is committed; 2102 and 2105 only after the key(s) are "
    "committed",
)
def test_client_recorded(case_context: CaseContext, storage: Path) -> None:
    """After 2102: clients has the id, the name, the 160-byte key and a 16-byte AESKey."""
    session = keyed_session(case_context)
    rows = query(
        case_context,
        storage,
        "SELECT Name, PublicKey, AESKey FROM clients WHERE ID = ?",
        (session.client_id,),
    )
    if not rows:
        case_context.fail(f"a clients row for {session.client_id.hex()} (spec 11.2)", "no row")
    name, public_key, aes_key = rows[0]
    if name != session.name:
        case_context.fail(f"clients.Name {session.name!r}", f"{name!r}")
    if not public_key or len(public_key) != 160:
        case_context.fail("clients.PublicKey: the 160-byte field", f"{public_key!r}")
    if aes_key != session.aes_key:
        case_context.fail("clients.AESKey: the session key of the 2102 (spec 7.4)", f"{aes_key!r}")


@case(
    "11.1-file-stored",
    level=MUST,
    requirement="A file is stored in its client's folder under its file name.",
)
def test_file_stored(case_context: CaseContext, storage: Path) -> None:
    """After 1104: the stored bytes are the plaintext, and Verified = 1."""
    session = keyed_session(case_context)
    name = unique_name("stored")
    data = payload(70000, 5)
    send_and_check(session, name, data)
    confirm(session, name)
    if stored_content(case_context, storage, session.client_id, name) != data:
        case_context.fail("the stored file holds the plaintext", "other bytes")
    row = file_row(case_context, storage, session.client_id, name)
    if row is None or row[1] != 1:
        case_context.fail("files.Verified = 1 after 1104 (spec 11.4)", f"row {row}")


@case(
    "11.4-unverified-after-give-up",
    level=MUST,
    requirement="The file stays stored with Verified = false, for inspection; a later 1103 of the same name "
    "replaces it.",
)
def test_unverified_after_give_up(case_context: CaseContext, storage: Path) -> None:
    """After 1106: the file is stored, Verified = 0."""
    session = keyed_session(case_context)
    name = unique_name("gaveup")
    send_and_check(session, name, payload(99, 1))
    session.wire.request(CrcGiveUp(session.client_id, name), Acknowledged)
    row = file_row(case_context, storage, session.client_id, name)
    if row is None or row[1] != 0:
        case_context.fail("a files row with Verified = 0 after 1106 (spec 11.4)", f"row {row}")
    if stored_content(case_context, storage, session.client_id, name) != payload(99, 1):
        case_context.fail("the file stays stored after 1106", "other bytes")


@case(
    "9.2-refused-file-keeps-previous",
    dialects=with_reconnect,
    level=MUST,
    requirement="A failed, closed, timed-out or refused 1103 leaves the previous file of that name untouched and "
    "removes its temporary file.",
)
def test_refused_keeps_previous(case_context: CaseContext, storage: Path) -> None:
    """A verified file, then a bad-padding 1103 of the same name (2107): the first version stays."""
    session = keyed_session(case_context, "first version")
    name = unique_name("keep")
    send_and_check(session, name, payload(1000, 1))
    confirm(session, name)
    wire = case_context.connect("bad version")
    key = reconnect_key(wire, wire.request(Reconnect(session.client_id, session.name), ReconnectApproved))
    bad = Session(wire, session.client_id, session.name, key)
    raw_send_file(wire, bad.client_id, name, 32, raw_encrypt(key, bytes(32)))
    expect_refused(case_context, wire, "content without valid padding")
    if stored_content(case_context, storage, session.client_id, name) != payload(1000, 1):
        case_context.fail("the verified first version is untouched (spec 9.2)", "the stored bytes changed")
    row = file_row(case_context, storage, session.client_id, name)
    if row is None or row[1] != 1:
        case_context.fail("files.Verified still 1 for the untouched file", f"row {row}")


HOSTILE = (
    "../../{tag}",
    "../{tag}",
    "{tmp}/{tag}",
    "sub/{tag}",
    "sub\\{tag}",
    "C:{tag}",
    "..",
    ".",
    " {tag}",
    "{tag} ",
)


@case(
    "13.13-file-name-path-refused",
    level=MUST,
    requirement="Section 3.4 forbids `/`, `\\`, `:`, `.`, `..` and control characters in the wire format, so a "
    "conformant parser rejects them before the server sees them (`invalid_file_name`, 2107).",
)
def test_path_names_refused(case_context: CaseContext) -> None:
    """1103 named '../../x', '/tmp/x', 'a/b', 'a\\b', 'C:x', '..', '.', ' x', 'x ': 2107 each, nothing written."""
    tag = unique_name("escape")
    tmp = tempfile.gettempdir()
    written: list[Path] = []
    for pattern in HOSTILE:
        name = pattern.format(tag=tag, tmp=tmp)
        session = keyed_session(case_context, f"file name {name!r}")
        session.wire.send_file(
            session.client_id, raw_name(name.encode(), session.wire.dialect), payload(10, 1), session.aes_key
        )
        try:
            expect_refused(case_context, session.wire, f"file name {name!r} (invalid_file_name)")
        except BaseException:
            written += _escaped_files(case_context, tag, tmp)
            if not written:
                raise
        written += _escaped_files(case_context, tag, tmp)
        if written:
            case_context.fail(
                f"file name {name!r} refused with 2107, nothing written outside the client's folder",
                f"the server wrote {[str(path) for path in written]} (removed now)",
                hint="the file name was used as a path, as given (spec 13.13: path traversal)",
            )


def _escaped_files(case_context: CaseContext, tag: str, tmp: str) -> list[Path]:
    """Files named `tag` where a path-as-given server would write them (removed once found)."""
    places = [Path(tmp)]
    if case_context.data_dir is not None:
        places += [case_context.data_dir, case_context.data_dir.parent, *case_context.data_dir.glob("*")]
    found = []
    for place in places:
        candidate = place / tag
        if candidate.is_file():
            found.append(candidate)
            os.unlink(candidate)
    return found


@case(
    "13.14-sql-in-names",
    level=MUST,
    requirement="All SQL statements MUST use bound parameters (section 11.2); names are never interpolated into "
    "SQL text.",
)
def test_sql_in_names(case_context: CaseContext) -> None:
    """A name full of SQL registers, is taken afterwards (2101), and the server keeps registering others."""
    name = f"x'); DROP TABLE clients; -- \" {unique_name()}"
    register(case_context.connect(), name)
    case_context.connect().request(Register(ZERO_ID, name), RegistrationFailed)
    register(case_context.connect())


@case("11.2-verified-column-type", level=INFO, requirement="Verified BOOLEAN NOT NULL DEFAULT 0,")
def test_verified_column_type(case_context: CaseContext, storage: Path) -> None:
    """After 1104, files.Verified is stored as INTEGER 1 (SQLite's BOOLEAN); another type is noted."""
    session = keyed_session(case_context)
    name = unique_name("typed")
    send_and_check(session, name, payload(32, 3))
    confirm(session, name)
    stored = column_type(case_context, storage, "files", "Verified", (session.client_id, name))
    if stored.split(" ", 1)[0] != "integer":
        case_context.fail(
            "files.Verified stored as INTEGER 1 (spec 11.2: BOOLEAN, which SQLite keeps as INTEGER 0/1)",
            f"typeof(Verified) = {stored or 'no row'}",
            hint=f"Verified stored as {stored.split(' ', 1)[0].upper()}: the suite reads it as a boolean, "
            "but other tools may not",
        )
