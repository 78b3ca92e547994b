"""The client's files: `transfer.info` (what to send where) and `me.info` / `priv.key` (who we are).

Every reading error is a `ConfigError` naming the file and the 1-based line at fault.

transfer.info: line 1 ``host:port`` (or a host alone: the dialect's default port), line 2 the
client name (1..100 printable ASCII characters), lines 3+ one file path per line (relative
paths are relative to the folder of transfer.info; blank lines are skipped).

me.info: line 1 the name, line 2 the client id as 32 hex characters, line 3 the RSA private
key as base64 of its PKCS#8 DER on one line (readers accept it spread over lines 3+).
priv.key holds the same base64 line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from backupproto.address import Address, AddressError, parse_address
from backupproto.client_files import (
    ME_INFO,
    PRIV_KEY,
    TRANSFER_INFO,
    ClientFileError,
    Identity,
    format_me_info,
    format_private_key,
    parse_me_info,
    parse_private_key,
    private_key_base64,
)
from backupproto.crypto import RsaKey
from backupproto.errors import BackupProtoError
from backupproto.schemas import check_name

from .atomic import write_atomically
from .errors import ConfigError

MAX_CLIENT_NAME: Final = 100
"""The reference client's limit on names (the protocol itself allows 254)."""

Server = Address
"""Where the server listens (the one HOST:PORT type of backupproto)."""


@dataclass(frozen=True)
class ListedFile:
    """A file to back up and where it was named (for error messages)."""

    path: Path
    origin: Path
    line: int | None

    @property
    def file_name(self) -> str:
        """The name sent on the wire: the last part of the path."""
        return self.path.name


@dataclass(frozen=True)
class TransferInfo:
    """The contents of transfer.info, after options have overridden some lines."""

    server: Server
    name: str
    files: tuple[ListedFile, ...]


# --- single values --------------------------------------------------------------------------


def parse_server(text: str, path: Path | str, line: int | None, default_port: int | None = None) -> Server:
    """``host:port`` (IPv6 hosts in brackets) -> Server; ConfigError otherwise. With `default_port`
    (the dialect's), a host alone (``localhost``, ``[::1]``) is accepted and gets that port."""
    value = text.strip()
    if default_port is not None and (":" not in value or value.endswith("]")):
        text = f"{value}:{default_port}"
    try:
        return parse_address(text)
    except AddressError as error:
        raise ConfigError(path, line, str(error)) from None


def check_client_name(text: str, path: Path | str, line: int | None) -> str:
    """A client name of 1..100 printable ASCII characters; ConfigError otherwise."""
    name = text.strip()
    if not name:
        raise ConfigError(path, line, "the client name is empty")
    if len(name) > MAX_CLIENT_NAME:
        raise ConfigError(
            path, line, f"the client name has {len(name)} characters; at most {MAX_CLIENT_NAME} are allowed"
        )
    try:
        check_name(name)
    except BackupProtoError as error:
        raise ConfigError(path, line, f"the client name {name!r} cannot be sent: {error.detail}") from None
    return name


def check_listed_file(path: Path, origin: Path, line: int | None) -> ListedFile:
    """A readable regular file whose name the protocol can carry; ConfigError otherwise."""
    where = origin if line is not None else path
    if not path.exists():
        raise ConfigError(where, line, f"file not found: {path}")
    if not path.is_file():
        raise ConfigError(where, line, f"not a regular file: {path}")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ConfigError(where, line, f"cannot read {path}: {error.strerror}") from None
    try:
        check_name(path.name, file_name=True)
    except BackupProtoError as error:
        raise ConfigError(where, line, f"file name {path.name!r} cannot be sent: {error.detail}") from None
    return ListedFile(path, origin, line)


# --- transfer.info --------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except OSError as error:
        raise ConfigError(path, None, f"cannot read: {error.strerror}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ConfigError(path, line, f"byte 0x{raw[error.start]:02x} is not ASCII") from None
    return text.splitlines()


def load_transfer_info(
    path: Path,
    *,
    server: str | None = None,
    name: str | None = None,
    files: list[str] | None = None,
    default_port: int | None = None,
) -> TransferInfo:
    """Read transfer.info, where each given option replaces its line (a file is not needed
    when all three are given). Listed files are checked to exist and to have sendable names.
    `default_port`: the port of a server address given without one (the dialect's)."""
    lines: list[str] = []
    if server is None or name is None or not files:
        lines = _read_lines(path)
    if server is not None:
        parsed_server = parse_server(server, "--server", None, default_port)
    elif not lines or not lines[0].strip():
        raise ConfigError(path, 1, "missing server address (host:port)")
    else:
        parsed_server = parse_server(lines[0], path, 1, default_port)
    if name is not None:
        client_name = check_client_name(name, "--name", None)
    elif len(lines) < 2:
        raise ConfigError(path, 2, "missing client name")
    else:
        client_name = check_client_name(lines[1], path, 2)
    if files:
        listed = [check_listed_file(Path(arg), Path(arg), None) for arg in files]
    else:
        listed = [
            check_listed_file(path.parent / text.strip(), path, number)
            for number, text in enumerate(lines[2:], start=3)
            if text.strip()
        ]
        if not listed:
            raise ConfigError(path, max(3, len(lines) + 1), "no file to back up (list one path per line)")
    _refuse_duplicate_names(listed)
    return TransferInfo(parsed_server, client_name, tuple(listed))


def _refuse_duplicate_names(listed: list[ListedFile]) -> None:
    """Two files with the same name would overwrite each other on the server."""
    seen: dict[str, ListedFile] = {}
    for item in listed:
        first = seen.setdefault(item.file_name, item)
        if first is not item:
            where = f"line {first.line}" if first.line is not None else str(first.path)
            raise ConfigError(
                item.origin,
                item.line,
                f"file name {item.file_name!r} is also sent from {where}; the server would keep only one",
            )


# --- me.info / priv.key ---------------------------------------------------------------------


def read_identity(path: Path) -> Identity:
    """Read me.info; ConfigError naming the line at fault."""
    try:
        identity = parse_me_info("\n".join(_read_lines(path)))
    except ClientFileError as error:
        raise ConfigError(path, error.line, error.detail) from None
    check_client_name(identity.name, path, 1)
    return identity


def read_private_key_file(path: Path) -> RsaKey:
    """Read priv.key: base64 of the PKCS#8 (or PKCS#1) DER on one or more lines, or PEM."""
    try:
        return parse_private_key("\n".join(_read_lines(path)))
    except ClientFileError as error:
        raise ConfigError(path, error.line, error.detail) from None


def write_identity(folder: Path, identity: Identity) -> None:
    """Write priv.key, then me.info, each atomically (me.info last: its presence means complete)."""
    write_atomically(folder / PRIV_KEY, format_private_key(identity.private_key))
    write_atomically(folder / ME_INFO, format_me_info(identity))


__all__ = [
    "ME_INFO",
    "PRIV_KEY",
    "TRANSFER_INFO",
    "Identity",
    "ListedFile",
    "Server",
    "TransferInfo",
    "check_client_name",
    "check_listed_file",
    "load_transfer_info",
    "parse_server",
    "private_key_base64",
    "read_identity",
    "read_private_key_file",
    "write_identity",
]
