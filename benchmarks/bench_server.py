"""Reference server throughput: one big file backed up over loopback, vs raw AES-128-CBC decryption.

Run: python benchmarks/bench_server.py [--size-mib 1024] [--chunk-kib 1024] [--repeat 3] [--dir DIR]

Starts `python -m reference_server --port 0` on a temporary data folder, registers,
exchanges keys, encrypts the file with the session key into a temp file (not timed), then
times 1103s: from the first byte sent to the 2103 received (the server decrypts, CRCs,
writes, fsyncs and renames before it answers), each followed by a 1104. The baseline is
pycryptodome's AES-128-CBC decrypt of the same ciphertext in the same chunks, in this
process, timing the decrypt calls only. Best of --repeat for both, alternating, so that
load from other processes affects both alike. Also printed: the server's peak RSS (VmHWM
from /proc/PID/status) idle and after the transfers.
Goals: >= 60% of the raw AES speed; peak RSS < 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from Crypto.Cipher import AES

from backupproto import crypto
from backupproto.cksum import Cksum
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

MIB = 1 << 20


def start_server(data_dir: Path) -> ServerProcess:
    return ServerProcess.start(data_dir, "--log-level", "WARNING", timeout=60)


def vm_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found[1])


class Client:
    """A blocking client: the one channel around a `ClientConnection`."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.channel = EngineChannel.connect(address, ClientConnection(), connect_timeout=60, timeout=600)

    def send(self, event: object) -> None:
        self.channel.send(event)

    def receive(self) -> Response:
        event = self.channel.next_event()
        assert isinstance(event, Response), event
        return event


def write_plaintext(path: Path, size: int) -> int:
    """A file of `size` bytes (a random 1 MiB block repeated); returns its cksum."""
    block = os.urandom(MIB)
    summer = Cksum()
    with path.open("wb") as stream:
        left = size
        while left:
            piece = block[: min(left, MIB)]
            stream.write(piece)
            summer.update(piece)
            left -= len(piece)
    return summer.value


def encrypt_file(source: Path, target: Path, key: bytes) -> None:
    encryptor = crypto.CbcEncryptor(key)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(8 * MIB):
            writer.write(encryptor.update(chunk))
        writer.write(encryptor.finalize())


def raw_aes_seconds(path: Path, key: bytes, chunk: int) -> float:
    """Time of pycryptodome's CBC decrypt calls alone over the file, chunk by chunk."""
    cipher = AES.new(key, AES.MODE_CBC, iv=bytes(16))
    spent = 0.0
    with path.open("rb", buffering=0) as reader:
        while data := reader.read(chunk):
            started = time.perf_counter()
            cipher.decrypt(data)
            spent += time.perf_counter() - started
    return spent


def send_file(
    client: Client, client_id: bytes, path: Path, content_size: int, chunk: int, expected_crc: int
) -> tuple[float, float]:
    """One 1103 timed from its first byte to the 2103, then 1104; (total, sending) seconds."""
    started = time.perf_counter()
    client.send(SendFile(client_id, content_size, "big.bin"))
    with path.open("rb", buffering=0) as reader:
        while data := reader.read(chunk):
            client.send(FileChunk(data))
    client.send(FileEnd())
    sent = time.perf_counter()
    received = client.receive()
    elapsed = time.perf_counter() - started
    assert isinstance(received, FileReceived), received
    assert received.cksum == expected_crc, "cksum mismatch"
    client.send(CrcOk(client_id, "big.bin"))
    assert isinstance(client.receive(), Acknowledged)
    return elapsed, sent - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="plaintext size in MiB (default 1024)")
    parser.add_argument("--chunk-kib", type=int, default=1024, help="client send chunk in KiB (default 1024)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="transfers and AES runs; best of each (default 3)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the temp files (default: TMPDIR)"
    )
    options = parser.parse_args()
    size = options.size_mib * MIB
    chunk = options.chunk_kib * 1024

    with tempfile.TemporaryDirectory(prefix="bench-server-", dir=options.dir) as temp:
        root = Path(temp)
        plain, cipher_path = root / "plain.bin", root / "cipher.bin"
        expected_crc = write_plaintext(plain, size)
        server = start_server(root / "server")
        try:
            rss_idle = vm_hwm_kib(server.process.pid)
            key = crypto.generate_private_key()
            client = Client(server.address)
            client.send(Register(bytes(16), "bench"))
            registered = client.receive()
            assert isinstance(registered, Registered)
            client.send(SendPublicKey(registered.client_id, "bench", crypto.public_key_der(key)))
            keyed = client.receive()
            assert isinstance(keyed, AesKey)
            aes_key = crypto.unwrap_aes_key(key, keyed.encrypted_aes_key)
            encrypt_file(plain, cipher_path, aes_key)
            plain.unlink()
            content_size = crypto.encrypted_size(size)
            assert cipher_path.stat().st_size == content_size

            runs: list[tuple[float, float]] = []
            aes_runs: list[float] = []
            for _ in range(options.repeat):
                runs.append(
                    send_file(client, registered.client_id, cipher_path, content_size, chunk, expected_crc)
                )
                aes_runs.append(raw_aes_seconds(cipher_path, aes_key, chunk))
            rss_peak = vm_hwm_kib(server.process.pid)
            client.channel.close()
        finally:
            server.stop(timeout=60)

    elapsed, sent = min(runs)
    aes_seconds = min(aes_runs)
    server_rate = content_size / elapsed / 1e6
    aes_rate = content_size / aes_seconds / 1e6
    print(
        f"best of {options.repeat}: file {options.size_mib} MiB plaintext, {content_size} bytes encrypted, "
        f"client chunk {options.chunk_kib} KiB"
    )
    print(
        f"server (send -> 2103, incl. fsync): {elapsed:.2f} s = {server_rate:.0f} MB/s "
        f"(last byte sent after {sent:.2f} s)"
    )
    print(f"raw AES-128-CBC decrypt (pycryptodome, same data): {aes_seconds:.2f} s = {aes_rate:.0f} MB/s")
    print(f"ratio server / raw AES: {server_rate / aes_rate:.0%} (goal >= 60%)")
    print(
        f"server peak RSS (VmHWM): {rss_peak / 1024:.1f} MiB (idle {rss_idle / 1024:.1f} MiB; goal < 64 MiB)"
    )


if __name__ == "__main__":
    main()
