"""files.Upload: content in chunks of any size is decrypted, CRC'd and stored byte for byte,
through direct I/O where the file system takes it and through the page cache otherwise; and
the content pump (reference_server.content) that feeds it from the socket in a pool thread."""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.client import TestClient
from helpers.db import file_rows
from helpers.keys import rsa_key

import reference_server.content
import reference_server.files
from backupproto.crypto import CbcEncryptor
from backupproto.events import FileChunk, FileReceived, SendFile
from reference_server import Server
from reference_server.errors import StorageError
from reference_server.files import DIRECT_ALIGN, DIRECT_WRITE, FileStore, Upload

KEY = bytes(range(16))
SIZES = (1, DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_WRITE + 12345, 3 * DIRECT_WRITE + 7)


def ciphertext_chunks(plain: bytes, seed: int) -> list[bytes]:
    """The ciphertext of `plain`, cut at random places (1 byte .. 1.5 MiB per chunk)."""
    encryptor = CbcEncryptor(KEY)
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    rng = random.Random(seed)
    chunks, start = [], 0
    while start < len(ciphertext):  # bounded: every chunk takes at least one byte
        size = rng.choice((1, 15, 16, 4097, 65536, 1 << 20, 3 << 19))
        chunks.append(ciphertext[start : start + size])
        start += size
    return chunks


def gnu_cksum(path: Path) -> int:
    return int(
        subprocess.run(["cksum", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]
    )


@pytest.mark.skipif(shutil.which("cksum") is None, reason="needs the cksum program")
@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_chunks_of_any_size_are_stored_byte_for_byte(tmp_path: Path, size: int, direct: bool) -> None:
    plain = random.Random(size).randbytes(size)
    final = tmp_path / "stored.bin"
    upload = Upload(final, "x/stored.bin", tmp_path, KEY, direct=direct)
    for chunk in ciphertext_chunks(plain, seed=size):
        upload.write(chunk)
    crc = upload.finish()
    upload.commit()
    assert not upload.direct  # the last partial block went through the page cache
    assert final.read_bytes() == plain
    assert upload.size == size
    assert crc == gnu_cksum(final)


def test_a_refused_direct_write_goes_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that takes O_DIRECT but refuses the write (EINVAL): nothing is lost."""
    plain = random.Random(7).randbytes(2 * DIRECT_WRITE + 99)
    final = tmp_path / "stored.bin"
    upload = Upload(final, "x/stored.bin", tmp_path, KEY)
    if not upload.direct:
        pytest.skip("this file system does not take O_DIRECT")
    real_write = os.write
    refused = []

    def refusing_write(fd: int, data: memoryview) -> int:
        if upload.direct and not refused:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(reference_server.files.os, "write", refusing_write)
    for chunk in ciphertext_chunks(plain, seed=7):
        upload.write(chunk)
    upload.finish()
    upload.commit()
    assert refused and refused[0] % DIRECT_ALIGN == 0
    assert final.read_bytes() == plain


def direct_upload(tmp_path: Path) -> Upload:
    upload = Upload(tmp_path / "stored.bin", "x/stored.bin", tmp_path, KEY)
    if not upload.direct:
        pytest.skip("this file system does not take O_DIRECT")
    return upload


def test_only_a_file_of_at_least_one_direct_write_is_written_with_direct_io(tmp_path: Path) -> None:
    """A small file goes through the page cache from the start (no switch, no staging buffer)."""
    direct_upload(tmp_path).abort()  # skips where the file system refuses O_DIRECT
    files = FileStore(tmp_path)
    small = files.begin(bytes(16), "small.bin", KEY, DIRECT_WRITE - 16)
    large = files.begin(bytes(16), "large.bin", KEY, DIRECT_WRITE)
    try:
        assert not small.direct
        assert large.direct
    finally:
        small.abort()
        large.abort()


def test_a_direct_write_waiting_for_the_disk_does_not_stop_the_next_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread writes a staged buffer while the caller decrypts into the other one."""
    plain = random.Random(8).randbytes(3 * DIRECT_WRITE + 5)
    upload = direct_upload(tmp_path)
    disk_free = threading.Event()
    released_by_caller: list[bool] = []
    real_write = os.write

    def slow_disk(fd: int, data: memoryview) -> int:
        if not released_by_caller:  # the first direct write waits until the caller let it go
            released_by_caller.append(disk_free.wait(timeout=10))
        return real_write(fd, data)

    monkeypatch.setattr(reference_server.files.os, "write", slow_disk)
    encryptor = CbcEncryptor(KEY)
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    upload.write(ciphertext[: DIRECT_WRITE + DIRECT_WRITE // 2])  # one write handed over, more staged
    disk_free.set()  # reached only if write() returned while the disk still held the first write
    upload.write(ciphertext[DIRECT_WRITE + DIRECT_WRITE // 2 :])
    upload.finish()
    upload.commit()
    assert released_by_caller == [True]
    assert (tmp_path / "stored.bin").read_bytes() == plain


def test_a_failed_direct_write_is_a_storage_error_and_abort_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error in the writer thread reaches the caller at its next step; nothing is kept."""
    upload = direct_upload(tmp_path)

    def full_disk(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reference_server.files.os, "write", full_disk)
    encryptor = CbcEncryptor(KEY)
    ciphertext = encryptor.update(bytes(3 * DIRECT_WRITE)) + encryptor.finalize()
    with pytest.raises(StorageError, match="No space left on device"):
        upload.write(ciphertext)
        upload.finish()
    upload.abort()
    assert not upload.temp.exists()
    assert not (tmp_path / "stored.bin").exists()


def test_a_pump_that_queues_itself_again_after_every_chunk_stores_the_whole_file(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONTENT_SLICE 0: the pump hands its pool thread back after every piece; nothing is lost."""
    monkeypatch.setattr(reference_server.content, "CONTENT_SLICE", 0.0)
    plain = random.Random(3).randbytes(3 * DIRECT_WRITE + 5)
    with TestClient(in_process_server.address) as client:
        client_id = client.new_client("sliced", rsa_key())
        client.backup("sliced.bin", plain)
    path_name, verified = file_rows(in_process_server.data_dir, client_id)["sliced.bin"]
    assert verified == 1
    assert (in_process_server.data_dir / path_name).read_bytes() == plain


def test_shutdown_wakes_a_pump_waiting_for_content(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pump waiting in its pool thread for content that does not come (its wait made 60 s
    long) ends at shutdown: the session closes within the grace period, the temp file goes."""
    monkeypatch.setattr(reference_server.content, "CONTENT_WAIT", 60.0)
    caplog.set_level(logging.INFO)
    server = in_process_server
    temp_dir = server.data_dir / ".tmp"
    with TestClient(server.address) as client:
        client.new_client("waiting", rsa_key())
        client.send(SendFile(client.client_id, 1 << 20, "half.bin"))
        client.send(FileChunk(bytes(1 << 16)))
        deadline = time.monotonic() + 10
        while not list(temp_dir.iterdir()) and time.monotonic() < deadline:  # bounded
            time.sleep(0.02)
        assert list(temp_dir.iterdir())
        server.stop()
        deadline = time.monotonic() + 20
        while list(temp_dir.iterdir()) and time.monotonic() < deadline:  # bounded
            time.sleep(0.02)
    assert list(temp_dir.iterdir()) == []
    assert "closed by server shutdown" in caplog.text
    assert "did not end within" not in caplog.text


@pytest.mark.parametrize("size", [1000, 2 * DIRECT_WRITE], ids=["small file", "large file"])
def test_an_upload_whose_temp_file_is_slow_to_create_stalls_no_other_client(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Creating a file can wait for the file system (its journal, a slow disk): the first temp
    file's creation is held back (bounded) until another client has registered, got its key
    and backed up a file. The event loop never waits for the file system, so that client is
    done while the first upload still waits; a loop stuck in the open would leave it waiting
    until the bound passed."""
    server = in_process_server
    creating = threading.Event()
    other_done = threading.Event()
    released_by_other: list[bool] = []
    real_open = os.open

    def held_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and not creating.is_set():
            creating.set()
            released_by_other.append(other_done.wait(timeout=10))
        return real_open(path, flags, *args, **kwargs)

    plain = random.Random(size).randbytes(size)
    key = rsa_key()
    with TestClient(server.address) as slow:
        slow_id = slow.new_client("slow", key)
        monkeypatch.setattr(reference_server.files.os, "open", held_open)
        answers: list[object] = []
        uploading = threading.Thread(target=lambda: answers.append(slow.backup("slow.bin", plain)))
        uploading.start()
        try:
            assert creating.wait(timeout=10)
            with TestClient(server.address, timeout=30) as other:
                other_id = other.new_client("other", key)
                other.backup("other.bin", b"not held")
            other_done.set()
        finally:
            other_done.set()
            uploading.join(timeout=30)
    assert released_by_other == [True]
    assert isinstance(answers[0], FileReceived)
    for client_id, name, content in ((slow_id, "slow.bin", plain), (other_id, "other.bin", b"not held")):
        path_name, verified = file_rows(server.data_dir, client_id)[name]
        assert verified == 1
        assert (server.data_dir / path_name).read_bytes() == content
