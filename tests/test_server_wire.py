"""reference_server.wire.Wire: reads and drains with a deadline of their own (spec 2.4, 13.11),
over a real loopback connection whose peer is a plain socket this test drives."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from reference_server.wire import Wire

BOUND = 10.0
"""Seconds a wait that must end may take at most (a bound, never a timing assert)."""


async def connected_wire() -> tuple[Wire, socket.socket, asyncio.Server]:
    """A Wire on the server side of a loopback connection, and the peer's socket."""
    accepted: asyncio.Future[Wire] = asyncio.get_running_loop().create_future()

    def protocol() -> Wire:
        wire = Wire(64 * 1024)
        accepted.set_result(wire)
        return wire

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    peer = socket.create_connection(server.sockets[0].getsockname()[:2], timeout=BOUND)
    wire = await asyncio.wait_for(accepted, BOUND)
    return wire, peer, server


def test_a_read_with_nothing_arriving_times_out_and_a_later_read_gets_the_bytes() -> None:
    async def scenario() -> bytes:
        wire, peer, server = await connected_wire()
        try:
            with pytest.raises(TimeoutError):
                await wire.read(0.05)
            peer.sendall(b"\x01\x02\x03")
            return await wire.read(BOUND)
        finally:
            peer.close()
            wire.close()
            server.close()

    assert asyncio.run(scenario()) == b"\x01\x02\x03"


def test_a_drain_behind_a_peer_that_reads_nothing_times_out_and_ends_once_it_reads() -> None:
    """The transport's buffer is kept above its high-water mark: drain waits, and gives up at its
    deadline; when the peer reads everything, the same drain returns."""

    async def scenario() -> int:
        wire, peer, server = await connected_wire()
        assert wire.transport is not None
        wire.transport.set_write_buffer_limits(high=1)
        block = bytes(1 << 20)
        try:
            for _ in range(64):  # bounded: 64 MiB exceed any loopback socket buffer
                wire.write(block)
            with pytest.raises(TimeoutError):
                await wire.drain(0.05)
            received = 0

            def read_all() -> None:
                nonlocal received
                while received < 64 << 20 and (data := peer.recv(1 << 20)):
                    received += len(data)

            reader = threading.Thread(target=read_all)
            reader.start()
            await wire.drain(BOUND)
            await asyncio.get_running_loop().run_in_executor(None, reader.join, BOUND)
            return received
        finally:
            peer.close()
            wire.close()
            server.close()

    assert asyncio.run(scenario()) == 64 << 20
