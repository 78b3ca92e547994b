"""The stored files: one folder per client, atomic replacement, startup repair (spec 9.2, 11).

A client's folder is named by its id (32 lowercase hex digits) and created with its first
file. Files are stored under their own names (spec 11.1): the wire grammar makes every
file name one safe path component, and `FileStore.resolve` checks the resolved path lies
directly in the client's folder anyway. On a file system that folds case, or on Windows
(reserved names), names are mapped injectively instead (SHA-256 hex); files.PathName
records whichever mapping was used, so both read back the same way.

A large upload (`Upload`) streams into `<root>/.tmp/<random>` (a folder no client folder or
file name can be) while it is decrypted and CRC'd; when complete it is fsync'd, and under
the file's lock a verified previous version is kept (hard link into `<root>/.versions/`),
the row is committed with Verified=0 and the version tag set, and only then is it renamed
over the final name and the folder fsync'd. A small upload (`SmallUpload`, decrypted and
checked in memory) commits its row the same way; its temp file is then created, written
and fsync'd by the job that renames it. A crash at any point leaves the old or the new
version in place, never a partial one, and the row never claims Verified for bytes the
client did not confirm. A failure after the commit and before the rename is undone
(`FileStore.undo_install`): the row is put back as it was. 1104 takes the same lock, and
expires kept versions beyond the retention.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import functools
import hashlib
import logging
import mmap
import os
import re
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

from backupproto.cksum import Cksum
from backupproto.crypto import UPDATE_INTO_SLACK, CbcDecryptor

from .errors import StorageError
from .store import FileRecord, Store

TEMP_DIR: Final = ".tmp"
VERSIONS_DIR: Final = ".versions"
"""Older verified versions: `<root>/.versions/<client id hex>/<random>` (never a client folder)."""
FLUSH_EVERY: Final = 32 * 1024 * 1024
"""Bytes written between two fdatasync calls of a large upload (page-cache writes only)."""
DIRECT_ALIGN: Final = 4096
"""Direct writes (O_DIRECT) go in multiples of this from page-aligned memory: fits block sizes up to 4 KiB."""
DIRECT_WRITE: Final = 2 * 1024 * 1024
"""Plaintext staged before one direct write: fewer, larger writes (each waits for the disk). `dd
oflag=direct` of 1 GiB on the 2-vCPU VM: 0.78 s in 1 MiB writes (as long as `openssl enc` takes
to encrypt it), 0.67 s in 2 MiB, 0.64 s in 4 MiB; larger costs each upload memory (the server's
peak RSS goal is 64 MiB)."""
_STAGE_SIZE: Final = 2 * DIRECT_WRITE + UPDATE_INTO_SLACK + DIRECT_ALIGN
"""One staging buffer: a write's worth plus a chunk's piece, mmap'd (page-aligned)."""
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
_CREATE_TEMP: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)
"""A temp file is always new (never a symlink someone left): created 0600."""
LOCK_STRIPES: Final = 64
"""Locks that order the changes of one file (hashed by client id and file name)."""
_CLIENT_DIR: Final = re.compile(r"[0-9a-f]{32}")

log = logging.getLogger(__name__)


def hashed_name(file_name: str) -> str:
    """The injective storage name for file systems that cannot hold every valid name."""
    return hashlib.sha256(file_name.encode("ascii")).hexdigest() + ".bin"


def _folds_case(folder: Path) -> bool:
    probe = folder / f"case-probe-{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    try:
        return (folder / probe.name.upper()).exists()
    finally:
        probe.unlink()


class FileStore:
    """Where files live under the data folder, and how they get there."""

    def __init__(self, data_dir: Path, keep_versions: int = 1) -> None:
        self.root = data_dir.resolve()
        self.temp_dir = self.root / TEMP_DIR
        self.versions_dir = self.root / VERSIONS_DIR
        self.keep_versions = keep_versions
        """Older verified versions kept per file once a newer one is verified (0: none)."""
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        try:
            self.temp_dir.mkdir(mode=0o700, exist_ok=True)
            self.versions_dir.mkdir(mode=0o700, exist_ok=True)
            self.own_names = os.name == "posix" and not _folds_case(self.temp_dir)
        except OSError as error:
            raise StorageError(f"cannot use the temp folder {self.temp_dir}: {error}") from None

    def client_dir(self, client_id: bytes) -> Path:
        """The folder of a client's files (it may not exist yet)."""
        return self.root / client_id.hex()

    def path_name(self, client_id: bytes, file_name: str) -> str:
        """The files.PathName of a client's file: '<client id hex>/<storage name>'."""
        return f"{client_id.hex()}/{file_name if self.own_names else hashed_name(file_name)}"

    def resolve(self, path_name: str) -> Path:
        """The absolute path of a PathName; StorageError unless it lies directly in its client's folder."""
        parts = path_name.split("/")
        if len(parts) != 2 or not _CLIENT_DIR.fullmatch(parts[0]) or parts[1] in ("", ".", ".."):
            raise StorageError(f"path name {path_name!r} is not '<client id hex>/<file>'")
        folder = self.root / parts[0]
        final = folder / parts[1]
        # The root is canonical (resolved at start) and parts[1] one plain component, so the path
        # resolves to itself unless the folder or the file is a symlink: two lstat calls, where
        # resolving costs one per component of the whole path.
        if os.path.islink(folder) or os.path.islink(final):
            raise StorageError(f"path name {path_name!r} resolves outside its client folder (a symlink)")
        return final

    def _lock(self, client_id: bytes, file_name: str) -> threading.Lock:
        """The lock that orders every change of one (client, file name): one of `LOCK_STRIPES`."""
        return self._locks[hash((client_id, file_name)) % LOCK_STRIPES]

    def install(self, store: Store, client_id: bytes, file_name: str, upload: Installable) -> None:
        """Make a finished upload the stored version: row (Verified=0, new version tag), then rename.

        Both steps run under the file's lock, so the version tag in the store always names the
        bytes at the final path: two uploads of one name can never commit in one order and
        rename in the other (spec 9.2 rule 2). On the store thread (commits deferred) the rename
        waits for the batch's COMMIT; that one thread runs every install and verify in turn, and
        the renames of one client run in the order of its row updates, so the order holds there
        too.
        """
        with self._lock(client_id, file_name):
            if upload.final is None:
                upload.final = self.resolve(upload.path_name)
            current = store.file(client_id, file_name)
            archived = None
            if current is not None and current.verified:
                archived = self._archive(client_id, upload.final)
            store.put_file(client_id, file_name, upload.path_name, upload.version, archived)
            upload.replaced, upload.archived, upload.installed = current, archived, True
            store.after_commit(upload.commit, key=client_id)  # the rename, once the row is durable

    def undo_install(self, store: Store, client_id: bytes, file_name: str, upload: Installable) -> bool:
        """After `install` failed once its row was committed but before the rename (a full disk
        while a small file is written, a refused rename): put the row back as it was, for the
        bytes at the final path are still the previous version's, and drop the copy kept for
        it. False (nothing to undo) if the rename happened, the row was never committed, or
        another upload of the file has replaced the row since."""
        if upload.renamed or not upload.installed:
            return False
        with self._lock(client_id, file_name):
            if not store.restore_file(client_id, file_name, upload.version, upload.replaced, upload.archived):
                return False
        if upload.archived is not None:
            store.after_reply(functools.partial(self._remove_version, upload.archived))
        return True

    def _archive(self, client_id: bytes, final: Path) -> str | None:
        """Keep the verified file at `final` as an older version (a hard link); its PathName."""
        folder = self.versions_dir / client_id.hex()
        name = uuid.uuid4().hex
        try:
            if not folder.is_dir():
                folder.mkdir(mode=0o700)
                _fsync_dir(self.versions_dir)
            os.link(final, folder / name)
            _fsync_dir(folder)
        except FileNotFoundError:
            return None  # the verified file vanished from disk: nothing to keep
        except OSError as error:
            raise StorageError(f"cannot keep the verified version of {final}: {error}") from None
        return f"{VERSIONS_DIR}/{client_id.hex()}/{name}"

    def verify(self, store: Store, client_id: bytes, file_name: str, version: str | None) -> bool:
        """1104: mark `version` Verified=1 if it is still the stored one; False if it was replaced
        (or if this connection wrote no version)."""
        if version is None:
            return False
        with self._lock(client_id, file_name):
            if store.set_verified(client_id, file_name, True, version) is None:
                return False
            kept = store.versions(client_id, file_name)
            expired = kept[: max(0, len(kept) - self.keep_versions)]
            store.forget_versions(expired)
        for path_name in expired:  # the row first; the 2104 need not wait for the disk to free the file
            store.after_reply(functools.partial(self._remove_version, path_name))
        return True

    def _remove_version(self, path_name: str) -> None:
        try:
            (self.root / path_name).unlink(missing_ok=True)
        except OSError as error:
            log.error("cannot remove the expired version %s: %s (startup repair will)", path_name, error)

    def small(self, client_id: bytes, file_name: str, plaintext: bytes) -> SmallUpload:
        """A small file decrypted and checked in memory; no file-system call (the event loop calls
        this): its path is resolved by `install`, its temp file written by its `commit`."""
        return SmallUpload(self.path_name(client_id, file_name), self.temp_dir, plaintext)

    def begin(self, client_id: bytes, file_name: str, aes_key: bytes, content_size: int) -> Upload:
        """Start receiving a file into a fresh temp file; direct I/O only for a file of at least
        one direct write (a smaller one would pay the switch and a staging buffer for nothing)."""
        path_name = self.path_name(client_id, file_name)
        direct = content_size >= DIRECT_WRITE
        return Upload(self.resolve(path_name), path_name, self.temp_dir, aes_key, direct=direct)

    def repair(self, store: Store) -> list[str]:
        """Startup repair (spec 9.2.5): delete leftover temp files; rows whose file is missing
        are kept with Verified=0. Returns a line per repair; files without a row are logged."""
        done: list[str] = []
        for entry in sorted(self.temp_dir.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            done.append(f"removed the unfinished upload {entry}")
        done += self._repair_versions(store)
        known: set[Path] = set()
        for record in store.files():
            try:
                path: Path | None = self.resolve(record.path_name)
            except StorageError as error:
                path = None
                log.error("file %r of client %s: %s", record.file_name, record.client_id.hex(), error)
            if path is not None and path.is_file():
                known.add(path)
            elif record.verified:
                store.set_verified(record.client_id, record.file_name, False)
                done.append(
                    f"file {record.file_name!r} of client {record.client_id.hex()} is missing "
                    f"({record.path_name}): marked unverified"
                )
            else:
                log.warning(
                    "file %r of client %s is missing (%s); its row stays, unverified",
                    record.file_name,
                    record.client_id.hex(),
                    record.path_name,
                )
        for folder in sorted(self.root.iterdir()):
            if _CLIENT_DIR.fullmatch(folder.name) and folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if entry not in known:
                        log.warning("kept %s: no database row refers to it", entry)
        return done

    def _repair_versions(self, store: Store) -> list[str]:
        """Drop kept-version rows without a file and kept-version files without a row."""
        done: list[str] = []
        rows = store.versions()
        missing = [name for name in rows if not (self.root / name).is_file()]
        store.forget_versions(missing)
        done += [f"forgot the kept version {name}: its file is missing" for name in missing]
        known = set(rows)
        for folder in sorted(self.versions_dir.iterdir()):
            for entry in sorted(folder.iterdir()) if folder.is_dir() else [folder]:
                if entry.relative_to(self.root).as_posix() not in known:
                    entry.unlink()
                    done.append(f"removed {entry}: an older version no row refers to")
        return done


class Installable(abc.ABC):
    """What `FileStore.install` stores: a temp file under `temp_dir` that `commit` renames over
    `final` once the row is committed; what the install replaced, for `FileStore.undo_install`."""

    def __init__(self, final: Path | None, path_name: str, temp_dir: Path) -> None:
        self.final = final
        """The final path (None until `FileStore.install` resolves it)."""
        self.path_name = path_name
        self.version = uuid.uuid4().hex
        self.temp = temp_dir / self.version
        self.installed = False
        """`FileStore.install` wrote its row (committed with the batch, unless the COMMIT failed)."""
        self.renamed = False
        """The temp file has replaced the final name (so its row must not be put back)."""
        self.replaced: FileRecord | None = None
        """The row the install replaced (None: the file was new)."""
        self.archived: str | None = None
        """Where the install kept the previous verified version, if it did."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Plaintext bytes."""

    def commit(self) -> None:
        """After the row's commit: make the temp file the stored version."""
        self._move_into_place()

    def abort(self) -> None:
        """Drop the temp file (safe to call at any time, also after commit)."""
        try:
            self.temp.unlink(missing_ok=True)
        except OSError as error:  # pragma: no cover - the folder vanished or turned read-only
            log.error("cannot remove the unfinished upload %s: %s", self.temp, error)

    def _move_into_place(self) -> None:
        """Create the client folder if needed, rename the temp file over the final name, make it durable."""
        assert self.final is not None, "install() resolves the final path"
        try:
            if not self.final.parent.is_dir():
                self.final.parent.mkdir(mode=0o700)
                _fsync_dir(self.final.parent.parent)
            os.replace(self.temp, self.final)
            self.renamed = True
            _fsync_dir(self.final.parent)
        except OSError as error:
            raise StorageError(f"cannot move {self.temp} to {self.final}: {error}") from None


class SmallUpload(Installable):
    """A small file, decrypted and checked in memory when its content ended. Its temp file is
    created, written and fsync'd after its row is committed, by the job that renames it: one
    pool job per small upload, where writing it first cost a trip to the pool and back before
    the row (the design note in `reference_server` has the figures). A failure on the way is
    undone (`FileStore.undo_install`)."""

    def __init__(self, path_name: str, temp_dir: Path, plaintext: bytes) -> None:
        super().__init__(None, path_name, temp_dir)
        self.plaintext = plaintext

    @property
    def size(self) -> int:
        return len(self.plaintext)

    def commit(self) -> None:
        try:
            fd = os.open(self.temp, _CREATE_TEMP, 0o600)
            try:
                view = memoryview(self.plaintext)
                while view:  # bounded: each write takes at least one byte or raises
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise StorageError(f"cannot write {self.temp}: {error}") from None
        self._move_into_place()


class Upload(Installable):
    """One file arriving: decrypt and CRC each chunk, write it to a temp file; then commit or abort.

    Where the file system takes direct I/O (O_DIRECT: Linux ext4, xfs, ...), chunks are
    decrypted into a page-aligned staging buffer and written from it in multiples of
    `DIRECT_ALIGN` once `DIRECT_WRITE` bytes are staged: the disk reads them from our memory,
    with no copy into the page cache and no writeback work later (about a fifth of the kernel
    CPU of a page-cache write here). A direct write waits for the disk, so it runs in the
    upload's writer thread while the caller decrypts the next chunks into a second staging
    buffer: at most one write in flight, in file order. The last partial block is written
    through the page cache. Elsewhere (tmpfs, macOS, Windows, a refused direct write) each chunk is decrypted
    into one reused buffer and written through the page cache, with writeback (fdatasync)
    started in a background thread every `FLUSH_EVERY` bytes so that the final fsync does
    not push the whole file at once. Either way the final fsync makes the file durable before
    it is committed. Memory: two staging buffers of about `DIRECT_WRITE` + one chunk each (or
    one buffer of the largest chunk), whatever the file size.
    """

    def __init__(
        self, final: Path, path_name: str, temp_dir: Path, aes_key: bytes, *, direct: bool = True
    ) -> None:
        super().__init__(final, path_name, temp_dir)
        try:
            self._fd: int | None = os.open(self.temp, _CREATE_TEMP, 0o600)
        except OSError as error:
            raise StorageError(f"cannot create {self.temp}: {error}") from None
        self._decryptor = CbcDecryptor(aes_key)
        self._cksum = Cksum()
        self._buffer = bytearray()
        self._stage: mmap.mmap | None = None
        """The page-aligned staging buffer being filled while writes are direct; None for
        page-cache writes."""
        self._spare: mmap.mmap | None = None
        """The other staging buffer: written by the writer thread, or free."""
        self._staged = 0
        self._direct_on = False
        """O_DIRECT is set on the file (the writer thread clears it when a write is refused)."""
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future[None] | None = None
        if direct and _set_direct(self._fd, True):
            self._direct_on = True
            self._stage = mmap.mmap(-1, _STAGE_SIZE)
        self._unflushed = 0
        self._flusher: threading.Thread | None = None
        self._flush_error: StorageError | None = None

    @property
    def size(self) -> int:
        """Plaintext bytes received so far."""
        return self._cksum.length

    @property
    def direct(self) -> bool:
        """True while the file is written with direct I/O."""
        return self._stage is not None

    def write(self, ciphertext: bytes | memoryview) -> None:
        """Decrypt a chunk of content, CRC it and write it to the temp file (or stage it)."""
        if self._stage is not None:
            ciphertext = self._stage_chunk(memoryview(ciphertext))
            if not ciphertext:
                return
        if len(self._buffer) < len(ciphertext) + UPDATE_INTO_SLACK:
            self._buffer = bytearray(len(ciphertext) + UPDATE_INTO_SLACK)
        plain = self._decryptor.update_into(ciphertext, self._buffer)
        self._cksum.update(plain)
        self._write(plain)

    def _stage_chunk(self, ciphertext: memoryview) -> memoryview:
        """Stage a chunk; what is left of it if direct writes were refused on the way."""
        while ciphertext and (stage := self._stage) is not None:  # in pieces that fit behind what is staged
            room = len(stage) - self._staged - UPDATE_INTO_SLACK
            piece, ciphertext = ciphertext[:room], ciphertext[room:]
            plain = self._decryptor.update_into(piece, memoryview(stage)[self._staged :])
            self._cksum.update(plain)
            self._staged += len(plain)
            if self._staged >= DIRECT_WRITE:
                self._write_staged()
        return ciphertext

    def _write_staged(self) -> None:
        """Hand the whole blocks staged to the writer thread (direct); carry the partial block
        over to the front of the other staging buffer, which becomes the one filled."""
        self._wait_for_writer()  # the other buffer is free again (or direct writes were refused)
        stage, spare = self._stage, self._spare
        if stage is None:
            return
        aligned = self._staged - self._staged % DIRECT_ALIGN
        if not aligned:
            return
        if spare is None:
            spare = mmap.mmap(-1, _STAGE_SIZE)
        rest = self._staged - aligned
        spare[:rest] = stage[aligned : self._staged]
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="direct-write")
        self._in_flight = self._writer.submit(self._write_direct, stage, aligned)
        self._stage, self._spare, self._staged = spare, stage, rest

    def _write_direct(self, buffer: mmap.mmap, length: int) -> None:
        """In the writer thread: write the first `length` bytes of `buffer`."""
        with memoryview(buffer) as whole:
            self._write_all(whole[:length])

    def _write_all(self, view: memoryview) -> None:
        """Write all of `view`; a direct write refused with EINVAL goes on through the page cache."""
        assert self._fd is not None
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except OSError as error:
                if error.errno != errno.EINVAL or not self._direct_on:
                    raise
                # the file system took O_DIRECT but refuses this write: on through the page cache
                log.warning("direct writes to %s refused (%s); on through the page cache", self.temp, error)
                _set_direct(self._fd, False)
                self._direct_on = False

    def _wait_for_writer(self) -> None:
        """Wait for the write in flight; its error as StorageError. If it left direct I/O, what
        is staged goes on through the page cache, and so does the rest of the file."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            in_flight.result()
        except OSError as error:
            raise StorageError(f"cannot write {self.temp}: {error}") from None
        if not self._direct_on and self._stage is not None:
            stage, staged = self._stage, self._staged
            self._stage = self._spare = None
            self._staged = 0
            with memoryview(stage) as view:
                self._write(view[:staged])

    def _write(self, plain: bytes | memoryview) -> None:
        """Write through the page cache, starting writeback every `FLUSH_EVERY` bytes."""
        if not plain:
            return
        if self._flush_error is not None:
            raise self._flush_error
        try:
            self._write_all(memoryview(plain))
        except OSError as error:
            raise StorageError(f"cannot write {self.temp}: {error}") from None
        self._unflushed += len(plain)
        if self._unflushed >= FLUSH_EVERY and (self._flusher is None or not self._flusher.is_alive()):
            self._unflushed = 0
            self._flusher = threading.Thread(target=self._flush_in_background, name="flush", daemon=True)
            self._flusher.start()

    def _leave_direct(self) -> None:
        """On through the page cache (no write in flight; the staging buffers are freed once
        no view holds them)."""
        assert self._fd is not None and self._in_flight is None
        if self._direct_on:
            _set_direct(self._fd, False)
            self._direct_on = False
        self._stage = self._spare = None

    def _flush_in_background(self) -> None:
        fd = self._fd
        if fd is None:  # pragma: no cover - closed before the thread ran (it is joined first)
            return
        try:
            _flush(fd)
        except OSError as error:
            self._flush_error = StorageError(f"cannot flush {self.temp}: {error}")

    def _join_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def finish(self) -> int:
        """Check the padding, write the rest, fsync, close; return the cksum of the plaintext.

        Raises CryptoError (bad padding) or StorageError; the temp file stays until commit/abort.
        """
        last = self._decryptor.finalize()
        self._cksum.update(last)
        stage = self._stage
        if stage is not None:  # less than DIRECT_WRITE is staged between writes: room for 15 bytes
            stage[self._staged : self._staged + len(last)] = last
            self._staged += len(last)
            self._write_staged()
            self._wait_for_writer()
            last = b""
            if self._stage is not None:  # the partial last block goes through the page cache
                last = self._stage[: self._staged]
                self._staged = 0
                self._leave_direct()
        self._write(last)
        self._join_flusher()
        if self._flush_error is not None:
            raise self._flush_error
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise StorageError(f"cannot fsync {self.temp}: {error}") from None
        finally:
            self._close()
        return self._cksum.value

    def abort(self) -> None:
        """Drop the temp file (safe to call at any time, also after commit)."""
        self._join_flusher()
        with contextlib.suppress(StorageError):
            self._wait_for_writer()
        self._close()
        super().abort()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self._stage = None


def _set_direct(fd: int, on: bool) -> bool:
    """Turn direct I/O (O_DIRECT) on or off for `fd`; False where the platform or file system refuses."""
    if not _O_DIRECT:  # pragma: no cover - macOS, Windows
        return False
    import fcntl  # POSIX only

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
    except OSError:
        return False
    return True


def _flush(fd: int) -> None:
    """Push written data to disk (fdatasync where the platform has it)."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS, Windows
        os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover - folders cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
