"""The reference client of backupproto v3: batch, encrypted, CRC-verified backups.

Use `BackupClient` from Python, or the `backup-client` command (see `cli`).
"""

from .config import Identity, ListedFile, Server, TransferInfo, load_transfer_info, read_identity
from .errors import ClientError, ConfigError, FatalError
from .flow import BackupClient
from .progress import ProgressMeter
from .results import BackupResult, FileStatus

__all__ = [
    "BackupClient",
    "BackupResult",
    "ClientError",
    "ConfigError",
    "FatalError",
    "FileStatus",
    "Identity",
    "ListedFile",
    "ProgressMeter",
    "Server",
    "TransferInfo",
    "load_transfer_info",
    "read_identity",
]
