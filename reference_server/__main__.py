"""`python -m reference_server` / `backup-server`: parse options, start, print `listening on HOST:PORT`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from backupproto import __version__
from backupproto.dialect import DIALECTS, Dialect, dialect_named

from .config import MAX_CONTENT_SIZE, ServerConfig, port_from_file
from .errors import StartupError
from .server import Server

log = logging.getLogger("reference_server")

_DEFAULT = {field.name: field.default for field in dataclasses.fields(ServerConfig)}
"""The options' defaults: ServerConfig's (spec section 10), written once there."""


def _positive(kind: type[int] | type[float]) -> type:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse  # type: ignore[return-value]


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 0..65535")
    return int(text)


def _file_size(text: str) -> int:
    value = _positive(int)(text)
    if not 16 <= value <= MAX_CONTENT_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is outside 16..{MAX_CONTENT_SIZE}")
    return int(value)


def _dialect(text: str) -> Dialect:
    try:
        return dialect_named(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _dialect_lines() -> str:
    return "\n".join(
        f"  {d.name}: {d.describe().split(': ', 1)[1]}; port {d.default_port}, {d.database_name}"
        for d in DIALECTS.values()
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="backup-server",
        description="Reference server of the encrypted backup protocol, version 3.",
        epilog="dialects (--dialect; the default port and database follow it):\n" + _dialect_lines(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--dialect",
        type=_dialect,
        default=_DEFAULT["dialect"],
        metavar="NAME",
        help=f"dialect to speak: {', '.join(DIALECTS)} (default {_DEFAULT['dialect'].name}; "
        "a data dir keeps the dialect it was created with)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        help="port to listen on (0: any free port; default: port.info, else the dialect's port)",
    )
    parser.add_argument(
        "--host",
        default=_DEFAULT["host"],
        help="address to listen on (default %(default)s: loopback only; use 0.0.0.0 to serve the network)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("."),
        help="folder of port.info, the database (server.db or defensive.db, by dialect) and the client "
        "folders (default: the current folder)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO"
    )
    parser.add_argument(
        "--max-connections",
        type=_positive(int),
        default=_DEFAULT["max_connections"],
        help="connections at once; at the limit the longest-idle one is dropped (default %(default)s)",
    )
    parser.add_argument(
        "--max-per-address",
        type=_non_negative,
        default=_DEFAULT["max_per_address"],
        help="connections at once from one IP address (0: no cap; default %(default)s)",
    )
    parser.add_argument(
        "--min-idle-to-drop",
        type=_non_negative_float,
        default=_DEFAULT["min_idle_to_drop"],
        help="seconds a connection must be idle before it may be dropped to make room (default %(default)g)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive(float),
        default=_DEFAULT["idle_timeout"],
        help="seconds between requests (default %(default)g)",
    )
    parser.add_argument(
        "--read-timeout",
        type=_positive(float),
        default=_DEFAULT["read_timeout"],
        help="seconds a started message may take to arrive whole (default %(default)g; "
        "file content: see --min-rate)",
    )
    parser.add_argument(
        "--min-rate",
        type=_positive(float),
        default=_DEFAULT["min_rate"],
        help="bytes/s file content must keep up, on top of --read-timeout (default %(default)g)",
    )
    parser.add_argument(
        "--summary-interval",
        type=_positive(float),
        default=_DEFAULT["summary_interval"],
        help="seconds between summary lines of refused/dropped connections (default %(default)g)",
    )
    parser.add_argument(
        "--max-file-size",
        type=_file_size,
        default=_DEFAULT["max_file_size"],
        help="largest accepted content_size (encrypted bytes; default %(default)s, the protocol max)",
    )
    parser.add_argument(
        "--keep-versions",
        type=_non_negative,
        default=_DEFAULT["keep_versions"],
        help="older verified versions kept per file once a newer one is verified (default %(default)s)",
    )
    parser.add_argument(
        "--max-decrypt-failures",
        type=_positive(int),
        default=_DEFAULT["max_decrypt_failures"],
        help="failed decryptions of one client id that lock it out (default %(default)s)",
    )
    parser.add_argument(
        "--decrypt-lockout",
        type=_positive(float),
        default=_DEFAULT["decrypt_lockout"],
        help="seconds a locked-out client id is refused 1102/1103 (default %(default)g)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; 0 after a clean stop, 1 if it cannot start."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    port = args.port
    if port is None:
        port, warning = port_from_file(args.data_dir, args.dialect.default_port)
        if warning is not None:
            log.warning("%s", warning)
    config = ServerConfig(
        data_dir=args.data_dir,
        dialect=args.dialect,
        host=args.host,
        port=port,
        max_connections=args.max_connections,
        max_per_address=args.max_per_address,
        min_idle_to_drop=args.min_idle_to_drop,
        idle_timeout=args.idle_timeout,
        read_timeout=args.read_timeout,
        min_rate=args.min_rate,
        summary_interval=args.summary_interval,
        max_file_size=args.max_file_size,
        keep_versions=args.keep_versions,
        max_decrypt_failures=args.max_decrypt_failures,
        decrypt_lockout=args.decrypt_lockout,
    )
    try:
        server = Server(config)
        host, bound = server.start()
    except StartupError as error:
        log.error("cannot start: %s", error)
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.stop())
    print(f"listening on {host}:{bound}", flush=True)
    log.info("listening on %s:%d (dialect %s)", host, bound, args.dialect.name)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
