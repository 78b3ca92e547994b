"""`python -m reference_server` / `backup-server`: parse options, start, print `listening on HOST:PORT`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from backupproto import __version__

from .config import MAX_CONTENT_SIZE, ServerConfig, port_from_file
from .errors import StartupError
from .server import Server

log = logging.getLogger("reference_server")


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


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 0..65535")
    return int(text)


def _file_size(text: str) -> int:
    value = _positive(int)(text)
    if not 16 <= value <= MAX_CONTENT_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is outside 16..{MAX_CONTENT_SIZE}")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="backup-server", description="Reference server of the encrypted backup protocol, version 3."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--port", type=_port, help="port to listen on (0: any free port; default: port.info, else 1234)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: loopback only; use 0.0.0.0 to serve the network)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("."),
        help="folder of port.info, server.db and the client folders (default: the current folder)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO"
    )
    parser.add_argument("--max-connections", type=_positive(int), default=256, help="default 256")
    parser.add_argument(
        "--idle-timeout", type=_positive(float), default=60.0, help="seconds between requests (default 60)"
    )
    parser.add_argument(
        "--read-timeout",
        type=_positive(float),
        default=30.0,
        help="seconds a started message may stall (default 30)",
    )
    parser.add_argument(
        "--max-file-size",
        type=_file_size,
        default=MAX_CONTENT_SIZE,
        help=f"largest accepted content_size (encrypted bytes; default {MAX_CONTENT_SIZE}, the protocol max)",
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
        port, warning = port_from_file(args.data_dir)
        if warning is not None:
            log.warning("%s", warning)
    config = ServerConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=port,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        read_timeout=args.read_timeout,
        max_file_size=args.max_file_size,
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
    log.info("listening on %s:%d", host, bound)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
