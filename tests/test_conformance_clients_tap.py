"""conformance.clients.tap: the client's requests as sent, read beside the engine (expected bytes
written by hand from spec 3-4 and dialects 18.2)."""

from __future__ import annotations

from backupproto.dialect import DIALECT_2024C
from backupproto.schemas import V3_SCHEMAS, schemas_for
from conformance.clients.tap import PacketRecord, RequestStart, RequestTap

CID = bytes(range(16))
REGISTER_ALICE = CID + bytes.fromhex("03 4c04 ff000000") + b"alice" + bytes(250)
"""1100 REGISTER, payload_size 255, name 'alice'."""
CONTENT = bytes(range(100, 132))
SEND_FILE_START = CID + bytes.fromhex("03 4f04 23010000 20000000") + b"f.bin" + bytes(250)
"""1103 SEND_FILE, payload_size 291: content_size 32, file_name 'f.bin', then 32 content bytes."""


def fed(tap: RequestTap, stream: bytes, step: int) -> RequestTap:
    for at in range(0, len(stream), step):
        tap.feed(stream[at : at + step])
    return tap


def test_requests_and_packets_as_sent_in_any_cut() -> None:
    stream = REGISTER_ALICE + SEND_FILE_START + CONTENT + REGISTER_ALICE
    for step in (1, 7, 300, len(stream)):
        tap = fed(RequestTap(V3_SCHEMAS), stream, step)
        assert tap.codes == [1100, 1103, 1100]
        packet = PacketRecord(32, None, None, None, 32, "f.bin", CONTENT[:16])
        assert tap.packets == [packet]
        assert list(tap.starts) == [
            RequestStart(1100, 255, REGISTER_ALICE),
            RequestStart(1103, 291, SEND_FILE_START, packet),
            RequestStart(1100, 255, REGISTER_ALICE),
        ]
        assert tap.pending() == REGISTER_ALICE


def test_the_code_is_known_as_soon_as_the_header_is_in() -> None:
    tap = RequestTap(V3_SCHEMAS)
    tap.feed(REGISTER_ALICE[:22])
    assert tap.codes == []
    tap.feed(REGISTER_ALICE[22:40])
    assert tap.codes == [1100] and not tap.starts
    assert tap.pending() == REGISTER_ALICE[:40]  # the start of the request that is still arriving
    tap.feed(REGISTER_ALICE[40:])
    assert tap.codes == [1100] and len(tap.starts) == 1


def test_a_rejected_header_keeps_its_payload_as_evidence() -> None:
    """Version 2: the framer streams the payload unparsed; the tap still keeps the request's start
    and reads a send-file's numbers from it."""
    version_2 = REGISTER_ALICE[:16] + b"\x02" + REGISTER_ALICE[17:]
    file_2 = SEND_FILE_START[:16] + b"\x02" + SEND_FILE_START[17:]
    tap = fed(RequestTap(V3_SCHEMAS), version_2 + file_2 + CONTENT, 5)
    assert tap.codes == [1100, 1103]
    assert [start.raw for start in tap.starts] == [version_2, file_2]
    assert tap.packets == [PacketRecord(32, None, None, None, 32, "f.bin", CONTENT[:16])]
    assert tap.pending() == version_2


def test_an_incomplete_start_shows_its_first_512_bytes() -> None:
    """payload_size big-endian (0xff000000 read little-endian): the header is rejected, the start
    never completes; the evidence is the first 512 bytes that arrived."""
    big_endian = CID + bytes.fromhex("03 4c04 000000ff") + bytes(1000)
    tap = RequestTap(V3_SCHEMAS)
    tap.feed(big_endian)
    assert tap.codes == [1100] and not tap.starts
    assert tap.pending() == big_endian[:512]


def test_2024_packets_with_their_numbers_and_first_blocks() -> None:
    def packet(number: int, content: bytes) -> bytes:
        payload_size = (267 + len(content)).to_bytes(4, "little")
        prefix = bytes.fromhex("30000000 2a000000") + bytes([number, 0, 2, 0]) + b"p" + bytes(254)
        return CID + b"\x03\x3c\x03" + payload_size + prefix + content

    stream = packet(1, CONTENT) + packet(2, CONTENT[:16])
    tap = fed(RequestTap(schemas_for(DIALECT_2024C)), stream, 9)
    assert tap.codes == [828, 828]
    assert tap.packets == [
        PacketRecord(48, 42, 1, 2, 32, "p", CONTENT[:16]),
        PacketRecord(48, 42, 2, 2, 16, "p", CONTENT[:16]),
    ]
