"""Load: 100 concurrent clients each back up several files; zero failures allowed (run with --run-load)."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers.client import TestClient
from helpers.db import rows
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess

CLIENTS = 100
FILES_PER_CLIENT = 5
FILE_SIZES = [0, 1000, 64 * 1024, 256 * 1024 + 3, 17]


@pytest.mark.load
def test_100_concurrent_clients(reference_server: ServerProcess) -> None:
    key = rsa_key()
    start_line = threading.Barrier(CLIENTS, timeout=60)

    def session(index: int) -> int:
        payloads = [os.urandom(size) for size in FILE_SIZES[:FILES_PER_CLIENT]]
        start_line.wait()
        with TestClient(reference_server.address, timeout=60) as client:
            client.new_client(f"load client {index}", key)
            for number, data in enumerate(payloads):
                client.backup(f"file {number}.bin", data)
                assert (
                    reference_server.data_dir / client.client_id.hex() / f"file {number}.bin"
                ).read_bytes() == data
        return sum(len(data) for data in payloads)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        futures = [pool.submit(session, index) for index in range(CLIENTS)]
        failures = [future.exception() for future in futures if future.exception() is not None]
        volume = sum(future.result() for future in futures if future.exception() is None)
    elapsed = time.perf_counter() - started
    print(
        f"\n{CLIENTS} clients x {FILES_PER_CLIENT} files: {elapsed:.2f} s, "
        f"{CLIENTS / elapsed:.1f} sessions/s, {volume / elapsed / 1e6:.1f} MB/s, {len(failures)} failed"
    )
    assert failures == []
    verified = rows(reference_server.data_dir, "SELECT COUNT(*) FROM files WHERE Verified = 1")
    assert verified == [(CLIENTS * FILES_PER_CLIENT,)]
    assert "Traceback" not in reference_server.log()
