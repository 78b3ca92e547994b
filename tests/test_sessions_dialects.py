"""Sessions record their dialect (spec/sessions.md 1.3): the splitter, the document and replay use
that dialect's codes, layouts and key size; a session without `dialect` is 2023A.

Expected bytes are written by hand from spec/dialects.md's code tables (little-endian codes:
1025 = 0x0401, 1600 = 0x0640, 1103 = 0x044f).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_servers import FakeServer

from backupproto.dialect import (
    DIALECT_2022C,
    DIALECT_2023A,
    DIALECT_2024A,
    DIALECTS,
    Dialect,
    RequestCode,
    ResponseCode,
)
from backupproto.schemas import schemas_for
from backupproto.sessions import Direction, Session, SessionError, Start, from_json, join, split_all, to_json
from conformance.recording import Recorder, load, plaintext_chunks, save
from conformance.replay import ReplayMismatch, ReplayServer, replay_against_server
from reference_client import BackupClient, FatalError, FileStatus

SCHEMA = Path(__file__).parent.parent / "spec" / "sessions.schema.json"

# 2024A REGISTER: client_id 16 zero bytes, version 3, code 1025, payload_size 255, "bob" + NULs.
REGISTER_2024A = bytes(16) + b"\x03" + b"\x01\x04" + b"\xff\x00\x00\x00" + b"bob".ljust(255, b"\x00")
# 2024A REGISTERED: version 3, code 1600, payload_size 16, an id.
REGISTERED_2024A = b"\x03" + b"\x40\x06" + b"\x10\x00\x00\x00" + bytes(range(16))
# 2022C SEND_FILE of client 0x11*16: payload client_id, content_size 32, "a.txt", 32 content bytes.
SEND_FILE_2022C = (
    b"\x11" * 16
    + b"\x03\x4f\x04"
    + (16 + 4 + 255 + 32).to_bytes(4, "little")
    + b"\x11" * 16
    + (32).to_bytes(4, "little")
    + b"a.txt".ljust(255, b"\x00")
    + b"\xab" * 32
)
# 2024A SEND_FILE (1028 = 0x0404), one packet: content_size 32, orig_file_size 20, packet 1 of 1.
SEND_FILE_2024A = (
    b"\x11" * 16
    + b"\x03\x04\x04"
    + (4 + 4 + 2 + 2 + 255 + 32).to_bytes(4, "little")
    + (32).to_bytes(4, "little")
    + (20).to_bytes(4, "little")
    + b"\x01\x00"
    + b"\x01\x00"
    + b"a.txt".ljust(255, b"\x00")
    + b"\xcd" * 32
)


def start_of(data: bytes, direction: Direction, dialect: Dialect) -> Start:
    start = split_all(direction, data, schemas_for(dialect))[0]
    assert isinstance(start, Start)
    return start


def test_the_splitter_decodes_wire_codes_of_its_dialect() -> None:
    start = start_of(REGISTER_2024A, Direction.REQUEST, DIALECT_2024A)
    assert start.decoded is not None and start.error is None
    assert (start.decoded["code"], start.decoded["type"], start.decoded["fields"]) == (
        1025,
        "REGISTER",
        {"name": "bob"},
    )
    response = start_of(REGISTERED_2024A, Direction.RESPONSE, DIALECT_2024A)
    assert response.decoded is not None and (response.decoded["code"], response.decoded["type"]) == (
        1600,
        "REGISTERED",
    )
    # the same bytes read as 2023A: an unknown code at offset 17 (request) and 1 (response)
    foreign = start_of(REGISTER_2024A, Direction.REQUEST, DIALECT_2023A)
    assert foreign.decoded is None and foreign.error is not None
    assert (foreign.error["kind"], foreign.error["offset"]) == ("unknown_code", 17)
    assert start_of(REGISTERED_2024A, Direction.RESPONSE, DIALECT_2023A).error is not None


def test_the_splitter_frames_send_file_layouts_of_2022c_and_2024a() -> None:
    pieces = split_all(Direction.REQUEST, SEND_FILE_2022C, schemas_for(DIALECT_2022C))
    start = pieces[0]
    assert isinstance(start, Start) and start.decoded is not None
    assert start.raw == SEND_FILE_2022C[: 23 + 275] and start.body_size == 32
    assert start.decoded["fields"] == {
        "content_size": 32,
        "file_name": "a.txt",
    }  # the payload copy is dropped
    packet = start_of(SEND_FILE_2024A, Direction.REQUEST, DIALECT_2024A)
    assert packet.decoded is not None and packet.raw == SEND_FILE_2024A[: 23 + 267] and packet.body_size == 32
    assert packet.decoded["code"] == 1028
    assert packet.decoded["fields"] == {
        "content_size": 32,
        "orig_file_size": 20,
        "packet_number": 1,
        "total_packets": 1,
        "file_name": "a.txt",
    }


def document(dialect: str | None, code: int = 1025) -> dict[str, object]:
    decoded = {"code": code, "type": "REGISTER", "version": 3, "client_id": "00" * 16, "payload_size": 255,
               "fields": {"name": "bob"}}  # fmt: skip
    doc: dict[str, object] = {
        "format": "backupproto-session",
        "format_version": 1,
        "name": "tiny",
        "messages": [
            {"index": 0, "direction": "request", "t": 0, "hex": REGISTER_2024A.hex(), "decoded": decoded}
        ],
    }
    if dialect is not None:
        doc["dialect"] = dialect
    return doc


def test_a_document_names_its_dialect_and_defaults_to_2023a() -> None:
    assert from_json(document("2024A")).dialect is DIALECT_2024A
    assert from_json(document(None, code=1100)).dialect is DIALECT_2023A
    assert to_json(from_json(document("2024A")))["dialect"] == "2024A"
    with pytest.raises(SessionError, match=r"decoded code 1025 is not a request code of dialect 2023A"):
        from_json(document(None))
    with pytest.raises(SessionError, match=r"unknown dialect '2025Z'.*2022C, 2023A, 2023C, 2024A, 2024C"):
        from_json(document("2025Z"))
    with pytest.raises(SessionError, match="dialect has the wrong type"):
        from_json(document(2024))  # type: ignore[arg-type]


def test_the_json_schema_knows_the_dialects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    for name, dialect in DIALECTS.items():
        jsonschema.validate(document(name, code=dialect.requests[RequestCode.REGISTER]), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document("2025Z"), schema)
    with pytest.raises(jsonschema.ValidationError, match="1025 is not one of"):
        jsonschema.validate(document(None), schema)  # no dialect: 2023A, where 1025 is no code
    with pytest.raises(jsonschema.ValidationError, match="1025 is not one of"):
        jsonschema.validate(document("2024C"), schema)


def test_the_json_schema_codes_agree_with_the_dialect_declarations() -> None:
    definitions = json.loads(SCHEMA.read_text())["$defs"]
    for dialect in DIALECTS.values():
        codes = definitions[f"codes-{dialect.name}"]
        requests = codes["then"]["properties"]["decoded"]["properties"]["code"]["enum"]
        responses = codes["else"]["properties"]["decoded"]["properties"]["code"]["enum"]
        assert (requests, responses) == (
            sorted(dialect.requests.values()),
            sorted(dialect.responses.values()),
        )


def test_join_keeps_one_dialect() -> None:
    first, second = Session("a", [], dialect=DIALECT_2024A), Session("b", [], dialect=DIALECT_2024A)
    assert join("ab", [first, second]).dialect is DIALECT_2024A
    with pytest.raises(SessionError, match="dialects 2022C, 2024A"):
        join("mixed", [first, Session("c", [], dialect=DIALECT_2022C)])


# --- recorded and replayed in every dialect ---------------------------------------------------

FLOW = [
    RequestCode.REGISTER,
    ResponseCode.REGISTERED,
    RequestCode.SEND_PUBLIC_KEY,
    ResponseCode.AES_KEY,
    RequestCode.SEND_FILE,
    ResponseCode.FILE_RECEIVED,
    RequestCode.CRC_OK,
    ResponseCode.ACKNOWLEDGED,
]


def wire(dialect: Dialect, role: RequestCode | ResponseCode) -> int:
    return dialect.requests[role] if isinstance(role, RequestCode) else dialect.responses[role]  # type: ignore[index]


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_a_backup_recorded_in_a_dialect_replays_both_ways(tmp_path: Path, dialect: Dialect) -> None:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    data = client_dir / "data.txt"
    data.write_bytes(b"replay me in every dialect\n" * 300)  # one 2024 packet
    with FakeServer(dialect=dialect) as server:
        recorder = Recorder(
            ("127.0.0.1", 0), server.address, tmp_path / "recorded", client_dir=client_dir, dialect=dialect
        ).start()
        try:
            client = BackupClient(recorder.address, "recorded", client_dir, retry_delay=0, dialect=dialect)
            assert client.backup(data).status is FileStatus.VERIFIED
            (path,) = recorder.wait_for(1)
        finally:
            recorder.stop()
    session = load(path)
    assert session.dialect is dialect
    assert [m.code for m in session.messages if not m.close] == [wire(dialect, role) for role in FLOW]
    assert session.blockers() == []
    save(session, tmp_path / "again.json")

    with FakeServer(dialect=dialect) as fresh:  # the client half against a server of the dialect
        report = replay_against_server(tmp_path / "again.json", fresh.address)
    assert report.messages == len(session.messages)

    replaying = ReplayServer(session, timeout=10).start()  # the server half against our client
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.txt").write_bytes(data.read_bytes())
    result = BackupClient(replaying.address, "another", other, retries=0, dialect=dialect).backup(
        other / "data.txt"
    )
    assert replaying.wait(30).messages == len(session.messages)
    assert result.status is FileStatus.VERIFIED


def record_backup(tmp_path: Path, dialect: Dialect, content: bytes) -> Session:
    """A reference-client backup of `content` through the recorder to a fake server of `dialect`."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    data = client_dir / "data.bin"
    data.write_bytes(content)
    with FakeServer(dialect=dialect) as server:
        recorder = Recorder(
            ("127.0.0.1", 0), server.address, tmp_path / "out", client_dir=client_dir, dialect=dialect
        ).start()
        try:
            result = BackupClient(
                recorder.address, "packets", client_dir, retry_delay=0, dialect=dialect
            ).backup(data)
            assert result.status is FileStatus.VERIFIED
            (path,) = recorder.wait_for(1)
        finally:
            recorder.stop()
    return load(path)


@pytest.mark.parametrize("dialect", [DIALECTS["2024A"], DIALECTS["2024C"]], ids=["2024A", "2024C"])
def test_a_file_of_several_packets_is_recorded_once_and_replayed_split_as_recorded(
    tmp_path: Path, dialect: Dialect
) -> None:
    content = bytes(range(256)) * 600  # 153600 bytes: packets of 65536, 65536 and 22544 ciphertext bytes
    session = record_backup(tmp_path, dialect, content)
    packets = [m for m in session.messages if m.content is not None]
    assert [(m.decoded or {})["fields"]["packet_number"] for m in packets] == [1, 2, 3]
    assert [m.content.size for m in packets if m.content is not None] == [65536, 65536, 153616 - 2 * 65536]
    first = packets[0].content
    assert first is not None and first.plaintext is not None and first.plaintext.size == len(content)
    assert b"".join(plaintext_chunks(first.plaintext)) == content
    for later in packets[1:]:  # covered by packet 1: neither plaintext nor ciphertext kept
        assert (
            later.content is not None and later.content.plaintext is None and later.content.ciphertext is None
        )
        assert later.content.plaintext_error is None
    assert session.blockers() == []
    save(session, tmp_path / "out" / "packets.json")  # beside its side file

    with FakeServer(dialect=dialect) as fresh:
        report = replay_against_server(tmp_path / "out" / "packets.json", fresh.address)
        assert report.messages == len(session.messages)
        (stored,) = fresh.files.values()
        assert stored.content == content

    replaying = ReplayServer(load(tmp_path / "out" / "packets.json"), timeout=10).start()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(content)
    result = BackupClient(replaying.address, "again", other, retries=0, dialect=dialect).backup(
        other / "data.bin"
    )
    assert replaying.wait(30).messages == len(session.messages)
    assert result.status is FileStatus.VERIFIED


def test_the_replay_server_notices_a_different_file_across_packets(tmp_path: Path) -> None:
    content = bytes(range(256)) * 600
    session = record_backup(tmp_path, DIALECT_2024A, content)
    replaying = ReplayServer(session, timeout=10).start()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(content[:-1] + b"!")  # the last packet differs
    client = BackupClient(replaying.address, "again", other, retries=0, dialect=DIALECT_2024A)
    with pytest.raises(FatalError, match="closed the connection instead of answering"):
        client.backup(other / "data.bin")  # the replay stops at the mismatch and closes
    with pytest.raises(ReplayMismatch) as caught:
        replaying.wait(30)
    assert "plaintext differs" in caught.value.reason
    assert caught.value.index == next(m.index for m in session.messages if m.content is not None)
