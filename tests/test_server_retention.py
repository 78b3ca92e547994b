"""A verified backup is never destroyed by an upload; failed decryptions lock an id out (spec 9.2, 13.3)."""

from __future__ import annotations

import errno
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES
from helpers.client import TestClient, read_until_closed
from helpers.clock import FakeClock
from helpers.db import file_rows, rows
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess
from test_server_failures import SERVER_ERROR

import reference_server.files
from backupproto.events import (
    ConnectionClosed,
    FileChunk,
    FileReceived,
    ReconnectApproved,
    SendFile,
    ServerError,
)
from reference_server import Server
from reference_server.files import DIRECT_WRITE, FileStore
from reference_server.lockout import DecryptionFailures

BOUND = 10.0
"""Seconds a test waits at most for the server's clean-up (a bound, never a timing assert)."""


def kept_versions(data_dir: Path, client_id: bytes, file_name: str) -> list[bytes]:
    """The bytes of the older versions kept for a file, oldest first."""
    found = rows(
        data_dir,
        "SELECT PathName FROM versions WHERE ID = ? AND FileName = ? ORDER BY StoredAt, rowid",
        client_id,
        file_name,
    )
    return [(data_dir / path_name).read_bytes() for (path_name,) in found]


def settled_entries(folder: Path, count: int) -> list[Path]:
    """The entries of `folder` once there are `count` of them (or when BOUND passes): an expired
    version's file is removed after the 2104 has left."""
    deadline = time.monotonic() + BOUND
    while len(entries := list(folder.iterdir())) != count and time.monotonic() < deadline:  # bounded
        time.sleep(0.01)
    return entries


def stored(data_dir: Path, client_id: bytes, file_name: str) -> tuple[bytes, int]:
    path_name, verified = file_rows(data_dir, client_id)[file_name]
    return (data_dir / path_name).read_bytes(), verified


def test_a_hijacked_upload_confirmed_by_1104_keeps_the_verified_version(tmp_path: Path) -> None:
    """Whoever knows name and id uploads garbage and confirms it: the real backup stays on disk."""
    server = ServerProcess.start(tmp_path / "data")
    key = rsa_key()
    try:
        with TestClient(server.address) as owner:
            client_id = owner.new_client("victim", key)
            owner.backup("thesis.txt", b"the real thesis")
        with TestClient(server.address) as intruder:
            intruder.client_id = client_id
            assert isinstance(intruder.reconnect("victim", key), ReconnectApproved)
            intruder.backup("thesis.txt", b"garbage with valid padding")
        assert stored(server.data_dir, client_id, "thesis.txt") == (b"garbage with valid padding", 1)
        assert kept_versions(server.data_dir, client_id, "thesis.txt") == [b"the real thesis"]
    finally:
        server.stop()


def test_previous_verified_version_kept_until_a_newer_one_is_verified(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--keep-versions", "0")
    try:
        with TestClient(server.address) as client:
            client_id = client.new_client("careful", rsa_key())
            client.backup("a.txt", b"one")
            assert isinstance(client.send_file("a.txt", b"two, unconfirmed"), FileReceived)
            client.crc_retry("a.txt")
            assert isinstance(client.send_file("a.txt", b"three, unconfirmed"), FileReceived)
            assert kept_versions(server.data_dir, client_id, "a.txt") == [b"one"]
            client.crc_ok("a.txt")
            assert stored(server.data_dir, client_id, "a.txt") == (b"three, unconfirmed", 1)
            assert kept_versions(server.data_dir, client_id, "a.txt") == []
        assert settled_entries(server.data_dir / ".versions" / client_id.hex(), 0) == []
    finally:
        server.stop()


def test_retention_keeps_the_newest_older_versions(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--keep-versions", "2")
    try:
        with TestClient(server.address) as client:
            client_id = client.new_client("historian", rsa_key())
            for version in (b"v1", b"v2", b"v3", b"v4"):
                client.backup("log.txt", version)
        assert kept_versions(server.data_dir, client_id, "log.txt") == [b"v2", b"v3"]
        assert len(settled_entries(server.data_dir / ".versions" / client_id.hex(), 2)) == 2
        server.stop()
        server = server.restart()
        assert kept_versions(server.data_dir, client_id, "log.txt") == [b"v2", b"v3"]
    finally:
        server.stop()


def test_the_2104_does_not_wait_for_the_expired_version_to_leave_the_disk(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a file can take long (a fifth of a second per GiB on ext4 with discard): the 1104
    that expires a version is answered first. The removal here waits (bounded) until the client
    has its 2104; were the answer sent only after the removal, the two would wait for each
    other until the bound passed."""
    answered = threading.Event()
    released_by_answer: list[bool] = []
    real_remove = FileStore._remove_version

    def slow_remove(files: FileStore, path_name: str) -> None:
        released_by_answer.append(answered.wait(BOUND))
        real_remove(files, path_name)

    monkeypatch.setattr(FileStore, "_remove_version", slow_remove)
    server = in_process_server  # keeps one older version
    with TestClient(server.address, timeout=3 * BOUND) as client:
        client_id = client.new_client("hasty", rsa_key())
        client.backup("big.bin", b"v1")
        client.backup("big.bin", b"v2")
        client.backup("big.bin", b"v3")  # its 1104 expires v1
        answered.set()
    assert len(settled_entries(server.data_dir / ".versions" / client_id.hex(), 1)) == 1  # v1 is gone
    assert released_by_answer == [True]
    assert stored(server.data_dir, client_id, "big.bin") == (b"v3", 1)
    assert kept_versions(server.data_dir, client_id, "big.bin") == [b"v2"]


def refused(code: int) -> Any:
    """A stand-in for an os call that fails with `code`."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(code, "refused by the test")

    return fail


@pytest.mark.parametrize("size", [1000, 2 * DIRECT_WRITE], ids=["small file", "large file"])
def test_a_refused_rename_puts_the_row_back(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Spec 9.2 rule 2 commits Verified=0 before the rename. When the rename then fails, the final
    path still holds the verified bytes, so the row goes back to saying so (rule 1: a failed 1103
    leaves the previous file untouched), and the copy kept for the upload goes."""
    server = in_process_server
    with TestClient(server.address) as client:
        client_id = client.new_client("unlucky", rsa_key())
        client.backup("a.txt", b"verified")
        monkeypatch.setattr(reference_server.files.os, "replace", refused(errno.EACCES))
        answer = client.send_file("a.txt", random.Random(size).randbytes(size))
        monkeypatch.undo()
        assert answer in (ServerError(), ConnectionClosed())
    assert stored(server.data_dir, client_id, "a.txt") == (b"verified", 1)
    assert kept_versions(server.data_dir, client_id, "a.txt") == []
    assert settled_entries(server.data_dir / ".versions" / client_id.hex(), 0) == []
    assert list((server.data_dir / ".tmp").iterdir()) == []


def test_a_small_file_that_cannot_be_written_changes_no_row(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file is written after its row is committed: a full disk then puts the row back
    (a verified file stays verified) or takes it away (a new file leaves no row)."""
    server = in_process_server
    with TestClient(server.address) as client:
        client_id = client.new_client("full disk", rsa_key())
        client.backup("old.txt", b"verified")
        for name in ("old.txt", "new.txt"):
            monkeypatch.setattr(reference_server.files.os, "write", refused(errno.ENOSPC))
            answer = client.send_file(name, b"does not fit")
            monkeypatch.undo()
            assert answer in (ServerError(), ConnectionClosed())
            client.close()
            client = TestClient(server.address)
            client.client_id = client_id
            assert isinstance(client.reconnect("full disk", rsa_key()), ReconnectApproved)
    assert file_rows(server.data_dir, client_id) == {"old.txt": (f"{client_id.hex()}/old.txt", 1)}
    assert (server.data_dir / client_id.hex() / "old.txt").read_bytes() == b"verified"
    assert not (server.data_dir / client_id.hex() / "new.txt").exists()
    kept = server.data_dir / ".versions" / client_id.hex()
    assert not kept.exists() or settled_entries(kept, 0) == []
    assert list((server.data_dir / ".tmp").iterdir()) == []


def test_a_failure_after_the_rename_leaves_the_new_bytes_unverified(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the rename has happened the final path holds the new bytes: the row must not go back
    to Verified=1 (that would claim the old bytes' verdict for the new ones), and the verified
    bytes live on as the kept version."""
    server = in_process_server
    new = b"renamed, folder not flushed"
    real_fsync_dir = reference_server.files._fsync_dir

    def fsync_dir_failing_after_the_rename(folder: Path) -> None:
        if (folder / "a.txt").is_file() and (folder / "a.txt").read_bytes() == new:
            raise OSError(errno.EIO, "refused by the test")
        real_fsync_dir(folder)

    with TestClient(server.address) as client:
        client_id = client.new_client("half done", rsa_key())
        client.backup("a.txt", b"verified")
        monkeypatch.setattr(reference_server.files, "_fsync_dir", fsync_dir_failing_after_the_rename)
        answer = client.send_file("a.txt", new)
        monkeypatch.undo()
        assert answer in (ServerError(), ConnectionClosed())
    assert stored(server.data_dir, client_id, "a.txt") == (new, 0)
    assert kept_versions(server.data_dir, client_id, "a.txt") == [b"verified"]


def test_startup_removes_kept_versions_without_a_row(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data")
    server.stop()
    orphan = server.data_dir / ".versions" / ("ab" * 16) / "0123"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a crash between link and commit")
    server = server.restart()
    try:
        assert not orphan.exists()
        assert "an older version no row refers to" in server.log()
    finally:
        server.stop()


def send_bad_padding(client: TestClient, file_name: str) -> bytes:
    """One 1103 whose single block decrypts to no valid PKCS#7 padding; what the server answers."""
    assert client.aes_key is not None
    bad = AES.new(client.aes_key, AES.MODE_CBC, iv=bytes(16)).encrypt(b"no padding here\x00")
    client.send(SendFile(client.client_id, 16, file_name))
    client.send(FileChunk(bad))
    return read_until_closed(client.sock)


def test_failed_decryptions_lock_the_client_id_out(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data", "--max-decrypt-failures", "2")
    key = rsa_key()
    try:
        with TestClient(server.address) as owner:
            client_id = owner.new_client("target", key)
            owner.backup("doc", b"precious")
        standing = TestClient(server.address)  # keyed before the lockout starts
        standing.client_id = client_id
        assert isinstance(standing.reconnect("target", key), ReconnectApproved)
        for _ in range(2):
            with TestClient(server.address) as intruder:
                intruder.client_id = client_id
                assert isinstance(intruder.reconnect("target", key), ReconnectApproved)
                assert send_bad_padding(intruder, "doc") == SERVER_ERROR
        with TestClient(server.address) as intruder:
            intruder.client_id = client_id
            assert intruder.reconnect("target", key) in (ServerError(), ConnectionClosed())
        with standing:
            assert standing.send_file("doc", b"during the lockout") in (ServerError(), ConnectionClosed())
        assert stored(server.data_dir, client_id, "doc") == (b"precious", 1)
        assert "locked out" in server.log()
        with TestClient(server.address) as bystander:  # other clients are served as before
            bystander.new_client("bystander", rsa_key())
            bystander.backup("doc", b"unaffected")
    finally:
        server.stop()


def test_lockout_counts_recent_failures_and_expires() -> None:
    clock = FakeClock(1000.0)
    failures = DecryptionFailures(limit=3, lockout=60.0, clock=clock)
    victim, other = b"\x01" * 16, b"\x02" * 16
    assert [failures.record(victim) for _ in range(2)] == [False, False]
    clock.now += 61  # the two failures are forgotten
    assert [failures.record(victim) for _ in range(2)] == [False, False]
    assert failures.locked_for(victim) == 0.0
    assert failures.record(victim) is True
    assert failures.locked_for(victim) == 60.0
    assert failures.locked_for(other) == 0.0
    clock.now += 59.5
    assert failures.locked_for(victim) == 0.5
    clock.now += 0.5
    assert failures.locked_for(victim) == 0.0
    assert failures.record(victim) is False
