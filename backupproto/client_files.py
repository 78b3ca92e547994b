"""The client's identity files as text: ``me.info`` and ``priv.key`` (pure parsing, no file access).

me.info: line 1 the client name, line 2 the client id as 32 hex characters, line 3 the RSA
private key as base64 of its PKCS#8 DER on one line (readers accept it spread over lines 3+).
priv.key: the same base64 (on one or more lines), or a PEM block.

Every error is a `ClientFileError` with the 1-based `line` at fault; whoever read the file adds
its path (the reference client, the recorder).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final, NamedTuple

from .crypto import RsaKey, export_private_key, import_private_key, public_key_der
from .dialect import V3, Dialect
from .errors import BackupProtoError, CryptoError
from .schemas import check_name

ME_INFO: Final = "me.info"
PRIV_KEY: Final = "priv.key"
TRANSFER_INFO: Final = "transfer.info"

_HEX_ID: Final = re.compile(r"[0-9a-fA-F]{32}")
_BASE64_LINE: Final = re.compile(r"[A-Za-z0-9+/=]*")


class ClientFileError(ValueError):
    """A me.info / priv.key text that cannot be used; `line` is 1-based (None: the whole text)."""

    def __init__(self, line: int | None, detail: str) -> None:
        super().__init__(f"line {line}: {detail}" if line is not None else detail)
        self.line = line
        self.detail = detail


class Identity(NamedTuple):
    """Who a client is on the server: the contents of me.info."""

    name: str
    client_id: bytes
    private_key: RsaKey


def parse_me_info(text: str, dialect: Dialect = V3) -> Identity:
    """The `Identity` in a me.info text; `ClientFileError` naming the line at fault."""
    lines = text.splitlines()
    if not lines:
        raise ClientFileError(1, "empty file; expected name, client id and private key lines")
    if not lines[0].strip():
        raise ClientFileError(1, "the client name is empty")
    name = lines[0].strip()
    try:
        check_name(name, dialect=dialect)
    except BackupProtoError as error:
        raise ClientFileError(1, f"the client name {name!r} cannot be sent: {error.detail}") from None
    if len(lines) < 2:
        raise ClientFileError(2, "missing client id (32 hex characters)")
    id_text = lines[1].strip()
    if not _HEX_ID.fullmatch(id_text):
        raise ClientFileError(2, f"client id {id_text!r} is not 32 hex characters")
    return Identity(name, bytes.fromhex(id_text), _key_from_lines(lines, 3, dialect))


def parse_private_key(text: str, dialect: Dialect = V3) -> RsaKey:
    """The key in a priv.key text: base64 of the PKCS#8 (or PKCS#1) DER on one or more lines, or PEM."""
    lines = text.splitlines()
    if lines and lines[0].strip().startswith("-----BEGIN"):
        try:
            return _checked(import_private_key(text), 1, dialect)
        except CryptoError as error:
            raise ClientFileError(1, f"private key: {error.detail}") from None
    return _key_from_lines(lines, 1, dialect)


def private_key_base64(key: RsaKey) -> str:
    """The one-line base64 of the key's PKCS#8 DER, as me.info line 3 and priv.key hold it."""
    return base64.b64encode(export_private_key(key)).decode("ascii")


def format_transfer_info(server: str, name: str, files: list[str]) -> str:
    """The text of transfer.info (spec 12.1): ``host:port``, the client name, one file per line."""
    return "".join(f"{line}\n" for line in (server, name, *files))


def format_me_info(identity: Identity) -> str:
    """The me.info text of `identity`."""
    return f"{identity.name}\n{identity.client_id.hex()}\n{private_key_base64(identity.private_key)}\n"


def format_private_key(key: RsaKey) -> str:
    """The priv.key text of `key`."""
    return private_key_base64(key) + "\n"


def _key_from_lines(lines: list[str], first: int, dialect: Dialect) -> RsaKey:
    key_lines = [(number, text.strip()) for number, text in enumerate(lines[first - 1 :], start=first)]
    key_lines = [(number, text) for number, text in key_lines if text]
    if not key_lines:
        raise ClientFileError(first, "missing private key (base64 of the PKCS#8 DER)")
    for number, text in key_lines:
        if not _BASE64_LINE.fullmatch(text):
            bad = next(ch for ch in text if not _BASE64_LINE.fullmatch(ch))
            raise ClientFileError(number, f"private key: {bad!r} is not a base64 character")
    start = key_lines[0][0]
    try:
        der = base64.b64decode("".join(text for _, text in key_lines), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ClientFileError(start, f"private key: not valid base64 ({error})") from None
    try:
        key = import_private_key(der)
    except CryptoError as error:
        raise ClientFileError(start, f"private key: {error.detail}") from None
    return _checked(key, start, dialect)


def _checked(key: RsaKey, line: int, dialect: Dialect) -> RsaKey:
    if key.size_in_bits() != dialect.rsa_bits or len(public_key_der(key)) > dialect.public_key_size:
        raise ClientFileError(
            line, f"private key: RSA-{key.size_in_bits()}; the protocol needs RSA-{dialect.rsa_bits}"
        )
    return key
