"""`backup-client` / `python -m reference_client`: batch backups driven by transfer.info."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from backupproto import __version__
from backupproto.client_timing import (
    CONNECT_TIMEOUT_S,
    FLUSH_BYTES_PER_S,
    RESPONSE_TIMEOUT_S,
    RETRIES,
    RETRY_DELAY_S,
)
from backupproto.dialect import DIALECTS, V3, Dialect, dialect_named
from backupproto.errors import BackupProtoError

from .config import TRANSFER_INFO, load_transfer_info
from .errors import ClientError, ConfigError, FatalError
from .flow import BackupClient
from .report import ConsoleReporter

EXIT_OK: Final = 0
EXIT_FILE_FAILED: Final = 1
EXIT_CONFIG: Final = 2
EXIT_FATAL: Final = 3
EXIT_INTERRUPTED: Final = 130


def _dialect_lines() -> str:
    """One help line per dialect: name, default port, AES key, how a file travels, reconnect."""
    lines = []
    for dialect in DIALECTS.values():
        default = " (default)" if dialect is V3 else ""
        sending = "packets" if dialect.packetised else "one message"
        reconnect = "reconnect" if dialect.has_reconnect else "no reconnect (a returning client re-keys)"
        lines.append(
            f"  {dialect.name}{default}: port {dialect.default_port}, AES-{dialect.aes_key_size * 8}, "
            f"files in {sending}, {reconnect}"
        )
    return "\n".join(lines)


EPILOG = f"""\
dialects (--dialect; the server's dialect must be the same):
{_dialect_lines()}
  The dialect is chosen on the command line only: transfer.info keeps the format every
  implementation reads (line 3+ are files), and me.info is the same in every dialect.

files (in the working folder, or --dir):
  transfer.info  line 1 host:port (a host alone: the dialect's default port),
                 line 2 client name (1..100 characters),
                 lines 3+ the files to back up, one path per line
  me.info        written at registration: name, client id (32 hex), private key (base64)
  priv.key       the same private key (base64 of PKCS#8 DER)

exit status:
  {EXIT_OK}    every file was backed up and its CRC verified by the server
  {EXIT_FILE_FAILED}    the run completed but some file failed (CRC mismatch on all 3 sends,
       file changed while read, too large, unreadable)
  {EXIT_CONFIG}    usage or configuration error (bad option, transfer.info, me.info, a missing
       file); nothing was sent
  {EXIT_FATAL}    fatal: server unreachable or answered errors (2107, or the dialect's code; a
       close in 2022C) on every attempt (1 + --retries), stayed silent for the response
       timeout (--timeout; not retried), broke the protocol, the client name is taken, or
       the server answered in another dialect (the message names it)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="backup-client",
        description="Back files up to a backupproto v3 server, encrypted, with CRC verification.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("files", nargs="*", metavar="FILE", help="files to back up (replace lines 3+)")
    parser.add_argument("--dir", type=Path, default=Path("."), help="folder of transfer.info and me.info")
    parser.add_argument("--server", metavar="HOST:PORT", help="server address (replaces line 1)")
    parser.add_argument("--name", help="client name (replaces line 2)")
    parser.add_argument(
        "--dialect",
        type=_dialect,
        default=V3,
        metavar="NAME",
        help=f"protocol dialect: {', '.join(DIALECTS)} (default {V3.name}; see below)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"give up a connection attempt after S seconds (retried), default {CONNECT_TIMEOUT_S:g}",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=RESPONSE_TIMEOUT_S,
        metavar="S",
        help=f"response timeout: wait S seconds for an answer (a file's: 1 s more per "
        f"{FLUSH_BYTES_PER_S >> 20} MiB), then Fatal without a retry; default {RESPONSE_TIMEOUT_S:g}",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=RETRIES,
        metavar="N",
        help=f"retries after an error (per file), default {RETRIES}",
    )
    parser.add_argument(
        "--retry-delay",
        type=_seconds,
        default=RETRY_DELAY_S,
        metavar="S",
        help=f"wait before the first retry, doubling; default {RETRY_DELAY_S:g}",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser


def _dialect(text: str) -> Dialect:
    try:
        return dialect_named(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run a batch backup; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.retries < 0:
        print("Fatal: --retries must be 0 or more", file=sys.stderr)
        return EXIT_CONFIG
    reporter = ConsoleReporter(sys.stdout, sys.stderr, terminal=sys.stderr.isatty(), quiet=args.quiet)
    try:
        info = load_transfer_info(
            args.dir / TRANSFER_INFO,
            server=args.server,
            name=args.name,
            files=args.files or None,
            default_port=args.dialect.default_port,
        )
        client = BackupClient(
            info.server,
            info.name,
            args.dir,
            connect_timeout=args.connect_timeout,
            read_timeout=args.timeout,
            retries=args.retries,
            retry_delay=args.retry_delay,
            dialect=args.dialect,
            reporter=reporter,
        )
        results = client.backup_many(info.files)
    except ConfigError as error:
        print(f"Fatal: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except FatalError as error:
        print(f"Fatal: {error}", file=sys.stderr)
        return EXIT_FATAL
    except ClientError as error:
        print(f"Fatal: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except BackupProtoError as error:  # a bug of this client: say so plainly
        print(f"Fatal: internal error of backup-client: {error}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = [result for result in results if not result.ok]
    reporter.info(f"{len(results) - len(failed)} of {len(results)} file(s) verified")
    return EXIT_FILE_FAILED if failed else EXIT_OK
