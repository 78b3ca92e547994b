"""Small sessions per second at 1/20/100 concurrent clients, and the cost of idle connections.

Run: python benchmarks/bench_sessions.py [--clients 1,20,100] [--seconds 5] [--repeat 2]
         [--baseline PATH] [--floor] [--idle 2000]

A small session: connect, 1100 (a fresh name), 1101, a 1 KB file (1103), 1104, close. Each
of N client threads runs sessions back to back for --seconds; the figure is sessions/s.
With --baseline PATH (a checkout of another version, e.g. `git archive main | tar -x -C
PATH`), that version's server is measured in the same run, alternating with this one, and
the ratio is printed. --floor: `floor_server.py` too, a server that does the protocol's work
but stores nothing; its rate is the most any server design reaches on this machine with
these clients. --idle N: server RSS before and with N idle connections held.
Clients share one pre-made RSA key (the client's key generation is not the server's cost).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proc_stats import ROOT, cpu_seconds, start_floor_server, start_server, status_kib

from backupproto.cksum import Cksum
from backupproto.crypto import (
    CbcEncryptor,
    RsaKey,
    encrypted_size,
    export_private_key,
    generate_private_key,
    import_private_key,
    public_key_der,
    unwrap_aes_key,
)
from backupproto.engine import ClientConnection
from backupproto.events import (
    Acknowledged,
    AesKey,
    CrcOk,
    FileChunk,
    FileEnd,
    FileReceived,
    Register,
    Registered,
    Response,
    SendFile,
    SendPublicKey,
)
from backupproto.io.channel import EngineChannel
from backupproto.io.server_process import ServerProcess

FILE = os.urandom(1000)
FILE_CRC = Cksum(FILE).value


def exchange(channel: EngineChannel[ClientConnection], event: object) -> Response:
    """Send a request (or a file's end) and wait for its response, through the one channel."""
    channel.send(event)
    answer = channel.next_event()
    assert isinstance(answer, Response), answer
    return answer


def one_session(address: tuple[str, int], name: str, key: RsaKey, der: bytes) -> None:
    channel = EngineChannel.connect(address, ClientConnection(), connect_timeout=60, timeout=60)
    try:
        registered = exchange(channel, Register(bytes(16), name))
        assert isinstance(registered, Registered), registered
        client_id = registered.client_id
        keyed = exchange(channel, SendPublicKey(client_id, name, der))
        assert isinstance(keyed, AesKey), keyed
        encryptor = CbcEncryptor(unwrap_aes_key(key, keyed.encrypted_aes_key))
        content = encryptor.update(FILE) + encryptor.finalize()
        channel.send(SendFile(client_id, encrypted_size(len(FILE)), "small.bin"))
        channel.send(FileChunk(content))
        received = exchange(channel, FileEnd())
        assert isinstance(received, FileReceived) and received.cksum == FILE_CRC, received
        assert isinstance(exchange(channel, CrcOk(client_id, "small.bin")), Acknowledged)
    finally:
        channel.close()


def sessions_per_second(
    address: tuple[str, int], clients: int, seconds: float, key: RsaKey, tag: str
) -> float:
    der = public_key_der(key)
    counts = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                one_session(address, f"{tag}-{index}-{counts[index]}", key, der)
                counts[index] += 1
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{len(errors)} client errors, first: {errors[0]!r}")
    return sum(counts) / elapsed


def load_average() -> str:
    """The machine's 1/5/15-minute load averages (other processes share the cores)."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def idle_cost(checkout: Path, root: Path, count: int, *extra: str) -> tuple[float, float]:
    """(server RSS MiB without, KiB per idle connection with `count` held)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 100, hard), hard))
    server = start_server(root / "idle", "--max-connections", str(count + 10), *extra, checkout=checkout)
    process, address = server.process, (server.host, server.port)
    try:
        time.sleep(0.5)
        before = status_kib(process.pid, "VmRSS")
        held = [socket.create_connection(address, timeout=30) for _ in range(count)]
        time.sleep(1.0)
        after = status_kib(process.pid, "VmRSS")
        for sock in held:
            sock.close()
    finally:
        server.stop(timeout=60)
    return before / 1024, (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,20,100", help="concurrency levels (default 1,20,100)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per level; best (default 2)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another version to compare with")
    parser.add_argument(
        "--floor", action="store_true", help="also measure floor_server.py (the protocol without storage)"
    )
    parser.add_argument(
        "--idle", type=int, default=2000, help="idle connections for the RSS figure (0: skip)"
    )
    options = parser.parse_args()
    key = import_private_key(export_private_key(generate_private_key()))
    checkouts = [("this", ROOT)] + ([("baseline", options.baseline.resolve())] if options.baseline else [])
    versions: list[tuple[str, Callable[[Path], ServerProcess]]] = [
        (tag, functools.partial(start_server, checkout=checkout)) for tag, checkout in checkouts
    ]
    if options.floor:
        versions.append(("floor", start_floor_server))
    levels = [int(text) for text in options.clients.split(",")]
    print(
        f"{os.cpu_count()} CPUs; {options.seconds:g} s per measurement, best of {options.repeat}; "
        f"load average {load_average()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as temp:
        root = Path(temp)
        for clients in levels:
            best: dict[str, list[float]] = {tag: [] for tag, _ in versions}
            cpu: dict[str, list[float]] = {tag: [] for tag, _ in versions}
            client_cpu: list[float] = []
            for round_number in range(options.repeat):
                for tag, start in versions:  # alternate, so that load from others hits all alike
                    server = start(root / f"{tag}-{clients}-{round_number}")
                    process, address = server.process, (server.host, server.port)
                    try:
                        before = cpu_seconds(process.pid)
                        own_before = cpu_seconds(os.getpid())
                        rate = sessions_per_second(
                            address, clients, options.seconds, key, f"{tag}{round_number}"
                        )
                        best[tag].append(rate)
                        sessions = rate * options.seconds
                        cpu[tag].append((cpu_seconds(process.pid) - before) / sessions * 1000)
                        client_cpu.append((cpu_seconds(os.getpid()) - own_before) / sessions * 1000)
                    finally:
                        server.stop(timeout=60)
            line = f"{clients:4d} clients: " + "; ".join(
                f"{tag} {max(rates):7.1f} sessions/s (runs {', '.join(f'{rate:.1f}' for rate in rates)}; "
                f"server CPU {min(cpu[tag]):.1f} ms/session)"
                for tag, rates in best.items()
            )
            line += f"; clients' CPU {min(client_cpu):.1f} ms/session"
            if options.baseline:
                line += (
                    f"; ratio this/baseline {max(best['this']) / max(best['baseline']):.2f}x sessions/s, "
                    f"{min(cpu['baseline']) / min(cpu['this']):.2f}x less server CPU per session"
                )
            if options.floor:
                line += f"; this at {max(best['this']) / max(best['floor']):.0%} of the floor"
                if options.baseline:
                    line += f", the floor {max(best['floor']) / max(best['baseline']):.2f}x the baseline"
            print(f"{line}; load average {load_average()}", flush=True)
        if options.idle:
            for tag, checkout in checkouts:
                extra = ("--max-per-address", "0") if tag == "this" else ()
                base, per = idle_cost(checkout, root / tag, options.idle, *extra)
                print(
                    f"idle cost ({tag}): server RSS {base:.1f} MiB, +{per:.1f} KiB per idle connection "
                    f"({options.idle} held)"
                )


if __name__ == "__main__":
    main()
