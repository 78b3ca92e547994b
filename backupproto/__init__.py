"""backupproto: the encrypted file-backup protocol, version 3, as a sans-I/O library."""

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
