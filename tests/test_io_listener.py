"""backupproto.io.listener: connections handled one thread each, numbered; close stops accepting."""

from __future__ import annotations

import queue
import socket

import pytest

from backupproto.io.channel import BYTES_ONLY, Channel, ConnectionLost
from backupproto.io.listener import ThreadedListener


def test_each_connection_gets_its_number_and_its_own_thread() -> None:
    seen: queue.Queue[tuple[int, bytes]] = queue.Queue()

    def echo(sock: socket.socket, number: int) -> None:
        with Channel(sock, BYTES_ONLY, timeout=10) as channel:
            data = channel.receive_all()
            seen.put((number, data))
            channel.send_bytes(data.upper())

    listener = ThreadedListener(("127.0.0.1", 0), echo).start()
    try:
        first = Channel.connect(listener.address, BYTES_ONLY, connect_timeout=10, timeout=10)
        second = Channel.connect(listener.address, BYTES_ONLY, connect_timeout=10, timeout=10)
        second.send_bytes(b"two")  # the first connection is still open: handlers run side by side
        second.shutdown_write()
        assert second.receive_all() == b"TWO"
        first.send_bytes(b"one")
        first.shutdown_write()
        assert first.receive_all() == b"ONE"
        first.close()
        second.close()
    finally:
        listener.close(timeout=10)
    assert sorted([seen.get(timeout=10), seen.get(timeout=10)]) == [(1, b"one"), (2, b"two")]
    assert listener.connections == 2


def test_close_stops_accepting() -> None:
    listener = ThreadedListener(("127.0.0.1", 0), lambda sock, number: sock.close()).start()
    address = listener.address
    listener.close()
    with pytest.raises(ConnectionLost):
        Channel.connect(address, BYTES_ONLY, connect_timeout=5, timeout=5)
