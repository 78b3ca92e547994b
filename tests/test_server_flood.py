"""Floods on loopback (run with --run-load): 10,000 idle connections held while fresh backups
complete; 250 trickling connections never block a fresh backup. Times are printed, not asserted."""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers.client import TestClient
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess

from backupproto.dialect import RequestCode
from backupproto.schemas import V3_SCHEMAS

IDLE_CONNECTIONS = 10_000
FRESH_BACKUPS = 5
TRICKLERS = 250
TRICKLE_SECONDS = 60.0
TRICKLE_GAP = 20.0


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fresh_backup(server: ServerProcess, name: str) -> float:
    """Register, key, back up 1 KB, confirm: the seconds it took."""
    started = time.perf_counter()
    with TestClient(server.address, timeout=30) as client:
        client.new_client(name, rsa_key())
        client.backup("fresh.bin", bytes(1000))
    return time.perf_counter() - started


@pytest.mark.load
def test_10000_idle_connections_held_while_fresh_backups_complete(tmp_path: Path) -> None:
    raise_file_limit(IDLE_CONNECTIONS + 1000)
    server = ServerProcess.start(
        tmp_path / "data",
        "--max-connections",
        str(IDLE_CONNECTIONS + 100),
        "--max-per-address",
        "0",
        "--idle-timeout",
        "600",
    )
    idle: list[socket.socket] = []
    try:
        rss_before = rss_kib(server.process.pid)
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(server.address, timeout=30))
        times = [fresh_backup(server, f"fresh {number}") for number in range(FRESH_BACKUPS)]
        rss_held = rss_kib(server.process.pid)
        still_open = 0
        for sock in idle:  # none was closed by the server: no EOF waiting
            sock.setblocking(False)
            try:
                still_open += sock.recv(1) != b""
            except BlockingIOError:
                still_open += 1
        print(
            f"\n{IDLE_CONNECTIONS} idle connections held: fresh backups took "
            + ", ".join(f"{seconds:.3f}" for seconds in times)
            + f" s; server RSS {rss_before / 1024:.1f} MiB before, {rss_held / 1024:.1f} MiB with them held "
            f"({(rss_held - rss_before) / IDLE_CONNECTIONS:.1f} KiB per idle connection)"
        )
        assert still_open == IDLE_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    assert "Traceback" not in server.log()


class Tricklers:
    """Connections that each send one byte of a 1100 every `TRICKLE_GAP` seconds, and reconnect
    when the server closes them (a slowloris), on one thread with a selector."""

    def __init__(self, address: tuple[str, int], count: int) -> None:
        self.address = address
        self.count = count
        self.request = V3_SCHEMAS.build_request_header(bytes(16), RequestCode.REGISTER, 255, 3) + bytes(255)
        self.stop = threading.Event()
        self.closed_by_server = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        progress: dict[socket.socket, tuple[int, float]] = {}

        def connect() -> None:
            try:
                sock = socket.create_connection(self.address, timeout=10)
            except OSError:
                return
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            progress[sock] = (0, 0.0)

        for _ in range(self.count):
            connect()
        while not self.stop.is_set():
            now = time.monotonic()
            for sock, (sent, last) in list(progress.items()):
                if now - last >= TRICKLE_GAP and sent < len(self.request):
                    try:
                        sock.send(self.request[sent : sent + 1])
                        progress[sock] = (sent + 1, now)
                    except OSError:
                        pass
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # closed by the server (2107 then close, or refused): come back
                    self.closed_by_server += 1
                    selector.unregister(sock)
                    del progress[sock]
                    sock.close()
                    connect()
        for sock in progress:
            sock.close()
        selector.close()


@pytest.mark.load
def test_250_trickling_connections_never_block_a_fresh_backup(tmp_path: Path) -> None:
    raise_file_limit(TRICKLERS + 1000)
    server = ServerProcess.start(tmp_path / "data", "--max-per-address", "0")
    tricklers = Tricklers(server.address, TRICKLERS)
    tricklers.thread.start()
    times: list[float] = []
    try:
        deadline = time.monotonic() + TRICKLE_SECONDS
        number = 0
        while time.monotonic() < deadline:  # bounded by TRICKLE_SECONDS
            times.append(fresh_backup(server, f"amid tricklers {number}"))
            number += 1
            time.sleep(2.0)
    finally:
        tricklers.stop.set()
        tricklers.thread.join(30)
        server.stop()
    print(
        f"\n{TRICKLERS} tricklers for {TRICKLE_SECONDS:g} s: {len(times)} fresh backups, slowest "
        f"{max(times):.3f} s; tricklers closed by the server {tricklers.closed_by_server} times"
    )
    assert len(times) >= 2
