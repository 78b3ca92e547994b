"""Storage at rest: owner-only modes whatever the umask, a full disk named as such, startup repair."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.client import TestClient
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess

from reference_server.errors import StorageError
from reference_server.store import Store


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Umask 022, as on most systems: everything created would be world-readable by default."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
def test_data_dir_database_and_files_are_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess.start(data_dir)
    try:
        with TestClient(server.address) as client:
            client_id = client.new_client("private", rsa_key())
            client.backup("secret.txt", b"one")
            client.backup("secret.txt", b"two")  # keeps "one" under .versions
        stored = [data_dir / "server.db", data_dir / "server.db-wal", data_dir / "server.db-shm"]
        stored += [data_dir / client_id.hex() / "secret.txt"]
        stored += list((data_dir / ".versions" / client_id.hex()).iterdir())
        folders = [data_dir, data_dir / client_id.hex(), data_dir / ".tmp", data_dir / ".versions"]
        assert {str(path): mode(path) for path in stored} == {str(path): 0o600 for path in stored}
        assert {str(path): mode(path) for path in folders} == {str(path): 0o700 for path in folders}
    finally:
        server.stop()


@pytest.mark.usefixtures("loose_umask")
def test_existing_world_readable_storage_is_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "server.db").touch(mode=0o644)
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "server.db", 0o644)
    server = ServerProcess.start(data_dir)
    try:
        assert (mode(data_dir), mode(data_dir / "server.db")) == (0o700, 0o600)
    finally:
        server.stop()


def test_full_database_is_reported_as_full(tmp_path: Path) -> None:
    """SQLite reports a full disk as SQLITE_FULL; the message must say so, not 'cannot rollback'."""
    store = Store(tmp_path / "server.db")
    try:
        store.register("first")
        (pages,) = store._db.execute("PRAGMA page_count").fetchone()
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageError) as caught:
            for number in range(10_000):  # bounded: a page fills after a few dozen rows
                store.register(f"client {number} " + "x" * 200)
        assert "database or disk is full" in str(caught.value)
        assert "rollback" not in str(caught.value)
    finally:
        store.close()


def test_a_folder_inside_tmp_does_not_stop_startup(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stray = data_dir / ".tmp" / "stray-folder" / "inner"
    stray.mkdir(parents=True)
    (stray / "leftover").write_bytes(b"x")
    server = ServerProcess.start(data_dir)
    try:
        assert list((data_dir / ".tmp").iterdir()) == []
        assert "removed the unfinished upload" in server.log()
    finally:
        server.stop()


def test_concurrent_steps_share_one_commit(tmp_path: Path) -> None:
    """Group commit: registrations written while a commit is under way share the next COMMIT, and
    none returns before its row is committed (visible to another connection)."""
    store = Store(tmp_path / "server.db")
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    done: list[str] = []
    try:
        with store._commit_lock:  # a commit under way: the steps below queue behind it
            threads = [
                threading.Thread(target=lambda n=n: done.append(str(store.register(f"c{n}"))))
                for n in range(10)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(store._names) < 10 and time.monotonic() < deadline:  # bounded wait: all written
                time.sleep(0.01)
            assert done == []  # written, not yet durable: nobody has returned
        for thread in threads:
            thread.join(10)
        assert len(done) == 10
        assert commits == ["COMMIT"]
        assert rows_of(tmp_path / "server.db", "SELECT COUNT(*) FROM clients") == [(10,)]
    finally:
        store.close()


def rows_of(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return list(db.execute(sql))
