"""Clients and files, in memory and in SQLite `server.db` or `defensive.db` (spec sections 11, 18.5).

The in-memory maps answer every lookup; SQLite is the durable copy (WAL journal,
synchronous=FULL). One lock serialises writers and keeps both copies in step. Group commit:
each change ("step") runs its statements in a savepoint of the open transaction and updates
memory, then waits for a COMMIT; the first waiter commits every step written meanwhile, so
concurrent sessions share one fsync, and no caller returns before its change is durable.
A failed COMMIT fails every step of its batch and reloads memory from the database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Final

from .errors import StorageError

DB_NAME: Final = "server.db"
LEGACY_DIALECT: Final = "2023A"
"""The dialect of a database written before the `settings` table existed (only 2023A was spoken)."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS clients (
    ID BLOB NOT NULL PRIMARY KEY CHECK (length(ID) = 16),
    Name TEXT NOT NULL UNIQUE,
    PublicKey BLOB,
    LastSeen TEXT NOT NULL,
    AESKey BLOB
);
CREATE TABLE IF NOT EXISTS files (
    ID BLOB NOT NULL REFERENCES clients (ID),
    FileName TEXT NOT NULL,
    PathName TEXT NOT NULL,
    Verified INTEGER NOT NULL DEFAULT 0 CHECK (Verified IN (0, 1)),
    PRIMARY KEY (ID, FileName)
);
CREATE TABLE IF NOT EXISTS settings (
    Key TEXT NOT NULL PRIMARY KEY,
    Value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    ID BLOB NOT NULL REFERENCES clients (ID),
    FileName TEXT NOT NULL,
    PathName TEXT NOT NULL PRIMARY KEY,
    StoredAt TEXT NOT NULL
);
"""


def _owner_only(path: Path) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm the same mode) and
    tighten the mode of existing ones, whatever the umask (spec 13.10)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if os.name == "posix":
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}{suffix}", 0o600)


def utc_now() -> str:
    """The current UTC time as 'YYYY-MM-DD HH:MM:SS' (ISO-8601 with a space), as in clients.LastSeen."""
    return _utc_text(int(time.time()))


@lru_cache(maxsize=1)
def _utc_text(second: int) -> str:
    """The text of one second since the epoch, formatted once: every step within that second reuses it."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))  # 5x cheaper than datetime's


@dataclass(frozen=True)
class ClientRecord:
    """A row of `clients`."""

    id: bytes
    name: str
    public_key: bytes | None
    """The 160-byte public_key field as received (DER, then zero padding)."""
    last_seen: str
    aes_key: bytes | None


@dataclass(frozen=True)
class FileRecord:
    """A row of `files`."""

    client_id: bytes
    file_name: str
    path_name: str
    """Relative to the data folder, '/'-separated: '<client id hex>/<stored name>'."""
    verified: bool
    version: str = ""
    """Which upload wrote the stored bytes (in memory only): 1104 verifies only its own version."""


class _Batch:
    """Steps sharing one COMMIT."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: StorageError | None = None


class Deferred:
    """One job's steps written while commits are deferred (`Store.deferring`), the actions that
    must wait until they are committed (`Store.after_commit`) and the clean-up that may wait
    until the job is reported (`Store.after_reply`)."""

    __slots__ = ("after", "batches", "key", "later")

    def __init__(self) -> None:
        self.batches: list[_Batch] = []
        self.after: list[Callable[[], None]] = []
        self.key: Hashable = None
        """What the actions touch (`after_commit`'s key); None: anything (run them alone)."""
        self.later: list[Callable[[], None]] = []


class Store:
    """The server's registry of clients and files; every method is thread-safe."""

    def __init__(self, path: Path, dialect: str = LEGACY_DIALECT) -> None:
        """Open (or create) the database at `path` for a server speaking `dialect`.

        StorageError if it cannot be opened, or if it was created by a server of another
        dialect (its clients hold keys of another size and speak other codes).
        """
        self.path = path
        self._lock = threading.Lock()
        try:
            _owner_only(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            recorded = self._claim_dialect(dialect)
            self._load()
        except (sqlite3.Error, OSError) as error:
            raise StorageError(f"cannot open the database {path}: {error}") from None
        if recorded != dialect:
            self._db.close()
            raise StorageError(
                f"{path} belongs to a {recorded} server, this one speaks {dialect}: "
                f"start it with --dialect {recorded}, or use another --data-dir"
            )
        self._commit_lock = threading.Lock()
        self._batch = _Batch()
        """The steps written since the last COMMIT (the open transaction)."""
        self._stepped: _Batch | None = None
        self._local = threading.local()
        """`deferred`: the `Deferred` of the job this thread runs inside `deferring()`, if any."""

    def _claim_dialect(self, dialect: str) -> str:
        """The dialect recorded in `settings`; a new database records `dialect`, one older than
        the table (it has clients but no record) was written by a 2023A server."""
        row = self._db.execute("SELECT Value FROM settings WHERE Key = 'dialect'").fetchone()
        if row is not None:
            return str(row[0])
        has_clients = self._db.execute("SELECT 1 FROM clients LIMIT 1").fetchone() is not None
        recorded = LEGACY_DIALECT if has_clients else dialect
        self._db.execute("INSERT INTO settings (Key, Value) VALUES ('dialect', ?)", (recorded,))
        return recorded

    def _load(self) -> None:
        """Read the tables into memory (at start, and after a failed commit rolled steps back)."""
        self._clients = {
            row[0]: ClientRecord(*row)
            for row in self._db.execute("SELECT ID, Name, PublicKey, LastSeen, AESKey FROM clients")
        }
        self._files = {
            (row[0], row[1]): FileRecord(row[0], row[1], row[2], bool(row[3]))
            for row in self._db.execute("SELECT ID, FileName, PathName, Verified FROM files")
        }
        self._names = {client.name: client.id for client in self._clients.values()}

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._commit_lock, self._lock:
            if self._db.in_transaction:  # pragma: no cover - every step is committed by its caller
                self._db.execute("COMMIT")
            self._db.close()

    # -- reads ------------------------------------------------------------------------------

    def client(self, client_id: bytes) -> ClientRecord | None:
        """The client with this id, if registered."""
        return self._clients.get(client_id)

    def clients(self) -> list[ClientRecord]:
        """All registered clients."""
        with self._lock:
            return list(self._clients.values())

    def file(self, client_id: bytes, file_name: str) -> FileRecord | None:
        """The stored file of this client under this name, if any."""
        return self._files.get((client_id, file_name))

    def files(self) -> list[FileRecord]:
        """All stored files."""
        with self._lock:
            return list(self._files.values())

    # -- writes -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        """One change: its statements (`_write`) and memory updates under the lock, then, after the
        lock, wait until the change is committed (group commit: one COMMIT and one fsync for every
        step written meanwhile). Returns only once the change is durable (spec 9.2 rule 3)."""
        with self._lock:
            self._stepped = None
            yield
            batch, self._stepped = self._stepped, None
        if batch is None:
            return
        deferred = self._deferred()
        if deferred is None:
            self._commit(batch)
        elif batch not in deferred.batches:
            deferred.batches.append(batch)

    @contextlib.contextmanager
    def deferring(self) -> Iterator[Deferred]:
        """Inside, this thread's steps are written but not committed: the caller runs several jobs
        this way, then `commit_deferred` for each before it reports any of them (one COMMIT and
        one fsync for all). Only one thread may defer (the store thread), so the order in which it
        runs the jobs is the order of their steps and of their `after_commit` actions."""
        deferred = Deferred()
        self._local.deferred = deferred
        try:
            yield deferred
        finally:
            self._local.deferred = None

    def commit_deferred(self, deferred: Deferred) -> None:
        """Make the steps of one deferred job durable (the first call commits every step written
        so far); StorageError if their COMMIT failed. Then the caller runs `deferred.after`."""
        for batch in deferred.batches:
            self._commit(batch)

    def _deferred(self) -> Deferred | None:
        """This thread's deferred job (`deferring`), if it runs one."""
        deferred: Deferred | None = getattr(self._local, "deferred", None)
        return deferred

    def after_commit(self, action: Callable[[], None], key: Hashable = None) -> None:
        """Run `action` once this thread's steps so far are durable: now, unless they are deferred
        (then after `commit_deferred`, in the order the actions were asked for). `key` names what
        the action touches (e.g. a client's folder): the store thread may run the actions of jobs
        with other keys at the same time, those of one key in order; None: alone."""
        deferred = self._deferred()
        if deferred is None:
            action()
        else:
            if deferred.after and deferred.key != key:
                key = None  # one job's actions on two things: run them with nothing else
            deferred.key = key
            deferred.after.append(action)

    def after_reply(self, action: Callable[[], None]) -> None:
        """Run `action`, clean-up nobody waits for (removing an expired version's file), once this
        thread's steps so far are durable: now, unless they are deferred (then the store thread
        runs it after it has reported the job, beside the next batches). `action` reports its own
        failures: the job has succeeded by then."""
        deferred = self._deferred()
        if deferred is None:
            action()
        else:
            deferred.later.append(action)

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        """Run one step's statements, all or none (a savepoint; one statement is atomic by itself),
        in the open transaction."""
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            if len(statements) == 1:  # a failing statement undoes itself and leaves the transaction open
                self._db.execute(*statements[0])
            else:
                self._db.execute("SAVEPOINT step")
                try:
                    for sql, values in statements:
                        self._db.execute(sql, values)
                except sqlite3.Error:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK TO step")
                        self._db.execute("RELEASE step")
                    raise
                self._db.execute("RELEASE step")
        except sqlite3.Error as error:
            failure = StorageError(f"database write failed: {error}")
            if not self._db.in_transaction:  # SQLite rolled the whole batch back (e.g. disk full)
                self._fail_batch(failure)
            raise failure from None
        self._stepped = self._batch

    def _commit(self, batch: _Batch) -> None:
        """Make `batch` durable: the first waiter commits every step written so far, the others find
        their batch done. StorageError if the COMMIT failed (every step of the batch is lost)."""
        with self._commit_lock:
            if not batch.done:
                with self._lock:
                    self._batch = _Batch()
                    batch.done = True
                    try:
                        if self._db.in_transaction:
                            self._db.execute("COMMIT")
                    except sqlite3.Error as error:
                        batch.error = StorageError(f"database write failed: {error}")
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
                        self._load()
        if batch.error is not None:
            raise batch.error

    def _fail_batch(self, failure: StorageError) -> None:
        """The open transaction is gone: its steps fail, and memory forgets them (caller holds the lock)."""
        batch, self._batch = self._batch, _Batch()
        batch.done, batch.error = True, failure
        self._load()

    def register(self, name: str) -> ClientRecord | None:
        """A new client with a fresh UUID, or None if the name is taken (exact, case-sensitive)."""
        with self._step():
            if name in self._names:
                return None
            client_id = uuid.uuid4().bytes
            while client_id in self._clients:  # pragma: no cover - 122 random bits
                client_id = uuid.uuid4().bytes
            record = ClientRecord(client_id, name, None, utc_now(), None)
            self._write(
                [
                    (
                        "INSERT INTO clients (ID, Name, PublicKey, LastSeen, AESKey) "
                        "VALUES (?, ?, NULL, ?, NULL)",
                        (client_id, name, record.last_seen),
                    )
                ]
            )
            self._clients[client_id] = record
            self._names[name] = client_id
            return record

    def set_keys(
        self, client_id: bytes, aes_key: bytes, public_key: bytes | None = None, *, or_same: bool = False
    ) -> ClientRecord | None:
        """Store a session's fresh AES key and refresh LastSeen. With `public_key` (1101): store it
        too, but only if the client has none yet (`or_same`: or has exactly this one, 2022C's
        returning client); else change nothing and return None."""
        with self._step():
            record = self._clients[client_id]
            if public_key is not None and record.public_key not in (None, public_key if or_same else None):
                return None
            now = utc_now()
            key = record.public_key if public_key is None else public_key
            self._write(
                [
                    (
                        "UPDATE clients SET PublicKey = ?, AESKey = ?, LastSeen = ? WHERE ID = ?",
                        (key, aes_key, now, client_id),
                    )
                ]
            )
            record = replace(record, public_key=key, aes_key=aes_key, last_seen=now)
            self._clients[client_id] = record
            return record

    def touch(self, client_id: bytes) -> None:
        """Refresh LastSeen."""
        with self._step():
            now = utc_now()
            self._write([("UPDATE clients SET LastSeen = ? WHERE ID = ?", (now, client_id))])
            self._clients[client_id] = replace(self._clients[client_id], last_seen=now)

    def put_file(
        self, client_id: bytes, file_name: str, path_name: str, version: str, archived: str | None = None
    ) -> FileRecord:
        """Record a newly received version of a file: Verified=0 (replaces an older row). `archived`:
        where the previous verified version was kept (a `versions` row in the same transaction)."""
        with self._step():
            now = utc_now()
            archive_rows: list[tuple[str, tuple[object, ...]]] = []
            if archived is not None:
                archive_rows.append(
                    (
                        "INSERT INTO versions (ID, FileName, PathName, StoredAt) VALUES (?, ?, ?, ?)",
                        (client_id, file_name, archived, now),
                    )
                )
            self._write(
                [
                    *archive_rows,
                    (
                        "INSERT INTO files (ID, FileName, PathName, Verified) VALUES (?, ?, ?, 0) "
                        "ON CONFLICT (ID, FileName) DO UPDATE SET PathName = excluded.PathName, Verified = 0",
                        (client_id, file_name, path_name),
                    ),
                    ("UPDATE clients SET LastSeen = ? WHERE ID = ?", (now, client_id)),
                ]
            )
            record = FileRecord(client_id, file_name, path_name, False, version)
            self._files[(client_id, file_name)] = record
            self._clients[client_id] = replace(self._clients[client_id], last_seen=now)
            return record

    def set_verified(
        self, client_id: bytes, file_name: str, verified: bool, version: str | None = None
    ) -> FileRecord | None:
        """Set a file's Verified flag and refresh LastSeen; None (nothing changed) if the file is gone or
        `version` is given and another upload has replaced that version since."""
        with self._step():
            current = self._files.get((client_id, file_name))
            if current is None or (version is not None and current.version != version):
                return None
            now = utc_now()
            self._write(
                [
                    (
                        "UPDATE files SET Verified = ? WHERE ID = ? AND FileName = ?",
                        (int(verified), client_id, file_name),
                    ),
                    ("UPDATE clients SET LastSeen = ? WHERE ID = ?", (now, client_id)),
                ]
            )
            record = replace(self._files[(client_id, file_name)], verified=verified)
            self._files[(client_id, file_name)] = record
            self._clients[client_id] = replace(self._clients[client_id], last_seen=now)
            return record

    def restore_file(
        self,
        client_id: bytes,
        file_name: str,
        version: str,
        previous: FileRecord | None,
        archived: str | None,
    ) -> bool:
        """Undo `put_file` of `version`: the row back to `previous` (or gone, if the file was new)
        and the `versions` row of `archived` dropped, in one step; False (nothing changed) if
        the row no longer holds `version`."""
        with self._step():
            key = (client_id, file_name)
            current = self._files.get(key)
            if current is None or current.version != version:
                return False
            statements: list[tuple[str, tuple[object, ...]]] = []
            if archived is not None:
                statements.append(("DELETE FROM versions WHERE PathName = ?", (archived,)))
            if previous is None:
                statements.append(("DELETE FROM files WHERE ID = ? AND FileName = ?", (client_id, file_name)))
            else:
                statements.append(
                    (
                        "UPDATE files SET PathName = ?, Verified = ? WHERE ID = ? AND FileName = ?",
                        (previous.path_name, int(previous.verified), client_id, file_name),
                    )
                )
            self._write(statements)
            if previous is None:
                del self._files[key]
            else:
                self._files[key] = previous
            return True

    def versions(self, client_id: bytes | None = None, file_name: str | None = None) -> list[str]:
        """PathNames of kept older verified versions (of one file, or all), oldest first."""
        where: str = ""
        values: tuple[object, ...] = ()
        if client_id is not None:
            where, values = " WHERE ID = ? AND FileName = ?", (client_id, file_name)
        with self._lock:
            try:
                found = self._db.execute(
                    f"SELECT PathName FROM versions{where} ORDER BY StoredAt, rowid", values
                ).fetchall()
            except sqlite3.Error as error:
                raise StorageError(f"database read failed: {error}") from None
        return [row[0] for row in found]

    def forget_versions(self, path_names: list[str]) -> None:
        """Delete the `versions` rows of these PathNames (one transaction)."""
        if path_names:
            with self._step():
                self._write([("DELETE FROM versions WHERE PathName = ?", (name,)) for name in path_names])
