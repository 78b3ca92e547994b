"""Every dialect through both engines; 2024 packets; 2022C's differences; a made-up sixth dialect.

Expected bytes are written out by hand from /work/shared/dialects.md and the decisions in
spec/protocol.md; the engines under test produce the rest.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import drain

from backupproto.detect import detect_request_dialects, detect_response_dialects, dialects_with_code
from backupproto.dialect import (
    DIALECT_2022C,
    DIALECT_2023A,
    DIALECT_2023C,
    DIALECT_2024A,
    DIALECT_2024C,
    DIALECTS,
    SEND_FILE_2024,
    Dialect,
    RequestCode,
    ResponseCode,
    dialect_named,
)
from backupproto.engine import ClientConnection, ServerConnection
from backupproto.errors import ErrorKind, LocalProtocolError, RemoteProtocolError
from backupproto.events import (
    Acknowledged,
    AesKey,
    CrcOk,
    CrcRetry,
    Event,
    FileChunk,
    FileEnd,
    FileReceived,
    Reconnect,
    ReconnectApproved,
    Register,
    Registered,
    Request,
    Response,
    SendFile,
    SendPublicKey,
    ServerError,
)
from backupproto.frames import send_file_start
from backupproto.schemas import schemas_for
from backupproto.states import State

CID = bytes(range(16))
KEY_DER = bytes.fromhex("3003020101")
FILE = "f.bin"


def padded(text: str) -> bytes:
    return text.encode() + bytes(255 - len(text))


class Pair:
    """A client and a server engine of one dialect, wired back to back (in memory)."""

    def __init__(self, dialect: Dialect) -> None:
        self.client = ClientConnection(dialect)
        self.server = ServerConnection(dialect)
        self.wire: list[bytes] = []

    def request(self, *events: Request | FileChunk | FileEnd) -> list[Event]:
        data = b"".join(self.client.send(event) for event in events)
        self.wire.append(data)
        self.server.receive_data(data)
        return drain(self.server)

    def respond(self, response: Response) -> list[Event]:
        data = self.server.send(response)
        self.wire.append(data)
        self.client.receive_data(data)
        return drain(self.client)


def converse(dialect: Dialect, content: bytes, orig_file_size: int) -> Pair:
    """Register, key, send a file, a CRC retry, resend, CRC ok; reconnect where the dialect has it."""
    pair = Pair(dialect)
    assert pair.request(Register(bytes(16), "alice")) == [Register(bytes(16), "alice")]
    assert pair.respond(Registered(CID)) == [Registered(CID)]
    assert pair.request(SendPublicKey(CID, "alice", KEY_DER)) == [SendPublicKey(CID, "alice", KEY_DER)]
    assert pair.respond(AesKey(CID, b"k" * 128)) == [AesKey(CID, b"k" * 128)]
    original = orig_file_size if dialect.packetised else None
    file = SendFile(CID, len(content), FILE, original)
    for verdict in (CrcRetry(CID, FILE), CrcOk(CID, FILE)):
        half = len(content) // 2
        events = pair.request(file, FileChunk(content[:half]), FileChunk(content[half:]), FileEnd())
        assert events[0] == file and isinstance(events[-1], FileEnd)
        assert b"".join(e.data for e in events if isinstance(e, FileChunk)) == content
        assert pair.respond(FileReceived(CID, len(content), FILE, 7)) == [
            FileReceived(CID, len(content), FILE, 7)
        ]
        assert pair.request(verdict) == [verdict]
    assert pair.respond(Acknowledged(CID)) == [Acknowledged(CID)]
    assert pair.client.state is pair.server.state is State.KEYED
    if dialect.has_reconnect:
        again = Pair(dialect)
        assert again.request(Reconnect(CID, "alice")) == [Reconnect(CID, "alice")]
        assert again.respond(ReconnectApproved(CID, b"k" * 128)) == [ReconnectApproved(CID, b"k" * 128)]
        assert again.server.state is State.KEYED
    return pair


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
@pytest.mark.parametrize("size", [16, 32, 65536, 65536 + 32, 3 * 65536], ids=lambda size: f"{size}B")
def test_a_whole_conversation_in_every_dialect(dialect: Dialect, size: int) -> None:
    converse(dialect, bytes(range(256)) * (size // 256) + bytes(size % 256), size - 1)


# -- the wire, by hand -----------------------------------------------------------------------

REGISTER_CODES = {"2022C": "4c04", "2023A": "4c04", "2023C": "0104", "2024A": "0104", "2024C": "3903"}
REGISTERED_CODES = {"2022C": "3408", "2023A": "3408", "2023C": "3408", "2024A": "4006", "2024C": "4006"}


@pytest.mark.parametrize("name", list(DIALECTS))
def test_codes_on_the_wire(name: str) -> None:
    pair = converse(DIALECTS[name], bytes(16), 5)
    assert pair.wire[0] == bytes(16) + bytes.fromhex("03" + REGISTER_CODES[name] + "ff000000") + padded(
        "alice"
    )
    assert pair.wire[1] == bytes.fromhex("03" + REGISTERED_CODES[name] + "10000000") + CID


def test_2022c_verdicts_and_files_carry_the_client_id_in_the_payload() -> None:
    pair = converse(DIALECT_2022C, bytes(range(16)), 5)
    # wire: register, 2100, key, 2102, then SendFile (with its content), 2103, 1105, ...
    assert pair.wire[4] == CID + bytes.fromhex("03 4f04 23010000") + CID + bytes.fromhex("10000000") + padded(
        FILE
    ) + bytes(range(16))
    assert pair.wire[6] == CID + bytes.fromhex("03 5104 0f010000") + CID + padded(FILE)


def test_2024_packets_on_the_wire() -> None:
    content = bytes(65536 + 32)
    pair = converse(DIALECT_2024C, content, 65536 + 20)
    data = pair.wire[4]
    first = CID + bytes.fromhex("03 3c03 0b010100 20000100 14000100 0100 0200") + padded(FILE)
    second = CID + bytes.fromhex("03 3c03 2b010000 20000100 14000100 0200 0200") + padded(FILE)
    assert data == first + content[:65536] + second + content[65536:]
    assert pair.wire[6] == CID + bytes.fromhex("03 8503 ff000000") + padded(FILE)  # 901: CRC retry


# -- 2024 packets: every violation named -----------------------------------------------------


def keyed_server(dialect: Dialect = DIALECT_2024A) -> ServerConnection:
    server = ServerConnection(dialect)
    server.receive_data(bytes(16) + bytes.fromhex("03 0304 ff000000") + padded("alice"))  # 1027 reconnect
    assert drain(server) == [Reconnect(bytes(16), "alice")]
    server.send(ReconnectApproved(bytes(16), b"k" * 128))
    return server


def packet(number: int, total: int, content: int, *, size: int = 48, original: int = 40) -> bytes:
    """A 2024A packet built through the schemas: prefix fields as given, `content` bytes of 0xaa."""
    fields = {
        "content_size": size,
        "orig_file_size": original,
        "packet_number": number,
        "total_packets": total,
        "file_name": FILE,
    }
    start = send_file_start(bytes(16), fields, schemas=schemas_for(DIALECT_2024A))
    return bytes(start.with_header(payload_size=267 + content)) + b"\xaa" * content


def test_packets_that_add_up_in_any_split() -> None:
    server = keyed_server()
    events = []
    for piece in (packet(1, 3, 16), packet(2, 3, 1), packet(3, 3, 31)):
        server.receive_data(piece)
        events += drain(server)
    assert events[0] == SendFile(bytes(16), 48, FILE, 40)
    assert b"".join(e.data for e in events if isinstance(e, FileChunk)) == b"\xaa" * 48
    assert isinstance(events[-1], FileEnd) and server.conversation.pending is not None


@pytest.mark.parametrize(
    ("packets", "kind", "field", "words"),
    [
        (
            [packet(2, 3, 16)],
            ErrorKind.PACKET_OUT_OF_ORDER,
            "packet_number",
            "packet 2 out of order: packet 1 missing",
        ),
        (
            [packet(1, 3, 16), packet(1, 3, 16)],
            ErrorKind.PACKET_DUPLICATE,
            "packet_number",
            "duplicate packet 1",
        ),
        (
            [packet(1, 4, 16), packet(4, 4, 16)],
            ErrorKind.PACKET_OUT_OF_ORDER,
            "packet_number",
            "packet 4 out of order: packets 2..3 missing",
        ),
        (
            [packet(1, 3, 16), packet(2, 4, 16)],
            ErrorKind.TOTAL_CHANGED,
            "total_packets",
            "total_packets changed",
        ),
        (
            [packet(1, 3, 16), packet(2, 3, 16, size=64, original=50)],
            ErrorKind.CONTENT_SIZE_INCONSISTENT,
            "content_size",
            "content_size changed",
        ),
        (
            [packet(1, 3, 16), packet(2, 3, 16, original=33)],
            ErrorKind.BAD_ORIG_FILE_SIZE,
            "orig_file_size",
            "orig_file_size changed",
        ),
        (
            [packet(1, 2, 16), packet(2, 2, 16)],
            ErrorKind.CONTENT_SIZE_INCONSISTENT,
            "content_size",
            "packet 2 of 2 brings the content to 32 bytes of content_size 48",
        ),
        (
            [packet(1, 3, 16), packet(2, 3, 32)],
            ErrorKind.CONTENT_SIZE_INCONSISTENT,
            "content_size",
            "brings the content to 48",
        ),
        ([packet(1, 3, 47)], ErrorKind.CONTENT_SIZE_INCONSISTENT, "content_size", "carries 47 content bytes"),
        ([packet(1, 1, 16)], ErrorKind.CONTENT_SIZE_INCONSISTENT, "content_size", "packet 1 of 1 carries 16"),
        ([packet(1, 0, 16)], ErrorKind.BAD_TOTAL_PACKETS, "total_packets", "total_packets 0"),
        ([packet(0, 2, 16)], ErrorKind.BAD_PACKET_NUMBER, "packet_number", "packet_number 0 of 2"),
        ([packet(1, 1, 48, original=48)], ErrorKind.BAD_ORIG_FILE_SIZE, "orig_file_size", "does not encrypt"),
    ],
)
def test_packet_violations_are_named(packets: list[bytes], kind: ErrorKind, field: str, words: str) -> None:
    server = keyed_server()
    with pytest.raises(RemoteProtocolError) as info:
        for data in packets:
            server.receive_data(data)
            drain(server)
    assert (info.value.kind, info.value.field) == (kind, field)
    assert words in str(info.value), str(info.value)
    assert info.value.offset == schemas_for(DIALECT_2024A).offset(RequestCode.SEND_FILE, field)


def test_offsets_of_the_2024_packet_fields() -> None:
    offsets = schemas_for(DIALECT_2024A).message_offsets(RequestCode.SEND_FILE)
    assert offsets == {
        "client_id": 0,
        "version": 16,
        "code": 17,
        "payload_size": 19,
        "content_size": 23,
        "orig_file_size": 27,
        "packet_number": 31,
        "total_packets": 33,
        "file_name": 35,
        "content": 290,
    }


def test_a_packet_of_another_file_names_the_missing_packets() -> None:
    server = keyed_server()
    server.receive_data(packet(1, 3, 16))
    drain(server)
    other = send_file_start(
        bytes(16),
        {"content_size": 16, "orig_file_size": 1, "packet_number": 1, "total_packets": 1, "file_name": "g"},
        schemas=schemas_for(DIALECT_2024A),
    )
    server.receive_data(bytes(other))
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert (info.value.kind, info.value.field, info.value.offset) == (
        ErrorKind.PACKET_MISSING,
        "file_name",
        35,
    )
    assert "packets 2..3" in str(info.value)


def test_another_request_mid_file_names_the_missing_packets() -> None:
    server = keyed_server()
    server.receive_data(packet(1, 3, 16))
    drain(server)
    server.receive_data(bytes(16) + bytes.fromhex("03 0504 ff000000") + padded(FILE))  # 1029 CRC ok
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert "packets 2..3" in str(info.value)
    assert (info.value.kind, info.value.field, info.value.offset) == (ErrorKind.PACKET_MISSING, "code", 17)


def test_a_close_between_packets_is_a_closed_connection() -> None:
    server = keyed_server()
    server.receive_data(packet(1, 2, 16))
    drain(server)
    assert not server.at_message_boundary
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert info.value.kind is ErrorKind.CONNECTION_CLOSED and "packet 2" in str(info.value)


def test_a_2024_client_must_give_orig_file_size() -> None:
    client = ClientConnection(DIALECT_2024A)
    client.send(Reconnect(CID, "alice"))
    client.receive_data(bytes.fromhex("03 4506 90000000") + CID + b"k" * 128)  # 1605
    assert isinstance(drain(client)[0], ReconnectApproved)
    with pytest.raises(LocalProtocolError) as info:
        client.send(SendFile(CID, 32, FILE))
    assert info.value.field == "orig_file_size"


# -- 2022C: no reconnect, no server error ----------------------------------------------------


def test_2022c_has_no_reconnect() -> None:
    with pytest.raises(LocalProtocolError) as info:
        ClientConnection(DIALECT_2022C).send(Reconnect(CID, "alice"))
    assert info.value.kind is ErrorKind.UNKNOWN_CODE
    server = ServerConnection(DIALECT_2022C)
    server.receive_data(CID + bytes.fromhex("03 4e04 ff000000") + padded("alice"))
    with pytest.raises(RemoteProtocolError) as remote:
        drain(server)
    assert remote.value.kind is ErrorKind.UNKNOWN_CODE and "2022C" in str(remote.value)


def test_2022c_returning_client_resends_its_public_key() -> None:
    pair = Pair(DIALECT_2022C)
    assert pair.request(SendPublicKey(CID, "alice", KEY_DER)) == [SendPublicKey(CID, "alice", KEY_DER)]
    assert pair.respond(AesKey(CID, b"n" * 128)) == [AesKey(CID, b"n" * 128)]
    assert pair.server.state is State.KEYED


def test_2022c_server_error_is_a_close() -> None:
    """2022C has no 2107: `send(ServerError())` gives no bytes and ends; the client sees the close."""
    pair = Pair(DIALECT_2022C)
    pair.request(Register(bytes(16), "alice"))
    assert pair.server.send(ServerError()) == b""
    assert pair.server.state is State.CLOSED
    pair.client.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        drain(pair.client)
    assert info.value.kind is ErrorKind.CONNECTION_CLOSED


def test_2022c_payload_client_id_must_equal_the_header() -> None:
    server = ServerConnection(DIALECT_2022C)
    server.receive_data(CID + bytes.fromhex("03 4d04 9f010000") + padded("alice") + KEY_DER + bytes(155))
    drain(server)
    server.send(AesKey(CID, b"k" * 128))
    other = b"\xee" * 16
    server.receive_data(
        CID + bytes.fromhex("03 4f04 23010000") + other + bytes.fromhex("10000000") + padded(FILE)
    )
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert (info.value.kind, info.value.field, info.value.offset) == (
        ErrorKind.CLIENT_ID_MISMATCH,
        "client_id",
        23,
    )


# -- a made-up sixth dialect: a declaration, no logic ----------------------------------------

DIALECT_2099Z = Dialect(
    name="2099Z",
    requests={role: 500 + index for index, role in enumerate(RequestCode)},
    responses={role: 3000 + 2 * index for index, role in enumerate(ResponseCode)},
    aes_key_size=24,
    send_file_fields=SEND_FILE_2024,
    packet_size=1024,
    default_port=4242,
    database_name="made-up.db",
)


def test_a_made_up_dialect_runs_a_whole_conversation() -> None:
    pair = converse(DIALECT_2099Z, bytes(range(256)) * 12, 3071)
    assert pair.wire[0][16:23] == bytes.fromhex("03 f401 ff000000")  # 500
    assert pair.wire[1][:7] == bytes.fromhex("03 b80b 10000000")  # 3000
    packets = pair.wire[4].count(bytes.fromhex("03 f701"))  # 503 once per packet
    assert packets == 3
    assert detect_request_dialects(pair.wire[0], [*DIALECTS.values(), DIALECT_2099Z]) == [DIALECT_2099Z]


# -- detection and names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "names"),
    [
        ("00*16 03 4c04 ff000000", ["2022C", "2023A"]),
        ("00*16 03 4e04 ff000000", ["2023A"]),  # reconnect: 2022C has none
        ("00*16 03 0104 ff000000", ["2023C", "2024A"]),
        ("00*16 03 3903 ff000000", ["2024C"]),
        ("00*16 03 0404 1b010000", ["2024A"]),  # 1028 with 267 + 16: only the 2024 prefix fits
        ("00*16 03 0404 13010000", ["2023C", "2024A"]),  # 259 + 16, or 267 + 8 (a packet may be any size)
        ("00*16 03 4c04 fe000000", []),  # a wrong payload_size fits nothing
        ("00*10", list(DIALECTS)),  # too short to tell
    ],
)
def test_detect_request_dialects(header: str, names: list[str]) -> None:
    data = b"".join(
        bytes.fromhex(tok.split("*")[0]) * int(tok.split("*")[1]) if "*" in tok else bytes.fromhex(tok)
        for tok in header.split()
    )
    assert [d.name for d in detect_request_dialects(data)] == names


@pytest.mark.parametrize(
    ("header", "names"),
    [
        ("03 3408 10000000", ["2022C", "2023A", "2023C"]),
        ("03 3b08 00000000", ["2023A", "2023C"]),
        ("03 4006 10000000", ["2024A", "2024C"]),
        ("03 4706 00000000", ["2024A", "2024C"]),
        ("02 4006 10000000", []),
    ],
)
def test_detect_response_dialects(header: str, names: list[str]) -> None:
    assert [d.name for d in detect_response_dialects(bytes.fromhex(header))] == names


def test_names_and_declared_facts() -> None:
    assert [d.name for d in dialects_with_code(1600, requests=False)] == ["2024A", "2024C"]
    assert dialect_named("2024c") is DIALECT_2024C
    with pytest.raises(ValueError, match="2022C, 2023A"):
        dialect_named("2025A")
    assert (DIALECT_2024A.aes_key_size, DIALECT_2024A.default_port, DIALECT_2024A.database_required) == (
        32,
        1256,
        False,
    )
    assert (DIALECT_2023C.default_port, DIALECT_2023C.database_name) == (1357, "defensive.db")
    assert (DIALECT_2022C.has_reconnect, DIALECT_2022C.has_server_error) == (False, False)
    assert DIALECT_2023A.crc_send_limit == 3
    assert (
        DIALECT_2023C.describe()
        == "2023C: register is 1025, requests 1025-1031, responses 2100-2107, AES-128"
    )


SERVER_ERROR_BYTES = {
    "2022C": b"",  # no 2107: the server closes
    "2023A": bytes.fromhex("03 3b08 00000000"),
    "2023C": bytes.fromhex("03 3b08 00000000"),
    "2024A": bytes.fromhex("03 4706 00000000"),
    "2024C": bytes.fromhex("03 4706 00000000"),
}


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(list(DIALECTS.values())),
    st.lists(st.binary(min_size=1, max_size=400), max_size=4),
    st.booleans(),
)
def test_garbage_in_any_dialect_raises_only_remote_protocol_error(
    dialect: Dialect, pieces: list[bytes], close: bool
) -> None:
    """After a valid first packet (or file start), any bytes end in events or a RemoteProtocolError."""
    pair = converse(dialect, bytes(32), 20)
    server = pair.server
    start = pair.client.send(SendFile(CID, 64, FILE, 50 if dialect.packetised else None))
    start += pair.client.send(FileChunk(bytes(16)))
    try:
        server.receive_data(start)
        drain(server)
        for piece in pieces:
            server.receive_data(piece)
            drain(server)
        if close:
            server.receive_data(b"")
            drain(server)
    except RemoteProtocolError:
        assert server.send(ServerError()) == SERVER_ERROR_BYTES[dialect.name]
        assert server.state is State.CLOSED
