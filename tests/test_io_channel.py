"""backupproto.io.channel: the one blocking socket<->engine loop, over real TCP on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from backupproto.engine import ClientConnection, ServerConnection
from backupproto.events import PAUSED, ConnectionClosed, Register, Registered
from backupproto.io.channel import (
    BYTES_ONLY,
    ByteChannel,
    Channel,
    ChannelTimeout,
    ConnectionLost,
    EngineChannel,
    StreamEnded,
)
from backupproto.sessions import Direction, End, Splitter, Start

# spec/protocol.md 3: client_id 16 zero bytes, version 3, code 1100 (0x044c LE), payload_size 255,
# then the name "bob" padded with NULs to 255 bytes.
REGISTER_BOB = bytes(16) + b"\x03\x4c\x04\xff\x00\x00\x00" + b"bob".ljust(255, b"\x00")
# 2100 REGISTERED: version 3, code 2100 (0x0834 LE), payload_size 16, the client id.
REGISTERED = b"\x03\x34\x08\x10\x00\x00\x00" + bytes(range(16))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client side, server side) of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2], timeout=10)
        server, _ = listener.accept()
    with client, server:
        yield client, server


def test_engine_channels_exchange_events(pair: tuple[socket.socket, socket.socket]) -> None:
    client = EngineChannel(pair[0], ClientConnection(), timeout=10)
    server = EngineChannel(pair[1], ServerConnection(), timeout=10)
    client.send(Register(bytes(16), "bob"))
    request = server.next_event()
    assert isinstance(request, Register) and request.name == "bob"
    server.send(Registered(bytes(range(16))))
    response = client.next_event()
    assert isinstance(response, Registered) and response.client_id == bytes(range(16))


def test_bytes_arriving_one_at_a_time_make_one_event(pair: tuple[socket.socket, socket.socket]) -> None:
    server = EngineChannel(pair[1], ServerConnection(), timeout=10)
    pair[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in REGISTER_BOB[:30]:
        pair[0].sendall(bytes([byte]))
    pair[0].sendall(REGISTER_BOB[30:])
    event = server.next_event()
    assert isinstance(event, Register) and event.name == "bob"


def test_a_silent_peer_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    client = EngineChannel(pair[0], ClientConnection(), timeout=10)
    client.send(Register(bytes(16), "bob"))
    with pytest.raises(ChannelTimeout) as caught:
        client.next_event(timeout=0.05)
    assert caught.value.seconds == 0.05
    assert isinstance(caught.value, TimeoutError)


def test_a_partial_message_then_silence_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    client = EngineChannel(pair[0], ClientConnection(), timeout=0.05)
    client.send(Register(bytes(16), "bob"))
    pair[1].sendall(REGISTERED[:10])
    with pytest.raises(ChannelTimeout):
        client.next_event()


def test_end_of_stream_reaches_the_engine(pair: tuple[socket.socket, socket.socket]) -> None:
    server = EngineChannel(pair[1], ServerConnection(), timeout=10)
    pair[0].shutdown(socket.SHUT_WR)
    assert isinstance(server.next_event(), ConnectionClosed)
    assert server.peer_closed


def test_splitter_channel_yields_pieces_then_the_end(pair: tuple[socket.socket, socket.socket]) -> None:
    """The session splitter is a receiver too: a whole message, then end of stream."""
    channel = Channel(pair[1], Splitter(Direction.REQUEST), timeout=10)
    pair[0].sendall(REGISTER_BOB + b"\x99" * 5)  # a message, then 5 bytes of an unfinished header
    pair[0].shutdown(socket.SHUT_WR)
    start = channel.next_event()
    assert isinstance(start, Start) and start.decoded is not None and start.decoded["code"] == 1100
    assert isinstance(channel.next_event(), End)
    truncated = channel.next_event()
    assert isinstance(truncated, Start) and truncated.raw == b"\x99" * 5
    end = channel.next_event()
    assert isinstance(end, End) and end.error is not None and end.error["kind"] == "truncated"
    with pytest.raises(ConnectionLost, match="the stream ended"):
        channel.next_event()


def test_half_close_lets_the_peer_answer(pair: tuple[socket.socket, socket.socket]) -> None:
    client = Channel(pair[0], BYTES_ONLY, timeout=10)
    server = Channel(pair[1], BYTES_ONLY, timeout=10)
    client.send_bytes(b"question")
    client.shutdown_write()
    assert server.receive_all() == b"question"
    server.send_bytes(b"answer")
    server.shutdown_write()
    assert client.receive_all() == b"answer"


def test_receive_all_ends_at_a_reset(pair: tuple[socket.socket, socket.socket]) -> None:
    client = Channel(pair[0], BYTES_ONLY, timeout=10)
    pair[1].sendall(b"last words")
    pair[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair[1].close()  # RST
    assert client.receive_all() in (b"last words", b"")


def test_receive_all_times_out_with_what_arrived(pair: tuple[socket.socket, socket.socket]) -> None:
    client = Channel(pair[0], BYTES_ONLY, timeout=10)
    pair[1].sendall(b"partial")
    with pytest.raises(ChannelTimeout) as caught:
        client.receive_all(timeout=0.2)
    assert caught.value.received == b"partial"


def test_connect_refused_is_connection_lost() -> None:
    with socket.socket() as bound:  # bound, not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        address = bound.getsockname()[:2]
        with pytest.raises(ConnectionLost) as caught:
            Channel.connect(address, BYTES_ONLY, connect_timeout=5, timeout=5)
    assert f"cannot connect to 127.0.0.1:{address[1]}" in str(caught.value)
    assert caught.value.reason


def test_sending_to_a_closed_peer_is_connection_lost(pair: tuple[socket.socket, socket.socket]) -> None:
    client = Channel(pair[0], BYTES_ONLY, timeout=10)
    pair[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair[1].close()
    with pytest.raises(ConnectionLost):
        for _ in range(100):  # the reset arrives after at most a few writes
            client.send_bytes(b"x" * 65536)


def test_byte_channel_reads_by_count_and_keeps_the_rest(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = ByteChannel.around(pair[0], timeout=10)
    pair[1].sendall(b"abcdefgh")
    assert channel.receive_exact(3) == b"abc"
    assert channel.receive_exact(5) == b"defgh"


def test_byte_channel_silence_keeps_what_arrived(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = ByteChannel.around(pair[0], timeout=10)
    pair[1].sendall(b"abc")
    with pytest.raises(ChannelTimeout) as caught:
        channel.receive_exact(5, timeout=0.05)
    assert caught.value.received == b"abc"
    pair[1].sendall(b"de")
    assert channel.receive_exact(5) == b"abcde"


def test_byte_channel_end_of_stream_keeps_what_arrived(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = ByteChannel.around(pair[0], timeout=10)
    pair[1].sendall(b"ab")
    pair[1].shutdown(socket.SHUT_WR)
    with pytest.raises(StreamEnded):
        channel.receive_exact(5)
    assert channel.peer_closed and channel.receiver.ended
    assert channel.receiver.take() == b"ab"


def test_byte_channel_reset_ends_the_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = ByteChannel.around(pair[0], timeout=10)
    pair[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair[1].close()  # RST
    with pytest.raises(ConnectionLost) as caught:
        channel.receive_exact(1)
    assert not isinstance(caught.value, StreamEnded) and isinstance(caught.value.error, ConnectionResetError)
    assert channel.peer_closed
    assert channel.receive_up_to(10, timeout=0.05) == b""


def test_byte_channel_receive_up_to_takes_what_arrives(pair: tuple[socket.socket, socket.socket]) -> None:
    channel = ByteChannel.around(pair[0], timeout=10)
    pair[1].sendall(b"abcdef")
    assert channel.receive_exact(1) == b"a"
    assert channel.receive_up_to(3, timeout=5) == b"bcd"  # at most 3; the rest stays buffered
    pair[1].shutdown(socket.SHUT_WR)
    assert channel.receive_up_to(100, timeout=5) == b"ef"  # the close ends the wait
    assert channel.peer_closed


def test_receive_more_reads_on_while_the_engine_waits_for_our_answer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """PAUSED returns without reading; `receive_more` feeds what arrives meanwhile, then the end."""
    server = EngineChannel(pair[1], ServerConnection(), timeout=10)
    pair[0].sendall(REGISTER_BOB)
    assert isinstance(server.next_event(), Register)
    assert server.next_event() is PAUSED
    pair[0].sendall(REGISTER_BOB[:5])
    pair[0].close()
    assert server.receive_more() is True
    assert not server.engine.at_message_boundary  # the 5 bytes reached the engine
    while server.receive_more():  # the rest of the bytes, if they came in two reads; then the end
        pass
    assert server.peer_closed and server.receive_more() is False
