"""backupproto.cksum and `python -m backupproto cksum` against GNU cksum and a slow oracle."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupproto.cksum import CHUNK_SIZE, Cksum, _reference_cksum, cksum, cksum_file, cksum_stream

GNU_CKSUM = shutil.which("cksum")
needs_gnu = pytest.mark.skipif(GNU_CKSUM is None, reason="GNU cksum not installed")
PATTERN = bytes(range(256)) * 2


def gnu_cksum_files(paths: list[Path]) -> list[tuple[int, int]]:
    """(crc, size) per file from one run of the GNU binary."""
    assert GNU_CKSUM is not None
    out = subprocess.run([GNU_CKSUM, *map(str, paths)], capture_output=True, check=True).stdout
    return [(int(crc), int(size)) for crc, size, _ in (line.split(b" ", 2) for line in out.splitlines())]


def write_files(directory: Path, blobs: list[bytes]) -> list[Path]:
    paths = []
    for index, blob in enumerate(blobs):
        path = directory / f"f{index}"
        path.write_bytes(blob)
        paths.append(path)
    return paths


# --- known values and the oracle ----------------------------------------------------------


def test_known_values() -> None:
    assert cksum(b"") == 4294967295
    assert cksum(b"hello\n") == 3015617425
    assert cksum(b"123456789") == 930766865  # the POSIX check value
    assert _reference_cksum(b"123456789") == 930766865


@needs_gnu
def test_every_length_up_to_300(tmp_path: Path) -> None:
    blobs = [(PATTERN * 2)[:n] for n in range(301)]
    expected = gnu_cksum_files(write_files(tmp_path, blobs))
    for blob, (crc, size) in zip(blobs, expected, strict=True):
        assert (cksum(blob), len(blob)) == (crc, size)
        assert _reference_cksum(blob) == crc


@needs_gnu
def test_block_boundaries_and_large_files(tmp_path: Path) -> None:
    rng = os.urandom
    sizes = [4095, 4096, 4097, 65535, 65536, 65537, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1]
    blobs = [rng(n) for n in sizes] + [rng(4 * CHUNK_SIZE), rng(4 * CHUNK_SIZE + 12345)]
    paths = write_files(tmp_path, blobs)
    expected = gnu_cksum_files(paths)
    for blob, path, want in zip(blobs, paths, expected, strict=True):
        assert cksum_file(path) == want
        assert (cksum(blob), len(blob)) == want
    big = blobs[-1]
    assert _reference_cksum(big[:70000]) == cksum(big[:70000])


@needs_gnu
def test_length_suffix_of_several_bytes(tmp_path: Path) -> None:
    """Lengths needing 1, 2 and 3 suffix bytes, all with a zero top byte somewhere."""
    blobs = [bytes(n) for n in (255, 256, 257, 65280, 65536 + 256)]
    for blob, want in zip(blobs, gnu_cksum_files(write_files(tmp_path, blobs)), strict=True):
        assert (cksum(blob), len(blob)) == want


# --- incremental use ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_chunked_equals_one_shot_equals_reference(data: bytes, cuts: list[int]) -> None:
    summer = Cksum()
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        summer.update(memoryview(data)[start:end] if start % 2 else data[start:end])
        assert summer.value == cksum(data[:end])  # reading value does not disturb updates
    assert summer.length == len(data)
    assert summer.value == cksum(data) == _reference_cksum(data)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 600))
def test_stream_with_small_buffer(data: bytes, chunk: int) -> None:
    assert cksum_stream(io.BytesIO(data), chunk_size=chunk) == (cksum(data), len(data))


def test_accepts_bytes_like() -> None:
    data = b"some data\n"
    assert cksum(bytearray(data)) == cksum(memoryview(data)) == cksum(data)
    assert Cksum(data).value == cksum(data)


# --- the command line -----------------------------------------------------------------------


def run_ours(
    args: list[str], stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "backupproto", "cksum", *args]
    return subprocess.run(command, input=stdin, capture_output=True, cwd=cwd, env=env)


def run_gnu(
    args: list[str], stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    assert GNU_CKSUM is not None
    return subprocess.run(["cksum", *args], executable=GNU_CKSUM, input=stdin, capture_output=True, cwd=cwd)


@needs_gnu
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-"],
        ["a.txt"],
        ["a.txt", "empty", "with space", "-", "big.bin"],
        ["a.txt", "missing", "empty"],
        ["missing", "it's gone", "new\nline"],
        ["--", "-dash"],
        ["-", "-"],
    ],
    ids=repr,
)
def test_cli_matches_gnu(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "with space").write_bytes(PATTERN)
    (tmp_path / "big.bin").write_bytes(os.urandom(CHUNK_SIZE + 3))
    (tmp_path / "-dash").write_bytes(b"dash")
    stdin = b"from stdin\n"
    ours, gnu = run_ours(args, stdin, tmp_path), run_gnu(args, stdin, tmp_path)
    assert ours.stdout == gnu.stdout
    assert ours.stderr == gnu.stderr
    assert ours.returncode == gnu.returncode


def test_cli_missing_file_message(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    result = run_ours(["nope", "a"], cwd=tmp_path)
    assert result.stdout == b"12738659 1 a\n"
    assert result.stderr == b"cksum: nope: No such file or directory\n"
    assert result.returncode == 1


def test_cli_directory_is_an_error(tmp_path: Path) -> None:
    # GNU cksum 9.1 wrongly prints the CRC of nothing for a directory (fixed in 9.2:
    # "cksum again diagnoses read errors"); we follow the fixed behaviour.
    (tmp_path / "d").mkdir()
    result = run_ours(["d"], cwd=tmp_path)
    assert result.stdout == b""
    assert result.stderr == b"cksum: d: Is a directory\n"
    assert result.returncode == 1


def test_cksum_file_constant_memory(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "big"
    data = os.urandom(8 * CHUNK_SIZE)
    path.write_bytes(data)
    want = (cksum(data), len(data))
    del data
    tracemalloc.start()
    try:
        assert cksum_file(path) == want
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < CHUNK_SIZE + 256 * 1024  # one reused 1 MiB buffer, not the file
