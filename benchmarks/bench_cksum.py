"""cksum speed: `python -m backupproto cksum` against GNU ``cksum`` on the same file.

Run: python benchmarks/bench_cksum.py [--size-mib 2048] [--runs 5] [--repeat 3]
(``--size-mib 64 --runs 2`` is a short run.) The file is written once and read from the page
cache by everything below.

1. Whole process: GNU ``cksum FILE`` and ``python -m backupproto cksum FILE`` (and the
   subcommand module alone, ``python -m backupproto.io.cli_cksum FILE``) as processes,
   alternating, `runs` rounds; median and best of each, and the speed ratio ours/GNU.
   Start-up: each command on an empty file, against ``python -c pass``.
2. In process (best of `repeat`): the CLI's file summing, by worker count, and the plain read
   loop by read size; GNU's whole-process time is the baseline of the ratios.
3. The pure-Python reference and a zlib.crc32 bit-reversal trick, on small in-memory slices.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backupproto.cksum import Cksum, _reference_cksum, cksum  # noqa: E402
from backupproto.io.cli_cksum import cksum_path, sum_regular_file, sum_stream  # noqa: E402

MIB = 1 << 20
_REVERSED = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def zlib_trick_cksum(data: bytes) -> int:
    """cksum via zlib's reflected CRC-32: reverse the bits of every byte and of the result."""
    length = len(data)
    message = data + length.to_bytes((length.bit_length() + 7) // 8, "little")
    raw = zlib.crc32(message.translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF  # init 0, no xorout
    return int(f"{raw:032b}"[::-1], 2) ^ 0xFFFFFFFF


def best_of(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def time_process(command: Sequence[str]) -> float:
    """Wall time of one run of `command` (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def alternate(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Run every command once per round, in turn, for `runs` rounds: name -> wall times."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(time_process(command))
    return times


def write_random_file(path: Path, size_mib: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as stream:
        for index in range(size_mib):
            stream.write(block if index % 2 else os.urandom(MIB))


def sum_file_plain(path: Path, read_size: int) -> int:
    """One thread, plain reads of `read_size` into one buffer (the CLI's stream path)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        summer = Cksum()
        sum_stream(fd, summer, read_size)
        return summer.value
    finally:
        os.close(fd)


def sum_file_mapped(path: Path, workers: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return sum_regular_file(fd, os.fstat(fd).st_size, workers).value
    finally:
        os.close(fd)


def whole_process(gnu: str, path: Path, runs: int) -> None:
    python = sys.executable
    commands = {
        "GNU cksum": [gnu, str(path)],
        "python -m backupproto cksum": [python, "-m", "backupproto", "cksum", str(path)],
        "python -m backupproto.io.cli_cksum": [python, "-m", "backupproto.io.cli_cksum", str(path)],
    }
    times = alternate(commands, runs)
    gnu_median = statistics.median(times["GNU cksum"])
    print(f"whole process, {runs} alternating rounds: median / best wall time, speed vs GNU (median)")
    for name, samples in times.items():
        median = statistics.median(samples)
        best = min(samples)
        print(f"  {name:34} {median * 1000:8.0f} ms / {best * 1000:6.0f} ms   {gnu_median / median:5.2f}x")
    with tempfile.NamedTemporaryFile() as empty:
        starts = {name: [*command[:-1], empty.name] for name, command in commands.items()}
        starts["python -c pass"] = [python, "-c", "pass"]
        start_times = alternate(starts, max(runs, 5))
    print("start-up (empty file): median wall time")
    for name, samples in start_times.items():
        print(f"  {name:34} {statistics.median(samples) * 1000:8.1f} ms")


def in_process(gnu: str, path: Path, size: int, repeat: int) -> None:
    t_gnu = best_of(repeat, lambda: time_process([gnu, str(path)]))
    print(f"in process, best of {repeat}; speed vs GNU's whole process ({size / t_gnu / 1e9:.2f} GB/s)")
    cases: dict[str, Callable[[], object]] = {
        f"mapped, {workers} worker(s)": (lambda workers=workers: sum_file_mapped(path, workers))
        for workers in (1, 2, 4)
    }
    for read_kib in (64, 256, 1024):
        cases[f"read {read_kib} KiB, 1 thread"] = lambda kib=read_kib: sum_file_plain(path, kib * 1024)
    cases["cksum_path (CLI's choice)"] = lambda: cksum_path(path)
    for name, action in cases.items():
        elapsed = best_of(repeat, action)
        print(f"  {name:34} {size / elapsed / 1e9:6.2f} GB/s   {t_gnu / elapsed:5.2f}x")


def small_slices(path: Path, repeat: int) -> None:
    with path.open("rb") as stream:
        sample = stream.read(4 * MIB)
    assert zlib_trick_cksum(sample) == cksum(sample)
    t_zlib = best_of(repeat, lambda: zlib_trick_cksum(sample))
    print(f"zlib bit-reversal    {len(sample) / t_zlib / 1e6:10.0f} MB/s  ({len(sample) >> 10} KiB)")
    small = sample[: 256 * 1024]
    assert _reference_cksum(small) == cksum(small)
    t_ref = best_of(1, lambda: _reference_cksum(small))
    print(f"pure-Python table    {len(small) / t_ref / 1e6:10.1f} MB/s  ({len(small) >> 10} KiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="file size (default 2048)")
    parser.add_argument("--runs", type=int, default=5, help="whole-process rounds (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="in-process repeats (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: temp)")
    args = parser.parse_args()
    gnu = shutil.which("cksum")
    if gnu is None:
        print("GNU cksum not found", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "data.bin"
        write_random_file(path, args.size_mib)
        theirs = subprocess.run([gnu, str(path)], capture_output=True, check=True).stdout
        command = [sys.executable, "-m", "backupproto", "cksum", str(path)]
        ours = subprocess.run(command, capture_output=True, check=True, cwd=ROOT).stdout
        assert ours == theirs, (ours, theirs)
        print(f"file: {args.size_mib} MiB in the page cache; CPUs available: {len(os.sched_getaffinity(0))}")
        whole_process(gnu, path, args.runs)
        in_process(gnu, path, args.size_mib * MIB, args.repeat)
        small_slices(path, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
