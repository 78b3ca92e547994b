"""``python -m backupproto cksum [FILE...]``: print what GNU ``cksum FILE...`` prints.

``CRC SIZE NAME`` per file; with no FILE, ``CRC SIZE`` of standard input; ``-`` reads
standard input and prints the name ``-``. A file that cannot be read gets
``cksum: NAME: REASON`` on stderr (name quoted like GNU's), the others go on, and the exit
status is 1. File names are printed raw, as GNU does in its default CRC mode.
"""

from __future__ import annotations

import argparse
import os
import sys

from backupproto.cksum import cksum_file, cksum_stream

HELP = "print the POSIX CRC and size of files, exactly as GNU cksum does"

_PROGRAM = "cksum"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%+,-./:@_{}")
_C_ESCAPES = {7: "a", 8: "b", 9: "t", 10: "n", 11: "v", 12: "f", 13: "r"}


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


def run(args: argparse.Namespace) -> int:
    """Checksum every FILE (stdin when none); 0 if all were read, else 1."""
    names: list[str] = args.files
    out = sys.stdout.buffer
    status = 0
    targets: list[str | None] = list(names) if names else [None]
    for name in targets:
        try:
            if name is None or name == "-":
                with open(0, "rb", buffering=0, closefd=False) as stdin:
                    crc, size = cksum_stream(stdin)
            else:
                crc, size = cksum_file(name)
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
