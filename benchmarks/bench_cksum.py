"""Throughput of backupproto.cksum.cksum_file against GNU cksum on the same 256 MiB file.

Run: python benchmarks/bench_cksum.py [--size-mib N] [--repeat N]
Both read the file from the page cache (it was just written); best of `repeat` runs each.
Also: the pure-Python reference and a zlib.crc32 bit-reversal trick, on a small slice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backupproto.cksum import _reference_cksum, cksum, cksum_file

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    gnu = shutil.which("cksum")
    if gnu is None:
        print("GNU cksum not found", file=sys.stderr)
        return 1
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.bin"
        with path.open("wb") as stream:
            for _ in range(args.size_mib):
                stream.write(os.urandom(MIB))
        ours = cksum_file(path)
        theirs = subprocess.run([gnu, str(path)], capture_output=True, check=True).stdout
        assert theirs.split()[:2] == [str(ours[0]).encode(), str(ours[1]).encode()], theirs
        t_gnu = best_of(
            args.repeat, lambda: subprocess.run([gnu, str(path)], check=True, stdout=subprocess.DEVNULL)
        )
        t_ours = best_of(args.repeat, lambda: cksum_file(path))
        mb_gnu, mb_ours = size / t_gnu / 1e6, size / t_ours / 1e6
        print(f"file: {args.size_mib} MiB, best of {args.repeat}")
        print(f"GNU cksum            {mb_gnu:10.0f} MB/s  ({t_gnu * 1000:.1f} ms)")
        print(f"cksum_file (fastcrc) {mb_ours:10.0f} MB/s  ({t_ours * 1000:.1f} ms)")
        print(f"ratio ours/GNU       {mb_ours / mb_gnu:10.2f}")
        sample = path.read_bytes()[: 4 * MIB]
        assert zlib_trick_cksum(sample) == cksum(sample)
        t_zlib = best_of(args.repeat, lambda: zlib_trick_cksum(sample))
        print(f"zlib bit-reversal    {len(sample) / t_zlib / 1e6:10.0f} MB/s  (4 MiB in memory)")
        small = sample[: 256 * 1024]
        assert _reference_cksum(small) == cksum(small)
        t_ref = best_of(1, lambda: _reference_cksum(small))
        print(f"pure-Python table    {len(small) / t_ref / 1e6:10.1f} MB/s  (256 KiB in memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
