"""The client's working folder of one case (spec 12): transfer.info naming the scripted server,
the files it lists, and for a returning client me.info and priv.key; and reading back what the
client wrote there."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from Crypto.IO import PKCS8

from backupproto import crypto
from backupproto.client_files import (
    ME_INFO,
    PRIV_KEY,
    TRANSFER_INFO,
    ClientFileError,
    Identity,
    format_me_info,
    format_private_key,
    format_transfer_info,
    parse_me_info,
    parse_private_key,
)

__all__ = ["ME_INFO", "PRIV_KEY", "TRANSFER_INFO", "BadClientFile", "Identity", "listing", "prepare"]


def prepare(
    folder: Path,
    server: str,
    name: str,
    files: dict[str, bytes],
    *,
    identity: Identity | None = None,
    template: Path | None = None,
) -> list[Path]:
    """Fill `folder` (the template's files first); return the paths of the files to back up."""
    folder.mkdir(parents=True, exist_ok=True)
    if template is not None:
        shutil.copytree(template, folder, dirs_exist_ok=True)
    paths = []
    for file_name, content in files.items():
        path = folder / file_name
        path.write_bytes(content)
        paths.append(path)
    (folder / TRANSFER_INFO).write_text(format_transfer_info(server, name, [str(path) for path in paths]))
    if identity is not None:
        (folder / ME_INFO).write_text(format_me_info(identity))
        (folder / PRIV_KEY).write_text(format_private_key(identity.private_key))
    return paths


class BadClientFile(Exception):
    """me.info or priv.key is not as spec 12 says writers write it (the message says how)."""


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("ascii")
    except UnicodeDecodeError as error:
        raise BadClientFile(f"{path.name} is not ASCII text (byte {error.start})") from None


def _written_key_line(path: Path, lines: list[str], number: int) -> None:
    """Writers put the key on ONE line, base64 of the PKCS#8 DER (readers accept more)."""
    if len(lines) != number:
        raise BadClientFile(f"{path.name} has {len(lines)} non-empty lines; a writer writes {number}")
    try:
        PKCS8.unwrap(base64.b64decode(lines[-1]))
    except ValueError as error:
        raise BadClientFile(f"{path.name} line {number}: not the base64 of a PKCS#8 DER ({error})") from None


def read_me_info(path: Path) -> Identity:
    """me.info as spec 12.2 says a writer writes it: name, 32 hex digits, one line of PKCS#8."""
    identity: Identity = _read_written(path, parse_me_info, 3)
    return identity


def read_priv_key(path: Path) -> crypto.RsaKey:
    """priv.key as spec 12.3 says a writer writes it: one line, base64 of the PKCS#8 DER."""
    key: crypto.RsaKey = _read_written(path, parse_private_key, 1)
    return key


def _read_written(path: Path, parse: Callable[[str], Any], lines: int) -> Any:
    """Parse with backupproto's reader, then hold the file to the writers' form (`lines` lines)."""
    text = _text(path)
    try:
        value = parse(text)
    except ClientFileError as error:
        raise BadClientFile(f"{path.name} {error}") from None
    _written_key_line(path, [line for line in text.splitlines() if line.strip()], lines)
    return value


def listing(folder: Path) -> list[str]:
    """What the folder holds (name, size; me.info and priv.key shown without the key)."""
    if not folder.is_dir():
        return [f"(the folder {folder} does not exist)"]
    shown = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            shown.append(f"{path.name}/")
            continue
        shown.append(f"{path.name} ({path.stat().st_size} bytes)")
        if path.name == ME_INFO:
            lines = path.read_bytes().splitlines()
            shown += [f"    {line[:60]!r}{'...' if len(line) > 60 else ''}" for line in lines[:4]]
    return shown
