"""files.Upload: content in chunks of any size is decrypted, CRC'd and stored byte for byte,
through direct I/O where the file system takes it and through the page cache otherwise."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

import reference_server.files
from backupproto.crypto import CbcEncryptor
from reference_server.files import DIRECT_ALIGN, DIRECT_WRITE, Upload

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
