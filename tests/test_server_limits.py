"""Nobody locked out: whole-message deadlines, a minimum content rate, dropping the longest-idle
connection at the limit, a per-address cap, and accept pausing when descriptors run out."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import time
from pathlib import Path

from helpers.client import TestClient, read_until_closed
from helpers.clock import FakeClock
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess
from test_server_failures import SERVER_ERROR, header, name_field

from backupproto.dialect import RequestCode
from backupproto.events import Registered, SendFile
from reference_server.limits import ConnectionTable


def test_table_drops_the_longest_idle_and_refuses_when_none_is_idle() -> None:
    clock = FakeClock()
    table: ConnectionTable[str] = ConnectionTable(3, 0, min_idle_to_drop=1.0, clock=clock)
    for name in ("a", "b", "c"):
        assert table.admit("10.0.0.1") == []
        table.add(name, "10.0.0.1")
    table.idle("b")
    clock.now += 0.5
    table.idle("a")
    assert table.admit("10.0.0.2") is None  # nobody idle for 1 s yet
    clock.now += 0.6
    assert table.admit("10.0.0.2") == ["b"]  # idle 1.1 s; "a" only 0.6 s
    table.remove("b")
    table.add("d", "10.0.0.2")
    table.busy("a")  # a request arrived: never dropped while busy
    clock.now += 10
    assert table.admit("10.0.0.3") is None
    assert table.summary() == (
        "connections: 1 dropped (longest idle), 2 refused at the connection limit; 3 open"
    )
    assert table.summary() is None


def test_table_per_address_cap() -> None:
    clock = FakeClock()
    table: ConnectionTable[str] = ConnectionTable(100, 2, min_idle_to_drop=0.0, clock=clock)
    for name in ("a1", "a2"):
        assert table.admit("10.0.0.1") == []
        table.add(name, "10.0.0.1")
    assert table.admit("10.0.0.2") == []
    assert table.admit("10.0.0.1") is None  # both of its connections are busy
    table.idle("a2")
    assert table.admit("10.0.0.1") == ["a2"]
    assert "1 over the per-address cap" in (table.summary() or "")


def register_request(name: bytes) -> bytes:
    return header(RequestCode.REGISTER, 255) + name_field(name)


def test_a_trickled_message_meets_its_deadline(tmp_path: Path) -> None:
    """One byte every 50 ms restarts no timer: the whole 1100 must arrive within --read-timeout."""
    server = ServerProcess.start(tmp_path / "data", "--read-timeout", "0.5")
    request = register_request(b"slowpoke")
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            sent = 0
            try:
                for byte in request:  # bounded: 278 bytes
                    sock.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.05)
            except OSError:
                pass  # the server closed the connection
            assert read_until_closed(sock) in (SERVER_ERROR, b"")
            assert sent < len(request)
        assert "message stalled" in server.log()
    finally:
        server.stop()


def test_file_content_below_the_minimum_rate_is_cut_off(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--read-timeout", "0.5", "--min-rate", "1000")
    try:
        with TestClient(server.address) as client:
            client.new_client("drip", rsa_key())
            client.send(SendFile(client.client_id, 64 * 1024, "drip.bin"))
            sent = 0
            try:
                for _ in range(640):  # 100 bytes every 0.2 s: 500 bytes/s, half the minimum
                    client.sock.sendall(bytes(100))
                    sent += 100
                    time.sleep(0.2)
            except OSError:
                pass
            assert read_until_closed(client.sock) in (SERVER_ERROR, b"")
            assert sent < 64 * 1024
        assert "message stalled" in server.log()
    finally:
        server.stop()


def test_a_large_upload_that_stops_is_cut_off_by_the_stall_timeout(tmp_path: Path) -> None:
    """1 MiB of content earns a deadline of days at --min-rate 1, but 0.5 s of silence still ends it."""
    server = ServerProcess.start(tmp_path / "data", "--read-timeout", "0.5", "--min-rate", "1")
    try:
        with TestClient(server.address) as client:
            client.new_client("stopper", rsa_key())
            client.send(SendFile(client.client_id, 4 << 20, "stops.bin"))
            client.sock.sendall(bytes(1 << 20))
            assert read_until_closed(client.sock) == SERVER_ERROR
        assert "message stalled" in server.log()
    finally:
        server.stop()


def test_idle_connections_make_room_for_a_fresh_backup(tmp_path: Path) -> None:
    server = ServerProcess.start(
        tmp_path / "data", "--max-connections", "20", "--min-idle-to-drop", "0", "--summary-interval", "0.2"
    )
    idle = [socket.create_connection(server.address, timeout=10) for _ in range(40)]
    try:
        with TestClient(server.address) as fresh:
            fresh.new_client("fresh", rsa_key())
            fresh.backup("f.txt", b"still served")
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    dropped = sum(int(n) for n in re.findall(r"(\d+) dropped \(longest idle\)", server.log()))
    assert dropped >= 21


def test_per_address_cap_refuses_when_all_are_busy(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--max-per-address", "2")
    busy = [socket.create_connection(server.address, timeout=10) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(register_request(b"x")[:5])
        with socket.create_connection(server.address, timeout=10) as third:
            assert read_until_closed(third) == b""  # closed at once, nothing read
        for sock in busy:
            sock.close()
    finally:
        server.stop()
    assert "1 over the per-address cap" in server.log()


def test_out_of_descriptors_pauses_accepting_instead_of_spinning(tmp_path: Path) -> None:
    """With 40 descriptors and 60 connections, accept() fails with EMFILE: the server pauses and
    counts; it writes a few summary lines (not megabytes) and serves again once descriptors free up."""
    code = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)); "
        "sys.argv = ['backup-server'] + sys.argv[1:]; "
        "runpy.run_module('reference_server', run_name='__main__')"
    )
    server = ServerProcess.start(
        tmp_path / "data", "--summary-interval", "0.2", command=[sys.executable, "-c", code]
    )
    try:
        address = (server.host, server.port)
        flood = [socket.create_connection(address, timeout=10) for _ in range(60)]
        # queued behind the flood: starved of descriptors, it gives up after 1 s
        with TestClient(address, timeout=1.0) as probe, contextlib.suppress(OSError):
            probe.register("starved")
        for sock in flood:
            sock.close()
        deadline = time.monotonic() + 20
        while True:  # bounded: served again once the flood is gone
            try:
                with TestClient(address, timeout=2) as client:
                    assert isinstance(client.register(f"after {time.monotonic_ns()}"), Registered)
                    break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        server.stop()
    log_text = server.log()
    assert "accept paused (EMFILE)" in log_text
    assert len(log_text.splitlines()) < 200
