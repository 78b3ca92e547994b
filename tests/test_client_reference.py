"""The reference client against the reference server, over real TCP on 127.0.0.1: the stored
files equal the originals, the CRCs equal GNU `cksum`, identities persist across runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from backupproto.crypto import generate_private_key
from reference_client import BackupClient, BackupResult, FileStatus, read_identity
from reference_client.cli import main
from reference_client.config import Identity, write_identity

MiB = 1 << 20


def gnu_cksum(path: Path) -> tuple[int, int]:
    output = subprocess.run(["cksum", str(path)], capture_output=True, text=True, check=True).stdout
    crc, size = output.split()[:2]
    return int(crc), int(size)


def server_rows(data_dir: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{data_dir / 'server.db'}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def stored_path(data_dir: Path, client_id: bytes, file_name: str) -> Path:
    """Where the server keeps a client's file: files.PathName under the data folder (spec 11)."""
    rows = server_rows(data_dir, "SELECT PathName, Verified FROM files WHERE ID = ? AND FileName = ?",
                       client_id, file_name)  # fmt: skip
    assert len(rows) == 1, rows
    path_name, verified = rows[0]
    assert verified == 1
    return data_dir / str(path_name)


def check_stored(data_dir: Path, state_dir: Path, result: BackupResult, original: Path) -> None:
    assert result.status is FileStatus.VERIFIED
    client_id = read_identity(state_dir / "me.info").client_id
    stored = stored_path(data_dir, client_id, original.name)
    assert stored.parent.name == client_id.hex()
    assert stored.read_bytes() == original.read_bytes()
    assert (result.crc, result.size) == gnu_cksum(original)


def make_file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    block = bytes((index * 7 + 3) % 251 for index in range(4096))
    with path.open("wb") as stream:
        for offset in range(0, size, len(block)):
            stream.write(block[: min(len(block), size - offset)])
    return path


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, MiB - 1, MiB, MiB + 1])
def test_file_sizes(reference_server, tmp_path: Path, size: int) -> None:  # type: ignore[no-untyped-def]
    original = make_file(tmp_path, f"size-{size}.bin", size)
    client = BackupClient(reference_server.address, "sizes", tmp_path, retry_delay=0)
    check_stored(reference_server.data_dir, tmp_path, client.backup(original), original)


@pytest.mark.slow
def test_64_mib_file(reference_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = make_file(tmp_path, "big.bin", 64 * MiB + 5)
    client = BackupClient(reference_server.address, "big", tmp_path, retry_delay=0)
    check_stored(reference_server.data_dir, tmp_path, client.backup(original), original)


def test_first_run_registers_second_reconnects_with_a_new_aes_key(reference_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = make_file(tmp_path, "notes.txt", 1000)
    data_dir = reference_server.data_dir
    first = BackupClient(reference_server.address, "runner", tmp_path).backup(original)
    check_stored(data_dir, tmp_path, first, original)
    me_info = (tmp_path / "me.info").read_bytes()
    client_id = read_identity(tmp_path / "me.info").client_id
    key_sql = "SELECT AESKey, PublicKey FROM clients WHERE ID = ?"
    [(first_aes, public_key)] = server_rows(data_dir, key_sql, client_id)

    original.write_bytes(b"changed content\n")
    second = BackupClient(reference_server.address, "runner", tmp_path).backup(original)
    check_stored(data_dir, tmp_path, second, original)
    assert (tmp_path / "me.info").read_bytes() == me_info
    [(second_aes, second_public_key)] = server_rows(data_dir, key_sql, client_id)
    assert second_public_key == public_key
    assert len(second_aes) == len(first_aes) == 16 and second_aes != first_aes
    assert server_rows(data_dir, "SELECT count(*) FROM clients") == [(1,)]


def test_several_files_in_one_run(reference_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    originals = [make_file(tmp_path, f"part-{index}.dat", size) for index, size in enumerate([3, 0, 40000])]
    results = BackupClient(reference_server.address, "many", tmp_path).backup_many(originals)
    for result, original in zip(results, originals, strict=True):
        check_stored(reference_server.data_dir, tmp_path, result, original)


def test_server_forgetting_the_client_makes_it_register_anew(reference_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    original = make_file(tmp_path, "x.txt", 10)
    # a me.info from another server: this one answers 2106
    write_identity(tmp_path, Identity("wanderer", bytes.fromhex("ab" * 16), generate_private_key()))
    result = BackupClient(reference_server.address, "wanderer", tmp_path, retry_delay=0).backup(original)
    check_stored(reference_server.data_dir, tmp_path, result, original)
    assert read_identity(tmp_path / "me.info").client_id != bytes.fromhex("ab" * 16)


def test_cli_batch_run_with_transfer_info(reference_server, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    files = [make_file(tmp_path, "a.txt", 100), make_file(tmp_path, "b.txt", 2 * MiB)]
    (tmp_path / "transfer.info").write_text(
        f"{reference_server.host}:{reference_server.port}\ncli-user\na.txt\nb.txt\n"
    )
    assert main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "registered as 'cli-user'" in out
    assert "a.txt: verified" in out and "b.txt: verified" in out and "2 of 2 file(s) verified" in out
    for original in files:
        client_id = read_identity(tmp_path / "me.info").client_id
        assert (
            stored_path(reference_server.data_dir, client_id, original.name).read_bytes()
            == original.read_bytes()
        )
    assert main(["--dir", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_console_script_in_the_working_folder(reference_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_file(tmp_path, "c.bin", 5000)
    (tmp_path / "transfer.info").write_text(
        f"{reference_server.host}:{reference_server.port}\nscript\nc.bin\n"
    )
    done = subprocess.run([sys.executable, "-m", "reference_client"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "c.bin: verified" in done.stdout
    assert (tmp_path / "me.info").read_text().splitlines()[0] == "script"


MEMORY_PROBE = """
import sys
from reference_client.cli import main
from reference_client.config import Identity, write_identity
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("PEAK", int(peak.split()[1]) * 1024, file=sys.stderr)
sys.exit(code)
"""


def client_peak_rss(server, folder: Path, name: str) -> int:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, "--dir", str(folder), "--server", f"{server.host}:{server.port}",
         "--name", name, "--quiet", str(folder / name)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("PEAK")[1])


@pytest.mark.slow
def test_memory_stays_flat_for_a_large_file(reference_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    small_dir, big_dir = tmp_path / "small", tmp_path / "big"
    small_dir.mkdir()
    big_dir.mkdir()
    make_file(small_dir, "small.bin", 1000)
    make_file(big_dir, "big.bin", 64 * MiB)
    baseline = client_peak_rss(reference_server, small_dir, "small.bin")
    peak = client_peak_rss(reference_server, big_dir, "big.bin")
    print(f"client peak RSS: 1000-byte file {baseline / MiB:.1f} MiB, 64 MiB file {peak / MiB:.1f} MiB")
    assert peak - baseline < 16 * MiB
    assert peak < baseline + 64 * MiB // 4
