"""``python -m conformance replay-server --session FILE [--listen HOST:PORT]``: check a client against
a recorded session's server half; prints PASS or FAIL with the first mismatch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backupproto.address import Address, parse_address
from backupproto.errors import BackupProtoError
from backupproto.sessions import SessionError

from ..recording.files import load
from .report import ReplayMismatch
from .server_half import ReplayServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options."""
    parser.add_argument("--session", required=True, type=Path, metavar="FILE", help="the session file")
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="where to listen")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each request")


def run(args: argparse.Namespace) -> int:
    """Serve one replay of the session; exit 0 if the client behaved as recorded."""
    try:
        session = load(args.session)
        server = ReplayServer(
            session, parse_address(args.listen, allow_port_zero=True), timeout=args.timeout
        ).start()
    except (SessionError, OSError, ValueError) as error:
        print(f"replay-server: {error}", file=sys.stderr)
        return 2
    print(f"listening on {Address(*server.address)}", flush=True)
    try:
        report = server.wait(timeout=args.timeout * (len(session.messages) + 1))
    except ReplayMismatch as mismatch:
        print(f"FAIL {mismatch}", flush=True)
        return 1
    except BackupProtoError as error:
        print(f"FAIL session {session.name!r}: {error}", flush=True)
        return 1
    print(f"PASS {report.session}: {report.messages} messages, {report.connections} connections", flush=True)
    return 0
