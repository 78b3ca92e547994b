"""The session file model: the splitter (messages, not segments), load/save/validate, the shipped corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupproto.schemas import schemas_for
from backupproto.sessions import (
    Body,
    Direction,
    End,
    SessionError,
    Splitter,
    Start,
    from_json,
    join,
    split_all,
)
from conformance.recording import load, load_folder, save

CORPUS = Path(__file__).parent.parent / "conformance" / "sessions"
SCHEMA = Path(__file__).parent.parent / "spec" / "sessions.schema.json"
CORPUS_FILES = sorted(CORPUS.glob("*.json")) + sorted(CORPUS.glob("*/*.json"))
"""Every shipped session: 2023A's in the top folder, another dialect's in <DIALECT>/."""

# Written by hand from spec/protocol.md section 3: client_id 16 zero bytes, version 3,
# code 1100 = 0x044c little-endian, payload_size 255, then "bob" + NUL padding.
REGISTER_BOB = bytes(16) + b"\x03" + b"\x4c\x04" + b"\xff\x00\x00\x00" + b"bob" + bytes(252)
# 2100 REGISTERED: version 3, code 0x0834, payload_size 16, a client id.
REGISTERED = b"\x03" + b"\x34\x08" + b"\x10\x00\x00\x00" + bytes(range(16))
# 1103 SEND_FILE for client 0x11*16: content_size 32, file "a.txt", 32 content bytes.
SEND_FILE = (
    b"\x11" * 16
    + b"\x03\x4f\x04"
    + (259 + 32).to_bytes(4, "little")
    + (32).to_bytes(4, "little")
    + b"a.txt".ljust(255, b"\x00")
    + b"\xab" * 32
)
SERVER_ERROR = b"\x03\x3b\x08\x00\x00\x00\x00"


def messages(pieces: list[Start | Body | End]) -> list[tuple[bytes, bytes, object]]:
    """(first bytes, body, error kind) per message."""
    out: list[tuple[bytes, bytes, object]] = []
    first, body = b"", b""
    for piece in pieces:
        if isinstance(piece, Start):
            first, body = piece.raw, b""
            error = piece.error["kind"] if piece.error else None
        elif isinstance(piece, Body):
            body += piece.data
        else:
            if piece.error is not None:
                error = piece.error["kind"]
            out.append((first, body, error))
    return out


def test_register_is_decoded() -> None:
    pieces = split_all(Direction.REQUEST, REGISTER_BOB)
    assert isinstance(pieces[0], Start)
    assert pieces[0].decoded == {
        "code": 1100,
        "type": "REGISTER",
        "version": 3,
        "client_id": "00" * 16,
        "payload_size": 255,
        "fields": {"name": "bob"},
    }
    assert pieces[0].raw == REGISTER_BOB and isinstance(pieces[1], End) and len(pieces) == 2


def test_send_file_header_then_streamed_content() -> None:
    pieces = split_all(Direction.REQUEST, SEND_FILE)
    start = pieces[0]
    assert isinstance(start, Start) and start.raw == SEND_FILE[: 23 + 259] and start.body_size == 32
    assert start.decoded is not None
    assert start.decoded["fields"] == {"content_size": 32, "file_name": "a.txt"}
    assert messages(pieces) == [(SEND_FILE[:282], b"\xab" * 32, None)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=40))
def test_segments_do_not_matter(cuts: list[int]) -> None:
    """Messages, not TCP segments: any chunking of the stream gives the same messages."""
    stream = REGISTER_BOB + SEND_FILE + REGISTER_BOB
    splitter = Splitter(Direction.REQUEST)
    pieces: list[Start | Body | End] = []
    position = 0
    for cut in cuts:
        pieces += splitter.feed(stream[position : position + cut])
        position += cut
    pieces += splitter.feed(stream[position:]) + splitter.end()
    assert messages(pieces) == [
        (REGISTER_BOB, b"", None),
        (SEND_FILE[:282], b"\xab" * 32, None),
        (REGISTER_BOB, b"", None),
    ]


def test_responses() -> None:
    assert messages(split_all(Direction.RESPONSE, REGISTERED + SERVER_ERROR)) == [
        (REGISTERED, b"", None),
        (SERVER_ERROR, b"", None),
    ]


def test_bad_header_keeps_the_announced_bytes() -> None:
    """Unknown code 1199 (0x04af): the header frames its 255 bytes; then the next message parses."""
    bad = REGISTER_BOB[:17] + b"\xaf\x04" + REGISTER_BOB[19:]
    pieces = split_all(Direction.REQUEST, bad + REGISTER_BOB)
    assert messages(pieces) == [(bad[:23], bad[23:], "unknown_code"), (REGISTER_BOB, b"", None)]
    start = pieces[0]
    assert isinstance(start, Start) and start.error is not None and start.error["offset"] == 17


def test_bad_name_is_noted_with_the_whole_message() -> None:
    no_nul = REGISTER_BOB[:23] + b"A" * 255
    pieces = split_all(Direction.REQUEST, no_nul)
    assert messages(pieces) == [(no_nul, b"", "missing_nul")]


@pytest.mark.parametrize("cut", [1, 22, 23, 100, 277])
def test_truncated_message(cut: int) -> None:
    pieces = split_all(Direction.REQUEST, REGISTER_BOB[:cut])
    assert messages(pieces) == [(REGISTER_BOB[:cut], b"", "truncated")]
    end = pieces[-1]
    known = 23 if cut < 23 else 278  # before the header is whole, only the header is known to be due
    assert isinstance(end, End) and end.error is not None and end.error["missing"] == known - cut


def test_bad_version_keeps_the_payload_as_content() -> None:
    """Version 2 on a well-formed 1100: the header is the message, its 255 bytes its content."""
    version_2 = REGISTER_BOB[:16] + b"\x02" + REGISTER_BOB[17:]
    pieces = split_all(Direction.REQUEST, version_2 + REGISTER_BOB)
    assert messages(pieces) == [
        (version_2[:23], version_2[23:], "unsupported_version"),
        (REGISTER_BOB, b"", None),
    ]


@pytest.mark.parametrize("cut", [30, 281])
def test_truncated_send_file_prefix_misses_the_whole_payload(cut: int) -> None:
    """Once a 1103's header is whole, the bytes due run to the end of its payload (23 + 291)."""
    pieces = split_all(Direction.REQUEST, SEND_FILE[:cut])
    assert messages(pieces) == [(SEND_FILE[:cut], b"", "truncated")]
    end = pieces[-1]
    assert isinstance(end, End) and end.error is not None and end.error["missing"] == 314 - cut
    assert end.error["header"] == {"code": 1103, "type": "SEND_FILE", "payload_size": 291}


def test_truncated_content() -> None:
    pieces = split_all(Direction.REQUEST, SEND_FILE[:-5])
    assert messages(pieces) == [(SEND_FILE[:282], b"\xab" * 27, "truncated")]


def test_feed_after_end_is_refused() -> None:
    splitter = Splitter(Direction.REQUEST)
    splitter.end()
    with pytest.raises(SessionError, match="after its stream ended"):
        splitter.feed(b"x")


# --- load / save / validate ----------------------------------------------------------------


def minimal(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "format": "backupproto-session",
        "format_version": 1,
        "name": "tiny",
        "messages": [
            {"index": 0, "direction": "request", "t": 0, "hex": REGISTER_BOB.hex()},
            {"index": 1, "direction": "response", "t": 0.1, "close": True},
        ],
    }
    document.update(changes)
    return document


def test_minimal_document_loads() -> None:
    session = from_json(minimal())
    assert [m.raw for m in session.messages] == [REGISTER_BOB, b""]
    assert session.messages[1].close and session.level == "MUST"
    assert session.variables == ["client_id", "encrypted_aes_key", "content", "name"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other"}, "format"),
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"name": "Has Spaces"}, "name"),
        ({"variables": ["client_id", "time"]}, "unknown variables"),
        ({"level": "MAY"}, "level"),
        ({"messages": [{"index": 0, "direction": "sideways", "t": 0, "hex": ""}]}, "direction"),
        ({"messages": [{"index": 0, "direction": "request", "t": 0, "hex": "zz"}]}, "bad hex"),
        ({"messages": [{"index": 0, "direction": "request", "t": 0}]}, "missing 'hex'"),
        (
            {
                "messages": [
                    {"index": 1, "direction": "request", "t": 0, "close": True},
                    {"index": 0, "direction": "request", "t": 0, "close": True},
                ]
            },
            "unique and increasing",
        ),
    ],
)
def test_invalid_documents_are_refused_saying_what(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SessionError, match=message):
        from_json(minimal(**changes))


def test_plaintext_must_match_its_hash() -> None:
    content = {
        "size": 16,
        "sha256": "0" * 64,
        "plaintext": {"size": 2, "sha256": "0" * 64, "cksum": 1, "base64": "aGk="},
    }
    document = minimal(messages=[{"index": 0, "direction": "request", "t": 0, "hex": "", "content": content}])
    with pytest.raises(SessionError, match="does not match its sha256"):
        from_json(document)


def test_unreadable_file_is_a_session_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SessionError, match="cannot read session file"):
        load(path)


def test_save_load_round_trip(tmp_path: Path) -> None:
    session = load(CORPUS / "register-file-crc-ok.json")
    save(session, tmp_path / "copy.json")
    again = load(tmp_path / "copy.json")
    original = json.loads((CORPUS / "register-file-crc-ok.json").read_text())
    assert "dialect" not in original  # recorded before dialects: read as 2023A, written explicitly
    assert json.loads((tmp_path / "copy.json").read_text()) == {**original, "dialect": "2023A"}
    assert again.messages[4].content is not None and again.messages[4].content.plaintext is not None


def test_join_renumbers_connections_and_indexes() -> None:
    first, second = load(CORPUS / "register-file-crc-ok.json"), load(CORPUS / "error-bad-version.json")
    joined = join("both", [first, second])
    assert [m.index for m in joined.messages] == list(range(len(first.messages) + len(second.messages)))
    assert {m.connection for m in joined.messages} == {0, 1}
    times = [m.t for m in joined.messages]
    assert times == sorted(times)


# --- the shipped corpus ----------------------------------------------------------------------


EXPECTED_FLOWS = {
    "register-file-crc-ok",
    "crc-retry-success",
    "crc-give-up",
    "reconnect",
    "reconnect-denied",
    "duplicate-name",
    "error-unknown-code",
    "error-bad-version",
    "error-payload-size-mismatch",
    "error-hostile-file-name",
    "error-truncated-frame",
    "hostile-name-no-nul",
    "hostile-huge-payload-size",
}


def test_corpus_has_every_flow_and_is_replayable() -> None:
    sessions = load_folder(CORPUS)
    assert {s.name for s in sessions} >= EXPECTED_FLOWS
    for session in sessions:
        assert session.blockers() == [], session.name
        assert [m.index for m in session.messages] == list(range(len(session.messages)))


def test_corpus_follows_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in CORPUS_FILES:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_corpus_notes_agree_with_the_splitter() -> None:
    """Decoded fields and error notes (also of hand-written sessions) are what the splitter says."""
    for session in map(load, CORPUS_FILES):
        for message in session.messages:
            if message.close:
                continue
            start = split_all(message.direction, message.raw, schemas_for(session.dialect))[0]
            assert isinstance(start, Start)
            where = f"{session.name} message {message.index}"
            assert start.decoded == message.decoded, where
            want = message.error["kind"] if message.error else None
            got = start.error["kind"] if start.error else None
            assert got == want, where


# Flows each dialect's corpus has (recorded by record_corpus.py --dialect NAME); 2022C has no reconnect.
DIALECT_FLOWS = EXPECTED_FLOWS - {"hostile-name-no-nul", "hostile-huge-payload-size"}
DIALECT_CORPORA = {
    "2022C": DIALECT_FLOWS - {"reconnect", "reconnect-denied"},
    "2023C": DIALECT_FLOWS,
    "2024A": DIALECT_FLOWS,
    "2024C": DIALECT_FLOWS,
}


@pytest.mark.parametrize("dialect", sorted(DIALECT_CORPORA))
def test_each_dialect_has_its_corpus_in_its_folder(dialect: str) -> None:
    sessions = load_folder(CORPUS / dialect)
    suffix = f"-{dialect.lower()}"
    assert {s.name.removesuffix(suffix) for s in sessions} == DIALECT_CORPORA[dialect]
    for session in sessions:
        assert session.name.endswith(suffix), session.name
        assert session.dialect.name == dialect, session.name
        assert session.blockers() == [], session.name


def test_corpus_session_names_are_unique_and_2023a_stays_on_top() -> None:
    sessions = [load(path) for path in CORPUS_FILES]
    names = [s.name for s in sessions]
    assert len(names) == len(set(names))
    assert {s.dialect.name for s in load_folder(CORPUS)} == {"2023A"}


def test_corpus_flows_have_the_codes_of_the_spec() -> None:
    def codes(name: str) -> list[int | None]:
        return [m.code for m in load(CORPUS / f"{name}.json").messages if not m.close]

    assert codes("register-file-crc-ok") == [1100, 2100, 1101, 2102, 1103, 2103, 1104, 2104]
    assert codes("crc-retry-success") == [1100, 2100, 1101, 2102, 1103, 2103, 1105, 1103, 2103, 1104, 2104]
    assert codes("crc-give-up")[-2:] == [1106, 2104] and codes("crc-give-up").count(1105) == 2
    assert codes("duplicate-name")[-2:] == [1100, 2101]
    assert codes("reconnect")[8:10] == [1102, 2105]
    assert codes("reconnect-denied")[:2] == [1102, 2106]
    for name in ("error-unknown-code", "error-bad-version", "error-payload-size-mismatch"):
        assert codes(name) == [None, 2107]
