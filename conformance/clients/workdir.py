"""The client's working folder of one case (spec 12): transfer.info naming the scripted server,
the files it lists, and for a returning client me.info and priv.key; and reading back what the
client wrote there."""

from __future__ import annotations

import base64
import binascii
import shutil
from dataclasses import dataclass
from pathlib import Path

from backupproto import crypto
from backupproto.errors import BackupProtoError

TRANSFER_INFO = "transfer.info"
ME_INFO = "me.info"
PRIV_KEY = "priv.key"


@dataclass(frozen=True)
class Identity:
    """A client's saved identity (me.info): name, id, private key."""

    name: str
    client_id: bytes
    private_key: crypto.RsaKey


def key_base64(key: crypto.RsaKey) -> str:
    """me.info line 3 / priv.key: base64 of the PKCS#8 DER, one line."""
    return base64.b64encode(crypto.export_private_key(key)).decode("ascii")


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
    lines = [server, name, *(str(path) for path in paths)]
    (folder / TRANSFER_INFO).write_text("\n".join(lines) + "\n")
    if identity is not None:
        text = key_base64(identity.private_key)
        (folder / ME_INFO).write_text(f"{identity.name}\n{identity.client_id.hex()}\n{text}\n")
        (folder / PRIV_KEY).write_text(text + "\n")
    return paths


class BadClientFile(Exception):
    """me.info or priv.key does not have the format of spec 12 (the message says how)."""


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError as error:
        raise BadClientFile(f"{path.name} is not ASCII text (byte {error.start})") from None
    return [line.strip() for line in text.splitlines()]


def _key(text: str, where: str) -> crypto.RsaKey:
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadClientFile(f"{where} is not base64: {error}") from None
    try:
        return crypto.import_private_key(der)
    except BackupProtoError as error:
        raise BadClientFile(f"{where} is base64 but not an RSA private key DER: {error}") from None


def read_me_info(path: Path) -> Identity:
    """Parse me.info strictly as spec 12.2 says writers write it."""
    lines = [line for line in _lines(path) if line]
    if len(lines) < 3:
        raise BadClientFile(f"{path.name} has {len(lines)} non-empty lines; expected 3 (name, id, key)")
    name, hex_id = lines[0], lines[1]
    try:
        client_id = bytes.fromhex(hex_id)
    except ValueError:
        client_id = b""
    if len(client_id) != 16 or len(hex_id) != 32:
        raise BadClientFile(f"{path.name} line 2 {hex_id!r} is not 32 hexadecimal digits")
    return Identity(name, client_id, _key("".join(lines[2:]), f"{path.name} line 3"))


def read_priv_key(path: Path) -> crypto.RsaKey:
    """Parse priv.key (one line of base64 PKCS#8 DER, spec 12.3)."""
    lines = [line for line in _lines(path) if line]
    if not lines:
        raise BadClientFile(f"{path.name} is empty")
    return _key("".join(lines), path.name)


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
