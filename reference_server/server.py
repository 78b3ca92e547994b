"""The listener: accept connections, one thread per session up to the limit, graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import uuid
from pathlib import Path

from .config import ServerConfig
from .errors import ReferenceServerError, StartupError
from .files import FileStore
from .lockout import DecryptionFailures
from .session import Session
from .store import DB_NAME, Store

log = logging.getLogger(__name__)


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


class Server:
    """The reference server: `start()` binds, `serve_forever()` runs until `stop()`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.data_dir = prepare_data_dir(config.data_dir)
        try:
            self.files = FileStore(self.data_dir, config.keep_versions)
            self.store = Store(self.data_dir / DB_NAME)
        except ReferenceServerError as error:
            raise StartupError(str(error)) from None
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sessions: dict[Session, threading.Thread] = {}
        self._refused_total = 0
        self.failures = DecryptionFailures(config.max_decrypt_failures, config.decrypt_lockout)

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
        log.info("data dir %s: %d clients, %d files", self.data_dir, len(clients), len(files))
        address = (self.config.host, self.config.port)
        try:
            self._listener = socket.create_server(address, backlog=min(self.config.max_connections, 1024))
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise StartupError(f"cannot listen on {self.config.host}:{self.config.port}: {reason}") from None
        return self.address

    def stop(self) -> None:
        """Ask `serve_forever` to return (safe from a signal handler and from other threads)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def serve_forever(self) -> None:
        """Accept until `stop()`; then abort the sessions, wait for them, close the database."""
        assert self._listener is not None, "start() first"
        listener = self._listener
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is listener and not self._stopping.is_set():
                        self._accept(listener)
        self._shutdown()

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, address = listener.accept()
        except OSError as error:  # e.g. EMFILE, or the peer reset before accept
            log.warning("accept failed: %s", error)
            return
        peer = f"{address[0]}:{address[1]}"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            full = len(self._sessions) >= self.config.max_connections
            if not full:
                session = Session(sock, peer, self.store, self.files, self.config, self.failures)
                thread = threading.Thread(
                    target=self._run, args=(session,), name=f"session {peer}", daemon=True
                )
                self._sessions[session] = thread
        if full:
            self._refuse(sock, peer)
            return
        log.debug("%s: connected", peer)
        thread.start()

    def _refuse(self, sock: socket.socket, peer: str) -> None:
        """Beyond --max-connections: close at once without reading anything (spec 10)."""
        self._refused_total += 1
        log.warning("%s: refused: %d connections open (--max-connections)", peer, self.config.max_connections)
        sock.close()

    def _run(self, session: Session) -> None:
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.pop(session, None)

    def _shutdown(self) -> None:
        log.info("shutting down: no new connections; aborting %d open sessions", len(self._sessions))
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            running = list(self._sessions.items())
        for session, _ in running:
            session.interrupt()
        for _, thread in running:
            thread.join(self.config.shutdown_grace)
        with self._lock:
            left = len(self._sessions)
        if left:
            log.error("%d sessions did not end within %g s", left, self.config.shutdown_grace)
        self.store.close()
        self._wake_r.close()
        self._wake_w.close()
        log.info("stopped")
