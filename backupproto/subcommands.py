"""A command line of subcommands that imports only the chosen one (fast start-up).

A subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``, registered
with its one-line help in a table; ``python -m backupproto`` and ``python -m conformance`` use it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn, Protocol, cast


class Subcommand(NamedTuple):
    """Where a subcommand lives and what it does (its help line)."""

    module: str
    help: str


class SubcommandModule(Protocol):
    """What a subcommand module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class _LazyVersion(argparse.Action):
    """``--version``: prints the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        print(f"{parser.prog} {installed_version()}")
        parser.exit()


def installed_version(distribution: str = "backupproto") -> str:
    """``backupproto.__version__`` if the package declares it, else the installed distribution's version."""
    declared = getattr(importlib.import_module("backupproto"), "__version__", None)
    if isinstance(declared, str):
        return declared
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser(
    prog: str, description: str, table: dict[str, Subcommand], argv: Sequence[str]
) -> argparse.ArgumentParser:
    """The parser: one sub-parser per subcommand; only the one named in `argv` is imported and completed."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action=_LazyVersion)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, spec in table.items():
        sub = subparsers.add_parser(name, help=spec.help, description=spec.help)
        if name == chosen:
            module = cast(SubcommandModule, importlib.import_module(spec.module))
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(prog: str, description: str, table: dict[str, Subcommand], argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen subcommand; its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog, description, table, arguments).parse_args(arguments)
    status: int = args._run(args)
    return status
