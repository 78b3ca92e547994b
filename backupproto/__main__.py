"""``python -m backupproto SUBCOMMAND ...``: the command-line tools of the library.

Recording and replaying sessions are the suite's tools: ``python -m conformance record|replay-server``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from backupproto.subcommands import Subcommand
from backupproto.subcommands import main as run_subcommand

SUBCOMMANDS: dict[str, Subcommand] = {
    "cksum": Subcommand(
        "backupproto.io.cli_cksum", "print the POSIX CRC and size of files, exactly as GNU cksum does"
    ),
}
"""Subcommand name -> the module implementing it and its help line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m backupproto`` with `argv` (default: sys.argv[1:]); the exit status."""
    return run_subcommand("python -m backupproto", "backupproto command-line tools", SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
