"""backupproto.cksum and `python -m backupproto cksum` against GNU cksum and a slow oracle."""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupproto.cksum import Cksum, _reference_cksum, cksum
from backupproto.io import cli_cksum
from backupproto.io.cli_cksum import READ_SIZE, cksum_path, sum_range, sum_regular_file, sum_stream

GNU_CKSUM = shutil.which("cksum")
needs_gnu = pytest.mark.skipif(GNU_CKSUM is None, reason="GNU cksum not installed")
PATTERN = bytes(range(256)) * 2
GRANULARITY = mmap.ALLOCATIONGRANULARITY


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
    sizes = [4095, 4096, 4097, 65535, 65536, 65537, READ_SIZE - 1, READ_SIZE, READ_SIZE + 1]
    blobs = [rng(n) for n in sizes] + [rng(4 * READ_SIZE), rng(4 * READ_SIZE + 12345)]
    paths = write_files(tmp_path, blobs)
    expected = gnu_cksum_files(paths)
    for blob, path, want in zip(blobs, paths, expected, strict=True):
        assert cksum_path(path) == want
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


@settings(max_examples=300, deadline=None)
@given(first=st.binary(max_size=3000), second=st.binary(max_size=3000), prefix=st.binary(max_size=40))
def test_extend_joins_sums_of_consecutive_parts(first: bytes, second: bytes, prefix: bytes) -> None:
    joined = Cksum(prefix)
    joined.update(first)
    tail = Cksum(second)
    joined.extend(tail)
    whole = prefix + first + second
    assert (joined.value, joined.length) == (_reference_cksum(whole), len(whole))
    assert tail.value == _reference_cksum(second)  # the joined part is left as it was


def test_extend_over_long_zero_runs() -> None:
    # lengths whose shift needs many squarings: 1 MiB + 1 and 3 MiB of zero bytes
    for length in (READ_SIZE + 1, 3 * READ_SIZE):
        head = Cksum(b"head")
        head.extend(Cksum(bytes(length)))
        assert head.value == cksum(b"head" + bytes(length))


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 600))
def test_stream_with_small_buffer(data: bytes, chunk: int) -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # under the pipe's 64 KiB capacity
        os.close(write_end)
        summer = Cksum()
        sum_stream(read_end, summer, read_size=chunk)
    finally:
        os.close(read_end)
    assert (summer.value, summer.length) == (cksum(data), len(data))


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
    (tmp_path / "big.bin").write_bytes(os.urandom(READ_SIZE + 3))
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


def test_cksum_path_constant_memory(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "big"
    data = os.urandom(8 * READ_SIZE)
    path.write_bytes(data)
    want = (cksum(data), len(data))
    del data
    tracemalloc.start()
    try:
        assert cksum_path(path) == want
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < READ_SIZE + 256 * 1024  # one reused 1 MiB buffer, not the file


# --- large files: mapped parts summed in parallel ----------------------------------------


@needs_gnu
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_parts_summed_in_parallel_match_gnu(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(3 * 65536 * 5 + 12345))  # parts of unequal, unaligned length
    [want] = gnu_cksum_files([path])
    fd = os.open(path, os.O_RDONLY)
    try:
        summer = sum_regular_file(fd, want[1], workers)
    finally:
        os.close(fd)
    assert (summer.value, summer.length) == want


def test_small_windows_join_like_one_read(tmp_path: Path) -> None:
    data = os.urandom(10 * GRANULARITY + 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        summer = sum_range(fd, 2 * GRANULARITY, len(data), window=3 * GRANULARITY + 1)
    finally:
        os.close(fd)
    assert summer.value == _reference_cksum(data[2 * GRANULARITY :])


def test_unmappable_files_are_read_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(5 * GRANULARITY + 3)
    (tmp_path / "f").write_bytes(data)

    def cannot_map(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(cli_cksum.mmap, "mmap", cannot_map)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        summer = sum_range(fd, GRANULARITY, len(data))
    finally:
        os.close(fd)
    assert summer.value == _reference_cksum(data[GRANULARITY:])


@needs_gnu
def test_cli_large_file_takes_the_parallel_path_and_matches_gnu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(5 * 65536 + 99))
    monkeypatch.setattr(cli_cksum, "SPLIT_MIN", 65536)
    monkeypatch.setattr(cli_cksum, "WINDOW", 65536)
    monkeypatch.setattr(cli_cksum, "worker_count", lambda size: 3)
    ranges: list[tuple[int, int]] = []
    real_sum_range = cli_cksum.sum_range

    def recording_sum_range(fd: int, start: int, end: int) -> Cksum:
        ranges.append((start, end))
        return real_sum_range(fd, start, end)

    monkeypatch.setattr(cli_cksum, "sum_range", recording_sum_range)
    monkeypatch.chdir(tmp_path)
    assert cli_cksum.main(["big.bin"]) == 0
    assert capsysbinary.readouterr().out == run_gnu(["big.bin"], cwd=tmp_path).stdout
    ranges.sort()
    assert len(ranges) == 3
    assert ranges[0][0] == 0 and ranges[-1][1] == 5 * 65536 + 99
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(ranges))
    assert all(start % GRANULARITY == 0 for start, _ in ranges)



PEAK_RSS_SCRIPT = """
import sys
from backupproto.io import cli_cksum
cli_cksum.main(sys.argv[1:])
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
"""


def peak_rss_kib(path: Path) -> tuple[bytes, int]:
    """(cksum line, peak resident KiB) of a fresh process summing `path` through the CLI."""
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(path)]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(command, capture_output=True, check=True, env=environment)
    line, peak = result.stdout.splitlines()
    return line + b"\n", int(peak)


@needs_gnu
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cli_on_a_file_above_the_split_size_matches_gnu_in_constant_memory(tmp_path: Path) -> None:
    size = cli_cksum.SPLIT_MIN * 2 + 4097  # two mapped parts, the second not window-aligned
    large, empty = tmp_path / "large.bin", tmp_path / "empty"
    with large.open("wb") as stream:
        stream.write(os.urandom(1 << 20) * (size >> 20))
        stream.write(os.urandom(size % (1 << 20)))
    empty.write_bytes(b"")
    line, peak = peak_rss_kib(large)
    assert line == run_gnu([str(large)]).stdout
    _, idle_peak = peak_rss_kib(empty)
    # one 8 MiB window per worker is mapped at a time, not the file nor a whole part
    assert (peak - idle_peak) * 1024 < size // 2, (peak, idle_peak)
