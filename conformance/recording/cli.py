"""``python -m conformance record --listen HOST:PORT --target HOST:PORT --out DIR [--client-dir DIR]``.

A transparent TCP proxy between a client and a server that writes one session file per
connection into DIR (spec/sessions.md). With ``--client-dir`` (the recorded client's folder,
holding ``me.info`` / ``priv.key``) file contents are decrypted and kept as plaintext, which
makes the sessions replayable. Stops on Ctrl-C (or after ``--connections N``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backupproto.address import Address, AddressError, parse_address
from backupproto.dialect import DIALECTS, V3, dialect_named

from .proxy import Recorder


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except AddressError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _listen_address(text: str) -> Address:
    try:
        return parse_address(text, allow_port_zero=True)
    except AddressError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options."""
    parser.add_argument(
        "--listen",
        required=True,
        type=_listen_address,
        metavar="HOST:PORT",
        help="where the proxy accepts clients (port 0: any free port)",
    )
    parser.add_argument(
        "--target", required=True, type=_address, metavar="HOST:PORT", help="the server to relay to"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the session files")
    parser.add_argument(
        "--client-dir",
        type=Path,
        metavar="DIR",
        help="the recorded client's folder (me.info / priv.key), to keep file plaintexts",
    )
    parser.add_argument(
        "--dialect",
        type=dialect_named,
        default=V3,
        metavar="NAME",
        help=f"the dialect client and server speak ({', '.join(DIALECTS)}; default {V3.name})",
    )
    parser.add_argument("--prefix", default="session-", help="session file name prefix (default: session-)")
    parser.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help="stop after N connections were recorded (default: run until interrupted)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the proxy; print where it listens and each session written."""
    ends = (args.listen, args.target, args.out)
    try:
        recorder = Recorder(*ends, client_dir=args.client_dir, name_prefix=args.prefix, dialect=args.dialect)
    except OSError as error:
        print(f"record: cannot listen on {args.listen}: {error}", file=sys.stderr)
        return 2
    print(f"recording on {recorder.address} -> {args.target}, sessions in {args.out}", flush=True)
    recorder.start()
    reported = 0
    try:
        while args.connections is None or reported < args.connections:
            for path in recorder.wait_for(reported + 1, timeout=0.2)[reported:]:
                print(f"wrote {path}", flush=True)
                reported += 1
            for failure in recorder.failures:
                print(f"record: {failure}", file=sys.stderr)
            recorder.failures.clear()
    except KeyboardInterrupt:
        pass
    finally:
        recorder.stop()
        for path in recorder.written[reported:]:
            print(f"wrote {path}", flush=True)
    return 0
