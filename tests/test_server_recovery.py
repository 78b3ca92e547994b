"""Restart and crash recovery: what was stored stays known; a killed transfer leaves nothing partial."""

from __future__ import annotations

import time
from pathlib import Path

from helpers.client import TestClient
from helpers.db import file_rows, rows
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess

from backupproto.events import FileChunk, ReconnectApproved, RegistrationFailed, SendFile


def test_restart_keeps_clients_and_files(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data")
    key = rsa_key()
    try:
        with TestClient(server.address) as client:
            client_id = client.new_client("persistent", key)
            client.backup("kept.txt", b"across restarts")
        assert server.stop() == 0
        server = server.restart()
        assert file_rows(server.data_dir, client_id) == {"kept.txt": (f"{client_id.hex()}/kept.txt", 1)}
        with TestClient(server.address) as client:
            assert client.register("persistent") == RegistrationFailed()
            client.client_id = client_id
            assert isinstance(client.reconnect("persistent", key), ReconnectApproved)
            client.backup("more.txt", b"after the restart")
        assert "1 clients, 1 files" in server.log()
    finally:
        server.stop()


def test_kill_9_mid_transfer_then_restart(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data")
    key = rsa_key()
    data_dir = server.data_dir
    try:
        with TestClient(server.address) as client:
            client_id = client.new_client("crashy", key)
            client.backup("doc.bin", b"the verified version")
            client.send(SendFile(client_id, 8 << 20, "doc.bin"))  # a new version ...
            for _ in range(4):
                client.send(FileChunk(bytes(1 << 20)))  # ... half sent
            deadline = time.monotonic() + 10
            while not list((data_dir / ".tmp").iterdir()) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert list((data_dir / ".tmp").iterdir()), "the upload should be under way"
            server.kill()
        server = server.restart()
        assert list((data_dir / ".tmp").iterdir()) == []
        assert "removed the unfinished upload" in server.log()
        assert file_rows(data_dir, client_id) == {"doc.bin": (f"{client_id.hex()}/doc.bin", 1)}
        assert (data_dir / client_id.hex() / "doc.bin").read_bytes() == b"the verified version"
        assert sorted(p.name for p in (data_dir / client_id.hex()).iterdir()) == ["doc.bin"]
        with TestClient(server.address) as client:
            client.client_id = client_id
            assert isinstance(client.reconnect("crashy", key), ReconnectApproved)
            client.backup("doc.bin", b"the next version")
        assert rows(data_dir, "PRAGMA integrity_check") == [("ok",)]
    finally:
        server.stop()


def test_missing_file_is_marked_unverified_at_startup(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data")
    try:
        with TestClient(server.address) as client:
            client_id = client.new_client("lossy", rsa_key())
            client.backup("gone.txt", b"will vanish")
            client.backup("here.txt", b"stays")
        server.stop()
        (server.data_dir / client_id.hex() / "gone.txt").unlink()
        server = server.restart()
        assert file_rows(server.data_dir, client_id) == {
            "gone.txt": (f"{client_id.hex()}/gone.txt", 0),
            "here.txt": (f"{client_id.hex()}/here.txt", 1),
        }
        assert "gone.txt" in server.log() and "marked unverified" in server.log()
    finally:
        server.stop()
