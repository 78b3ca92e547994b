"""backupproto: the encrypted file-backup protocol, version 3, as a sans-I/O library.

The names below are imported on first use (PEP 562), so that ``python -m backupproto cksum``
starts without loading the protocol modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dialect import V3, Dialect, RequestCode, ResponseCode
    from .errors import (
        BackupProtoError,
        CryptoError,
        ErrorKind,
        LocalProtocolError,
        MalformedMessage,
        ProtocolError,
        RemoteProtocolError,
    )

_HOMES = {
    "V3": "dialect",
    "Dialect": "dialect",
    "RequestCode": "dialect",
    "ResponseCode": "dialect",
    "BackupProtoError": "errors",
    "CryptoError": "errors",
    "ErrorKind": "errors",
    "LocalProtocolError": "errors",
    "MalformedMessage": "errors",
    "ProtocolError": "errors",
    "RemoteProtocolError": "errors",
}

__all__ = [
    "V3",
    "BackupProtoError",
    "CryptoError",
    "Dialect",
    "ErrorKind",
    "LocalProtocolError",
    "MalformedMessage",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestCode",
    "ResponseCode",
]

__version__ = "0.1.0"
"""The package version, its single source (pyproject.toml reads it from here)."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'backupproto' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
