"""backupproto.framing: what a `Framer` shows of the message it is still buffering (expected
bytes written by hand, spec 3-4)."""

from __future__ import annotations

from backupproto.framing import End, Framer, Head

CID = bytes(range(16))
NAME_ALICE = b"alice" + bytes(250)
REGISTER_ALICE = CID + bytes.fromhex("03 4c04 ff000000") + NAME_ALICE
"""1100 REGISTER, version 3, payload_size 255, name 'alice'."""


def test_the_code_of_an_accepted_header_is_known_before_its_payload() -> None:
    framer = Framer(requests=True)
    assert framer.feed(REGISTER_ALICE[:22]) == []
    assert framer.arriving_code is None  # the header is not complete yet
    assert framer.feed(REGISTER_ALICE[22:100]) == []
    assert framer.arriving_code == 1100
    assert framer.feed(REGISTER_ALICE[100:]) == [Head(REGISTER_ALICE, 1100, 255, 0), End()]
    assert framer.arriving_code is None


def test_a_rejected_header_is_handed_out_at_once_so_no_code_is_arriving() -> None:
    version_2 = CID + bytes.fromhex("02 4c04 ff000000")
    framer = Framer(requests=True)
    assert framer.feed(version_2) == [Head(version_2, 1100, 255, 255)]
    assert framer.arriving_code is None


def test_buffered_shows_the_message_not_yet_handed_out() -> None:
    framer = Framer(requests=True)
    assert framer.buffered == b""
    framer.feed(REGISTER_ALICE[:10])
    assert framer.buffered == CID[:10]
    framer.feed(REGISTER_ALICE[10:40])
    assert framer.buffered == CID + bytes.fromhex("03 4c04 ff000000") + b"alice" + bytes(12)
    framer.feed(REGISTER_ALICE[40:] + REGISTER_ALICE[:3])
    assert framer.buffered == CID[:3]
