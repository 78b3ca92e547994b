"""``python -m conformance SUBCOMMAND ...``: the suite's tools besides ``pytest conformance``.

``record``: a transparent proxy writing one session file per connection; ``replay-server``:
play a recorded session's server half to a client and check its requests.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from backupproto.subcommands import Subcommand
from backupproto.subcommands import main as run_subcommand

SUBCOMMANDS: dict[str, Subcommand] = {
    "record": Subcommand(
        "conformance.recording.cli",
        "record client/server conversations through a transparent proxy, one session file per connection",
    ),
    "replay-server": Subcommand(
        "conformance.replay.cli",
        "play a recorded session's server half to a client, checking the client's requests",
    ),
}
"""Subcommand name -> the module implementing it and its help line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m conformance`` with `argv` (default: sys.argv[1:]); the exit status."""
    return run_subcommand("python -m conformance", "backupproto conformance tools", SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
