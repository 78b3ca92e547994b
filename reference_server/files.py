"""The stored files: one folder per client, atomic replacement, startup repair (spec section 11).

A client's folder is named by its id in hex and created with its first file. A file is
stored under a name the server derives from the client's file name (SHA-256, hex), never
under a client-chosen string: case-insensitive or Windows file systems, reserved device
names and our own temp names then cannot collide. The client's name is kept in the
database (files.FileName); files.PathName holds '<client id hex>/<stored name>'.

An upload streams into `.part-<random>` in the client's folder while it is decrypted and
CRC'd; when complete it is fsync'd, its row is written (Verified=0), and only then is it
renamed over the final name and the folder fsync'd. A crash at any point leaves either
the old file or the new one in place, never a partial one; the row never claims Verified
for content the client did not confirm.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Final

from backupproto.cksum import Cksum
from backupproto.crypto import CbcDecryptor

from .errors import StorageError
from .store import Store

TEMP_PREFIX: Final = ".part-"
_CLIENT_DIR: Final = re.compile(r"[0-9a-f]{32}")

log = logging.getLogger(__name__)


def stored_name(file_name: str) -> str:
    """The on-disk name of a client's file: 32 hex digits of SHA-256 of the name, '.bin'."""
    return hashlib.sha256(file_name.encode("ascii")).hexdigest()[:32] + ".bin"


class FileStore:
    """Where files live under the data folder, and how they get there."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve()

    def client_dir(self, client_id: bytes) -> Path:
        """The folder of a client's files (it may not exist yet)."""
        return self.root / client_id.hex()

    def path_name(self, client_id: bytes, file_name: str) -> str:
        """The files.PathName of a client's file."""
        return f"{client_id.hex()}/{stored_name(file_name)}"

    def resolve(self, path_name: str) -> Path:
        """The absolute path of a PathName; StorageError unless it lies directly in its client's folder."""
        parts = path_name.split("/")
        if len(parts) != 2 or not _CLIENT_DIR.fullmatch(parts[0]) or parts[1] in ("", ".", ".."):
            raise StorageError(f"path name {path_name!r} is not '<client id hex>/<file>'")
        folder = self.root / parts[0]
        final = (folder / parts[1]).resolve()
        if folder.resolve() != folder or final.parent != folder:
            raise StorageError(f"path name {path_name!r} resolves outside its client folder ({final})")
        return final

    def begin(self, client_id: bytes, file_name: str, aes_key: bytes) -> Upload:
        """Start receiving a file: a fresh temp file in the client's folder."""
        path_name = self.path_name(client_id, file_name)
        final = self.resolve(path_name)
        try:
            final.parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the client folder {final.parent}: {error}") from None
        return Upload(final, path_name, aes_key)

    def repair(self, store: Store) -> list[str]:
        """Startup repair: delete stray temp files, drop rows whose file is missing; return what was done."""
        done: list[str] = []
        for folder in sorted(self.root.iterdir()):
            if not (_CLIENT_DIR.fullmatch(folder.name) and folder.is_dir()):
                continue
            for entry in sorted(folder.iterdir()):
                if entry.name.startswith(TEMP_PREFIX):
                    entry.unlink()
                    done.append(f"removed the unfinished upload {entry}")
        known: set[Path] = set()
        for record in store.files():
            try:
                path = self.resolve(record.path_name)
                present = path.is_file()
            except StorageError:
                path, present = None, False
            if present and path is not None:
                known.add(path)
                continue
            store.forget_file(record.client_id, record.file_name)
            done.append(
                f"dropped the row of {record.file_name!r} of client {record.client_id.hex()}: "
                f"its file {record.path_name} is missing"
            )
        for folder in sorted(self.root.iterdir()):
            if _CLIENT_DIR.fullmatch(folder.name) and folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if entry not in known:
                        log.warning("kept %s: no database row refers to it", entry)
        return done


class Upload:
    """One file arriving: decrypt and CRC each chunk into a temp file; then commit or abort."""

    def __init__(self, final: Path, path_name: str, aes_key: bytes) -> None:
        self.final = final
        self.path_name = path_name
        self.temp = final.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        )
        try:
            self._fd: int | None = os.open(self.temp, flags, 0o600)
        except OSError as error:
            raise StorageError(f"cannot create {self.temp}: {error}") from None
        self._decryptor = CbcDecryptor(aes_key)
        self._cksum = Cksum()

    @property
    def size(self) -> int:
        """Plaintext bytes written so far."""
        return self._cksum.length

    def _write(self, plain: bytes) -> None:
        assert self._fd is not None
        self._cksum.update(plain)
        view = memoryview(plain)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                raise StorageError(f"cannot write {self.temp}: {error}") from None
            view = view[written:]

    def write(self, ciphertext: bytes) -> None:
        """Decrypt a chunk of content and write the plaintext."""
        self._write(self._decryptor.update(ciphertext))

    def finish(self) -> int:
        """Check the padding, write the last block, fsync, close; return the cksum of the plaintext.

        Raises CryptoError (bad padding) or StorageError; the temp file stays until commit/abort.
        """
        self._write(self._decryptor.finalize())
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise StorageError(f"cannot fsync {self.temp}: {error}") from None
        finally:
            self._close()
        return self._cksum.value

    def commit(self) -> None:
        """Rename the finished temp file over the final name and make the rename durable."""
        try:
            os.replace(self.temp, self.final)
            _fsync_dir(self.final.parent)
        except OSError as error:
            raise StorageError(f"cannot move {self.temp} to {self.final}: {error}") from None

    def abort(self) -> None:
        """Drop the temp file (safe to call at any time, also after commit)."""
        self._close()
        try:
            self.temp.unlink(missing_ok=True)
        except OSError as error:  # pragma: no cover - the folder vanished or turned read-only
            log.error("cannot remove the unfinished upload %s: %s", self.temp, error)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
