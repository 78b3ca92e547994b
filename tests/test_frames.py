"""backupproto.frames and backupproto.framing: expected bytes written by hand (spec 3-5)."""

from __future__ import annotations

import pytest

from backupproto.dialect import DIALECT_2022C, DIALECT_2024C, RequestCode, ResponseCode
from backupproto.errors import LocalProtocolError
from backupproto.frames import request_frame, response_frame, send_file_start
from backupproto.framing import Body, End, Framer, Head
from backupproto.schemas import schemas_for

CID = bytes(range(16))


def name_field(text: str) -> bytes:
    return text.encode() + bytes(255 - len(text))


REGISTER_ALICE = CID + bytes.fromhex("03 4c04 ff000000") + name_field("alice")


def register() -> bytes:
    return bytes(request_frame(RequestCode.REGISTER, CID, {"name": "alice"}))


def test_a_frame_starts_as_the_valid_message() -> None:
    assert register() == REGISTER_ALICE


def test_header_overrides() -> None:
    frame = request_frame(RequestCode.REGISTER, CID, {"name": "alice"})
    assert bytes(frame.with_header(payload_size=254)) == CID + bytes.fromhex("03 4c04 fe000000") + name_field(
        "alice"
    )
    assert bytes(frame.with_header(version=2, code=1199))[16:23] == bytes.fromhex("02 af04 ff000000")
    assert bytes(frame.with_header(client_id=b"\xff" * 16))[:16] == b"\xff" * 16
    with pytest.raises(LocalProtocolError):
        frame.with_header(colour=1)
    with pytest.raises(LocalProtocolError) as info:
        frame.with_header(payload_size=-1)
    assert info.value.field == "payload_size"


def test_field_replacement_truncation_and_trailing_bytes() -> None:
    frame = request_frame(RequestCode.REGISTER, CID, {"name": "alice"})
    unterminated = b"a" * 255
    assert bytes(frame.with_field("name", unterminated)) == REGISTER_ALICE[:23] + unterminated
    assert bytes(frame.with_field("name", b"ab")) == REGISTER_ALICE[:23] + b"ab"
    assert bytes(frame.truncated(10)) == REGISTER_ALICE[:10]
    assert bytes(frame.with_trailing(b"\x00\x01")) == REGISTER_ALICE + b"\x00\x01"
    with pytest.raises(LocalProtocolError):
        frame.truncated(frame.size + 1)


def test_response_frames() -> None:
    frame = response_frame(ResponseCode.REGISTERED, {"client_id": CID})
    assert bytes(frame) == bytes.fromhex("03 3408 10000000") + CID
    assert bytes(frame.with_header(code=2199)) == bytes.fromhex("03 9708 10000000") + CID
    assert bytes(frame.with_field("client_id", b"\x00" * 15)) == bytes.fromhex("03 3408 10000000") + bytes(15)


def test_send_file_start_counts_the_content_to_come() -> None:
    start = send_file_start(CID, {"content_size": 32, "file_name": "f.bin"})
    assert bytes(start) == CID + bytes.fromhex("03 4f04 23010000 20000000") + name_field("f.bin")
    # a file-name field of another length: the rest shifts, payload_size stays
    assert bytes(start.with_field("file_name", b"x"))[-5:] == bytes.fromhex("20000000") + b"x"


def test_framer_splits_requests_and_streams_file_content() -> None:
    start = CID + bytes.fromhex("03 4f04 23010000 20000000") + name_field("f.bin")
    stream = REGISTER_ALICE + start + bytes(range(32)) + REGISTER_ALICE[:30]
    framer = Framer(requests=True)
    pieces = []
    for index in range(0, len(stream), 7):  # in odd pieces
        pieces += framer.feed(stream[index : index + 7])
    heads = [piece for piece in pieces if isinstance(piece, Head)]
    assert heads[0] == Head(REGISTER_ALICE, 1100, 255, 0)
    assert heads[1] == Head(start, 1103, 291, 32)
    assert b"".join(piece.data for piece in pieces if isinstance(piece, Body)) == bytes(range(32))
    assert pieces.count(End()) == 2 and framer.inside_message
    assert framer.end() == [Head(REGISTER_ALICE[:30], 1100, 255, 0), End(248)]
    assert not framer.inside_message


def test_framer_keeps_malformed_traffic_with_its_header() -> None:
    unknown = CID + bytes.fromhex("03 af04 03000000") + b"abc"  # code 1199, 3 bytes
    framer = Framer(requests=True)
    assert framer.feed(unknown + b"\x01") == [Head(unknown[:23], 1199, 3, 3), Body(b"abc"), End()]
    assert framer.end() == [Head(b"\x01", None, None, 0), End(22)]


def test_framer_streams_the_payload_of_a_rejected_header() -> None:
    """A header the dialect rejects (version 2, known code, valid size) buffers nothing: its 255
    payload bytes stream unparsed; an accepted header's payload is buffered whole."""
    version_2 = CID + bytes.fromhex("02 4c04 ff000000") + name_field("alice")
    framer = Framer(requests=True)
    assert framer.feed(version_2 + REGISTER_ALICE) == [
        Head(version_2[:23], 1100, 255, 255),
        Body(name_field("alice")),
        End(),
        Head(REGISTER_ALICE, 1100, 255, 0),
        End(),
    ]


def test_framer_on_responses() -> None:
    registered = bytes.fromhex("03 3408 10000000") + CID
    framer = Framer(requests=False)
    assert framer.feed(registered + registered[:3]) == [Head(registered, 2100, 16, 0), End()]
    assert framer.feed(registered[3:]) == [Head(registered, 2100, 16, 0), End()]


def test_frames_of_other_dialects() -> None:
    schemas = schemas_for(DIALECT_2022C)
    frame = request_frame(RequestCode.CRC_OK, CID, {"file_name": "f.bin"}, schemas=schemas)
    assert bytes(frame) == CID + bytes.fromhex("03 5004 0f010000") + CID + name_field("f.bin")
    assert bytes(frame.with_field("payload_client_id", bytes(16)))[23:39] == bytes(16)
    start = send_file_start(
        CID,
        {
            "content_size": 32,
            "orig_file_size": 20,
            "packet_number": 2,
            "total_packets": 2,
            "file_name": "f.bin",
        },
        schemas=schemas_for(DIALECT_2024C),
    )
    assert bytes(start) == CID + bytes.fromhex("03 3c03 2b010000 20000000 14000000 0200 0200") + name_field(
        "f.bin"
    )
    assert bytes(start.with_header(code=RequestCode.CRC_OK))[17:19] == bytes.fromhex("8403")  # 900


def test_framer_cuts_2024_packets() -> None:
    packet = CID + bytes.fromhex("03 3c03 1b010000 20000000 14000000 0100 0200") + name_field("f.bin")
    framer = Framer(schemas_for(DIALECT_2024C), requests=True)
    pieces = framer.feed(packet + bytes(16) + packet)
    assert pieces[:3] == [Head(packet, 828, 283, 16), Body(bytes(16)), End()]
    assert pieces[3] == Head(packet, 828, 283, 16)
