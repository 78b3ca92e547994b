"""``python -m backupproto cksum [FILE...]``: print what GNU ``cksum FILE...`` prints.

``CRC SIZE NAME`` per file; with no FILE, ``CRC SIZE`` of standard input; ``-`` reads
standard input and prints the name ``-``. A file that cannot be read gets
``cksum: NAME: REASON`` on stderr (name quoted like GNU's), the others go on, and the exit
status is 1. File names are printed raw, as GNU does in its default CRC mode.

Speed: a regular file of at least `SPLIT_MIN` bytes is cut into one consecutive part per
available CPU (at most `MAX_WORKERS`); each part is mapped `WINDOW` bytes at a time (no copy
out of the page cache) and summed in its own thread (fastcrc releases the GIL), then the
parts' sums are joined with `Cksum.extend`. Whatever the file gained after it was measured is
read on to its end, as GNU does. Smaller files, pipes and standard input are read in
`READ_SIZE` chunks into one reused buffer. Memory stays constant for any file size. Like
any reader of mapped files, the process gets SIGBUS if the file is truncated while mapped.
"""

from __future__ import annotations

import argparse
import errno
import mmap
import os
import stat
import sys
import threading
from collections.abc import Sequence

from backupproto.cksum import Cksum

HELP = "print the POSIX CRC and size of files, exactly as GNU cksum does"

_PROGRAM = "cksum"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%+,-./:@_{}")
_C_ESCAPES = {7: "a", 8: "b", 9: "t", 10: "n", 11: "v", 12: "f", 13: "r"}

READ_SIZE = 1 << 20
"""Read size for streams and small files (measured with benchmarks/bench_cksum.py)."""
WINDOW = 8 << 20
"""Bytes of a large file mapped and summed at a time by one worker (8 MiB measured faster than 64)."""
SPLIT_MIN = 64 << 20
"""Smallest part a worker gets; files below it are read, not mapped."""
MAX_WORKERS = 4
_UNMAPPABLE = frozenset({errno.ENODEV, errno.EINVAL, errno.EACCES, errno.ENOTSUP})
_MAP_OPTIONS: dict[str, int] = (  # read-only; pages mapped up front where Linux allows it
    {"flags": mmap.MAP_SHARED | mmap.MAP_POPULATE, "prot": mmap.PROT_READ}
    if hasattr(mmap, "MAP_POPULATE")
    else {"access": mmap.ACCESS_READ}
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the FILE operands."""
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to check ('-': stdin)")


def quote_name(name: str) -> str:
    """Quote a file name for a diagnostic the way GNU coreutils' ``quotef`` does (mostly).

    Plain names stay bare; names with shell-special characters are single-quoted (double
    quotes if they contain a single quote and nothing special inside double quotes);
    control characters become ``'$'\\n''`` pieces.
    """
    bare = all(ch in _SAFE or ord(ch) > 0x7F for ch in name)
    if bare and name and name[0] not in "~#" and name not in ("{", "}"):
        return name
    if "'" in name and not any(ch in name for ch in '"$`\\!') and name.isprintable():
        return f'"{name}"'
    out = ["'"]
    for ch in name:
        code = ord(ch)
        if ch == "'":
            out.append("'\\''")
        elif code < 0x20 or code == 0x7F:
            escaped = _C_ESCAPES.get(code, f"{code:03o}")
            out.append(f"'$'\\{escaped}''")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out).replace("''''", "''").removeprefix("''").removesuffix("''") or "''"


def _report(name: str, error: OSError) -> None:
    reason = os.strerror(error.errno) if error.errno else str(error)
    sys.stderr.write(f"{_PROGRAM}: {quote_name(name)}: {reason}\n")
    sys.stderr.flush()


def sum_stream(fd: int, summer: Cksum, read_size: int = READ_SIZE) -> None:
    """Add everything left in the open file `fd` to `summer`, read into one reused buffer."""
    buffer = bytearray(read_size)
    view = memoryview(buffer)
    while count := os.readv(fd, (buffer,)):
        summer.update(view[:count] if count < read_size else view)


def sum_range(fd: int, start: int, end: int, window: int = WINDOW) -> Cksum:
    """The sum of bytes [start, end) of the regular file `fd`, mapped `window` bytes at a time.

    `start` is a multiple of ``mmap.ALLOCATIONGRANULARITY``. A file system that cannot map
    the file gets it read with ``pread`` instead.
    """
    summer = Cksum()
    position = start
    try:
        while position < end:
            length = min(window, end - position)
            mapped = mmap.mmap(fd, length, offset=position, **_MAP_OPTIONS)
            with mapped, memoryview(mapped) as view:
                summer.update(view)
            position += length
    except OSError as error:
        if error.errno not in _UNMAPPABLE:
            raise
        buffer = bytearray(READ_SIZE)
        while position < end:
            count = os.preadv(fd, (memoryview(buffer)[: end - position],), position)
            if not count:
                break
            summer.update(memoryview(buffer)[:count])
            position += count
    return summer


def worker_count(size: int) -> int:
    """How many parts to sum a file of `size` bytes in: one per CPU, each at least SPLIT_MIN."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS, size // SPLIT_MIN))


def sum_regular_file(fd: int, size: int, workers: int) -> Cksum:
    """The sum of the first `size` bytes of `fd`, cut into `workers` parts summed in parallel."""
    granularity = mmap.ALLOCATIONGRANULARITY
    bounds = [size * part // workers // granularity * granularity for part in range(workers)] + [size]
    sums: list[Cksum | BaseException | None] = [None] * workers

    def work(part: int) -> None:
        try:
            sums[part] = sum_range(fd, bounds[part], bounds[part + 1])
        except BaseException as error:  # handed to the main thread
            sums[part] = error

    threads = [threading.Thread(target=work, args=(part,)) for part in range(1, workers)]
    for thread in threads:
        thread.start()
    work(0)
    for thread in threads:
        thread.join()
    total = Cksum()
    for result in sums:
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        total.extend(result)
    return total


def cksum_fd(fd: int) -> tuple[int, int]:
    """(crc, size) of everything from the current position of `fd` (a file, pipe or tty)."""
    info = os.fstat(fd)
    start = os.lseek(fd, 0, os.SEEK_CUR) if stat.S_ISREG(info.st_mode) else 0
    if stat.S_ISREG(info.st_mode) and start == 0 and info.st_size >= SPLIT_MIN:
        summer = sum_regular_file(fd, info.st_size, worker_count(info.st_size))
        os.lseek(fd, info.st_size, os.SEEK_SET)  # then read on whatever was appended since
    else:
        summer = Cksum()
    sum_stream(fd, summer)
    return summer.value, summer.length


def cksum_path(path: str | bytes | os.PathLike[str]) -> tuple[int, int]:
    """(crc, size) of the file at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return cksum_fd(fd)
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> int:
    """Checksum every FILE (stdin when none); 0 if all were read, else 1."""
    names: list[str] = args.files
    out = sys.stdout.buffer
    status = 0
    targets: list[str | None] = list(names) if names else [None]
    for name in targets:
        try:
            crc, size = cksum_fd(0) if name is None or name == "-" else cksum_path(name)
        except OSError as error:
            out.flush()
            _report("-" if name is None else name, error)
            status = 1
            continue
        line = f"{crc} {size}".encode()
        if name is not None:
            line += b" " + os.fsencode(name)
        out.write(line + b"\n")
    out.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backupproto.io.cli_cksum [FILE...]``: the subcommand without the dispatcher."""
    parser = argparse.ArgumentParser(prog="cksum", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
