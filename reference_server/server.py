"""The listener: one event loop accepts connections and runs a session coroutine for each (within the
connection limits), beside the store thread and the pool; graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

from backupproto.dialect import DIALECTS

from .config import ServerConfig
from .errors import ReferenceServerError, StartupError
from .files import FileStore
from .limits import ConnectionTable
from .lockout import DecryptionFailures
from .session import Session
from .store import Store
from .store_thread import StoreThread

log = logging.getLogger(__name__)

POOL_THREADS: Final = 32
"""Threads for file work: large uploads' content pumps (AES, cksum, write), every temp file's fsync, the
renames and folder fsyncs after a batch's COMMIT, and clean-up; enough for both cores and the disk.
Database steps and the RSA of 1101/1102 run on the one store thread (`store_thread`)."""
BACKLOG: Final = 4096
ACCEPT_PAUSE: Final = 0.2
"""Seconds accepting pauses after running out of file descriptors (instead of spinning)."""
OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FILES_BESIDES_CONNECTIONS: Final = 64
"""Descriptors the server needs beyond one per connection: listener, database, uploads, loop."""


def prepare_data_dir(path: Path) -> Path:
    """Create the data folder if needed, make it owner-only (0700, spec 13.10), check it is writable."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise StartupError(f"data dir {path} exists and is not a folder") from None
    except OSError as error:
        raise StartupError(f"cannot create the data dir {path}: {error.strerror or error}") from None
    if os.name == "posix":
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            try:
                path.chmod(mode & 0o700)
            except OSError as error:
                raise StartupError(f"cannot make the data dir {path} owner-only: {error}") from None
            log.info("data dir %s: permissions %04o -> %04o (owner only)", path, mode, mode & 0o700)
    probe = path / f".write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StartupError(f"data dir {path} is not writable: {error.strerror or error}") from None
    return path.resolve()


def check_no_foreign_database(data_dir: Path, dialect: str, database_name: str) -> None:
    """StartupError if `data_dir` holds the database file of dialects that name it otherwise
    (a 2023A data dir started as 2023C would otherwise start empty beside the old clients)."""
    for other in {d.database_name for d in DIALECTS.values()} - {database_name}:
        if (data_dir / other).exists():
            owners = [d.name for d in DIALECTS.values() if d.database_name == other]
            raise StartupError(
                f"data dir {data_dir} holds {other}, the database of a {'/'.join(owners)} server; this "
                f"server speaks {dialect} ({database_name}): start it with --dialect "
                f"{' or '.join(owners)} (the one that created it), or use another --data-dir"
            )


class Server:
    """The reference server: `start()` binds, `serve_forever()` runs the event loop until `stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.data_dir = prepare_data_dir(config.data_dir)
        dialect = config.dialect
        check_no_foreign_database(self.data_dir, dialect.name, dialect.database_name)
        try:
            self.files = FileStore(self.data_dir, config.keep_versions)
            self.store = Store(self.data_dir / dialect.database_name, dialect.name)
        except ReferenceServerError as error:
            raise StartupError(str(error)) from None
        self.failures = DecryptionFailures(config.max_decrypt_failures, config.decrypt_lockout)
        self.table: ConnectionTable[Session] = ConnectionTable(
            config.max_connections, config.max_per_address, config.min_idle_to_drop
        )
        self.pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="server-work")
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._tasks: dict[Session, asyncio.Task[None]] = {}
        self._store_thread: StoreThread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._listener is not None
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> tuple[str, int]:
        """Repair the storage after a crash, then bind and listen; StartupError if it cannot."""
        try:
            repaired = self.files.repair(self.store)
        except (OSError, ReferenceServerError) as error:
            raise StartupError(f"cannot check the stored files in {self.data_dir}: {error}") from None
        for line in repaired:
            log.warning("repair: %s", line)
        clients, files = self.store.clients(), self.store.files()
        log.info(
            "data dir %s: %d clients, %d files; dialect %s",
            self.data_dir,
            len(clients),
            len(files),
            self.config.dialect.describe(),
        )
        raise_file_limit(self.config.max_connections)
        address = (self.config.host, self.config.port)
        try:
            self._listener = socket.create_server(address, backlog=BACKLOG)
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise StartupError(f"cannot listen on {self.config.host}:{self.config.port}: {reason}") from None
        self._listener.setblocking(False)
        return self.address

    def stop(self) -> None:
        """Ask `serve_forever` to return (safe from a signal handler and from other threads)."""
        self._stopping.set()
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stopped.set)

    def serve_forever(self) -> None:
        """Serve until `stop()`; then abort the sessions, wait for them, close the database."""
        assert self._listener is not None, "start() first"
        gc.freeze()  # what start-up made lives for ever: the collector no longer walks it per collection
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._store_thread = StoreThread(self.store, self.pool)
        if self._stopping.is_set():
            self._stopped.set()
        accepting = asyncio.create_task(self._accept_forever())
        summaries = asyncio.create_task(self._summaries())
        await self._stopped.wait()
        accepting.cancel()
        summaries.cancel()
        await asyncio.gather(accepting, summaries, return_exceptions=True)
        await self._shutdown()

    async def _accept_forever(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(self._listener)
            except OSError as error:
                if error.errno in OUT_OF_RESOURCES:
                    # Out of descriptors: pause instead of spinning, counted in the summary.
                    self.table.events[f"accept paused ({errno.errorcode[error.errno]})"] += 1
                    await asyncio.sleep(ACCEPT_PAUSE)
                else:  # e.g. the peer reset before accept
                    self.table.events["accept failed"] += 1
                continue
            self._admit(sock, f"{address[0]}:{address[1]}", address[0])
            await asyncio.sleep(0)  # let the sessions run between accepts in a burst

    def _admit(self, sock: socket.socket, peer: str, host: str) -> None:
        """Room for the connection (dropping the longest idle if needed), else close it at once."""
        victims = self.table.admit(host)
        if victims is None:
            sock.close()  # spec 10: closed at once, nothing read; counted in the summary
            return
        for victim in victims:
            self.table.remove(victim)
            victim.drop()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self._store_thread is not None
        session = Session(
            sock,
            peer,
            self.store,
            self.files,
            self.config,
            self.failures,
            self.pool,
            self.table,
            self._store_thread,
        )
        self.table.add(session, host)
        self.table.idle(session)  # nothing received yet: at a message boundary
        log.debug("%s: connected", peer)
        task = asyncio.create_task(session.run(), name=f"session {peer}")
        self._tasks[session] = task
        task.add_done_callback(lambda _: self._tasks.pop(session, None))

    async def _summaries(self) -> None:
        """Refused and dropped connections as one line per interval, never a line each."""
        while True:
            await asyncio.sleep(self.config.summary_interval)
            line = self.table.summary()
            if line is not None:
                log.warning("%s (in the last %g s)", line, self.config.summary_interval)

    async def _shutdown(self) -> None:
        running = dict(self._tasks)
        log.info("shutting down: no new connections; aborting %d open sessions", len(running))
        if self._listener is not None:
            self._listener.close()
        line = self.table.summary()
        if line is not None:
            log.warning("%s", line)
        for session in running:
            session.interrupt()
        if running:
            _, late = await asyncio.wait(running.values(), timeout=self.config.shutdown_grace)
            if late:
                log.error("%d sessions did not end within %g s", len(late), self.config.shutdown_grace)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=1.0)  # let their clean-up use the pool first
        if self._store_thread is not None:
            self._store_thread.stop()  # its last jobs' sessions have ended: nobody waits for them
        self.pool.shutdown(wait=True)
        self.store.close()
        log.info("stopped")


def raise_file_limit(connections: int) -> None:
    """Raise the soft limit of open files toward the hard one if the connections need more."""
    if resource is None:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FILES_BESIDES_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            log.info("open-file limit raised from %d to %d for %d connections", soft, new, connections)
