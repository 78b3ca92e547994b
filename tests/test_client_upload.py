"""reference_client.upload: a file's content read and summed in one worker thread, encrypted in
another, handed to the sending thread chunk by chunk; errors reach the sender, and leaving
early stops both workers."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from reference_client.upload import SLOTS, EncryptedContent

KEY = bytes(range(16))


def reference_ciphertext(plain: bytes) -> bytes:
    """AES-128-CBC with a zero IV and PKCS#7 padding, by pycryptodome (not the code under test)."""
    return AES.new(KEY, AES.MODE_CBC, iv=bytes(16)).encrypt(pad(plain, 16))


@pytest.mark.skipif(shutil.which("cksum") is None, reason="needs the cksum program")
@pytest.mark.parametrize("size", [0, 1, 15, 16, 4095, 3 * 4096 + 7, 10 * 4096])
def test_chunks_then_final_block_are_the_files_ciphertext_and_crc(tmp_path: Path, size: int) -> None:
    plain = random.Random(size).randbytes(size)
    source = tmp_path / "source.bin"
    source.write_bytes(plain)
    sent = bytearray()
    with source.open("rb", buffering=0) as stream, EncryptedContent(stream, size, KEY, 4096) as content:
        done_before = 0
        for chunk, done in content:
            sent += chunk
            assert done > done_before  # progress grows with every chunk
            done_before = done
    sent += content.final
    assert bytes(sent) == reference_ciphertext(plain)
    assert not content.changed
    gnu = subprocess.run(["cksum", str(source)], check=True, capture_output=True, text=True).stdout
    assert content.crc == int(gnu.split()[0])


class FailingStream(io.RawIOBase):
    """Reads `good` bytes, then fails the way a disk or a network file system would."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.left:
            raise OSError(5, "Input/output error")
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def test_a_read_error_reaches_the_sender_and_both_workers_end() -> None:
    content = EncryptedContent(FailingStream(3 * 4096), 100 * 4096, KEY, 4096)
    with pytest.raises(OSError, match="Input/output error"), content:
        for _ in content:  # bounded: the stream fails after three chunks
            pass
    assert not any(worker.is_alive() for worker in content._workers)


def test_leaving_after_the_first_chunk_stops_both_workers() -> None:
    """The sender fails (its peer went away) with more than `SLOTS` chunks still to come."""
    size = (SLOTS + 10) * 4096
    with io.BytesIO(bytes(size)) as stream:
        content = EncryptedContent(stream, size, KEY, 4096)  # type: ignore[arg-type]
        with content:
            for _chunk in content:
                break
    assert not any(worker.is_alive() for worker in content._workers)
