"""What became of each file."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class FileStatus(StrEnum):
    """The outcome of one file's backup."""

    VERIFIED = "verified"
    """The server's CRC matched ours and it marked the file verified (2104 after 1104)."""
    CRC_MISMATCH = "crc_mismatch"
    """Every allowed send gave another CRC than ours; we sent 1106 (the server keeps it unverified)."""
    CHANGED = "changed"
    """The file changed while it was being read, at every send; we sent 1106."""
    UNREADABLE = "unreadable"
    """The file could not be opened when its turn came; nothing was sent."""
    TOO_LARGE = "too_large"
    """Larger than a 1103 can carry; nothing was sent."""


@dataclass(frozen=True)
class BackupResult:
    """One file's outcome. `crc` is the POSIX cksum of the plaintext of the last send."""

    path: Path
    file_name: str
    status: FileStatus
    size: int
    sends: int
    crc: int | None = None
    server_crc: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the server holds a verified copy."""
        return self.status is FileStatus.VERIFIED

    def describe(self) -> str:
        """One line for the user."""
        if self.ok:
            return f"{self.file_name}: verified ({self.size} bytes, CRC {self.crc}, {_sends(self.sends)})"
        return f"{self.file_name}: FAILED ({self.status.value}): {self.detail}"


def _sends(count: int) -> str:
    return "1 send" if count == 1 else f"{count} sends"
