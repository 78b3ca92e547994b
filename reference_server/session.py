"""One client connection: socket bytes into the sans-I/O engine, requests into store and files.

The engine (backupproto.engine.ServerConnection) parses and checks every message and the
turn-taking; this module decides what each well-formed request does. Anything refused,
malformed or failing is answered with 2107 (SERVER_ERROR) and the connection is closed;
nothing stored before is touched by a failure.

The connection is a coroutine on the server's event loop; every piece of blocking work
(SQLite, fsync, RSA) runs in the server's thread pool, so the loop only moves bytes and keeps
time. A 1103's content streams in a pool thread that reads the socket itself
(`content.ContentPump`: receive, decrypt, cksum, write) for as long as bytes keep coming.
Deadlines (spec 2.4, 13.11): `idle_timeout` at a message boundary (close silently); once a
message has begun, the whole message must arrive within `read_timeout`, extended by 1 s for
every `min_rate` bytes of 1103 content received (so content must keep arriving at `min_rate`
at least), and no read may wait longer than `read_timeout` (the stall timeout of spec 2.4);
else 2107 and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Final, TypeVar

from backupproto.cksum import Cksum
from backupproto.crypto import CbcDecryptor, import_public_key, new_aes_key, wrap_aes_key
from backupproto.detect import detect_request_dialects
from backupproto.dialect import Dialect, RequestCode, ResponseCode
from backupproto.engine import ServerConnection
from backupproto.errors import BackupProtoError, CryptoError, ErrorKind, RemoteProtocolError
from backupproto.events import (
    NEED_DATA,
    Acknowledged,
    AesKey,
    ConnectionClosed,
    CrcGiveUp,
    CrcOk,
    CrcRetry,
    FileChunk,
    FileEnd,
    FileReceived,
    Reconnect,
    ReconnectApproved,
    ReconnectDenied,
    Register,
    Registered,
    RegistrationFailed,
    Request,
    Response,
    SendFile,
    SendPublicKey,
    ServerError,
)
from backupproto.schemas import der_length

from .config import ServerConfig
from .content import RECV_SIZE, SLICE_DONE, ContentPump, ContentStalled, EngineRefused
from .errors import ReferenceServerError, RequestRefused
from .files import FileStore, Installable, Upload
from .limits import ConnectionTable
from .lockout import DecryptionFailures
from .store import Store
from .store_thread import StoreThread
from .wire import Wire

Result = TypeVar("Result")

SMALL_FILE: Final = 16 * 1024
"""A file whose content_size is at most this is held in memory as it arrives (no content pump,
no file-system call on the loop), decrypted and checked at its end, and written after its row
by the pool job that renames it (`files.SmallUpload`)."""
LINGER_SECONDS: Final = 2.0
LINGER_BYTES: Final = 64 * 1024
"""After 2107 the server half-closes and discards what still arrives for this long / this much,
so the client reads the 2107 instead of a connection reset."""

log = logging.getLogger(__name__)


class _Deadline(Exception):
    """The idle timeout or the message deadline passed."""


class Session:
    """Serves one accepted connection until the client leaves, a 2107, a deadline, a drop or shutdown."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        store: Store,
        files: FileStore,
        config: ServerConfig,
        failures: DecryptionFailures,
        pool: Executor,
        table: ConnectionTable[Session],
        store_thread: StoreThread,
    ) -> None:
        self.sock = sock
        self.wire: Wire | None = None
        self.peer = peer
        self.store = store
        self.files = files
        self.config = config
        self.failures = failures
        self.pool = pool
        self.table = table
        self.store_thread = store_thread
        self.dialect = config.dialect
        self.engine = ServerConnection(config.dialect, max_content_size=config.max_file_size)
        self._message_head = b""
        """The first bytes of the latest request that began a read (to name a foreign dialect)."""
        self.aes_key: bytes | None = None
        self.upload: Installable | None = None
        self._held: bytearray | None = None
        """A small file's content (ciphertext) while it arrives; its upload begins at its end."""
        self._pump: ContentPump | None = None
        """The upload's content pump while it runs in the pool (it reads the socket then)."""
        self.written_version: str | None = None
        """The version of the file this connection wrote last (1104 verifies only that one)."""
        self.interrupted = False
        self.dropped = False
        self._message_started: float | None = None
        self._content_received = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests until the conversation ends; never raises (but lets cancellation through)."""
        try:
            if self.interrupted or self.dropped:
                return
            loop = asyncio.get_running_loop()
            _, self.wire = await loop.connect_accepted_socket(lambda: Wire(RECV_SIZE), self.sock)
            await self._serve()
        except Exception:
            log.exception("%s: internal error; closing the connection", self.peer)
            await self._refuse()
        finally:
            self.table.remove(self)
            await self._drop_upload()
            if self.wire is not None:
                self.wire.close()
            else:
                self.sock.close()

    def interrupt(self) -> None:
        """Shutdown: end the connection at its next await; an upload in progress is aborted."""
        self.interrupted = True
        self._abort()

    def drop(self) -> None:
        """Make room for a new connection: close this idle one (it is between requests)."""
        self.dropped = True
        self._abort()

    def _abort(self) -> None:
        if self._pump is not None:  # the pump's thread reads the socket: end its input, not the socket
            self._pump.wake()
        elif self.wire is not None:
            self.wire.abort()

    async def _in_pool(self, function: Callable[..., Result], *args: object) -> Result:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, function, *args)

    async def _drop_upload(self) -> None:
        self._held = None
        if self.upload is None:
            return
        upload, self.upload = self.upload, None
        await self._in_pool(upload.abort)
        log.info("%s: transfer of %s aborted, unfinished file removed", self.peer, upload.path_name)

    # -- the loop ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        engine = self.engine
        event: object = None  # an event the content pump took from the engine (FileEnd), else None
        while True:
            if event is None:
                try:
                    event = engine.next_event()
                except RemoteProtocolError as error:
                    await self._fail(f"protocol error: {error}{self._foreign_dialect_hint(error)}")
                    return
            if event is NEED_DATA:
                event = None
                if not await self._receive():
                    return
                continue
            if isinstance(event, ConnectionClosed):
                log.debug("%s: client closed the connection", self.peer)
                return
            try:
                if isinstance(event, FileChunk) and self._held is not None:
                    self._held += event.data
                    self._content_received += len(event.data)
                    event = None
                    continue
                if isinstance(event, FileChunk):
                    event = await self._pump_content(event.data)
                    if event is None:
                        return
                    continue
                if isinstance(event, FileEnd):
                    response: Response | None = await self._on_file_end()
                elif isinstance(event, SendFile):  # memory lookups (and a large file's temp file)
                    await self._send_file(event)
                    response = None
                else:
                    assert isinstance(event, Request)
                    response = await self.store_thread.run(self._on_request, event)
            except (ReferenceServerError, BackupProtoError) as error:
                # the end or a chunk of a file is refused as that file's SEND_FILE
                subject = event if isinstance(event, Request) else engine.conversation.file or event
                await self._fail(f"{_describe(subject, self.dialect)} refused: {error}")
                return
            event = None
            if response is not None and not await self._send(engine.send(response)):
                return

    async def _pump_content(self, first: bytes) -> object:
        """Run the content pump in the pool from this chunk on: the event it ends with (FileEnd,
        NEED_DATA when the client went quiet), or None when the connection is done (stalled,
        lost, malformed). A storage failure drops the upload and is raised as RequestRefused."""
        try:
            return await self._run_pump(first)
        except ContentStalled:
            await self._fail(self._stalled())
        except EngineRefused as refused:
            await self._fail(f"protocol error: {refused.error}{self._foreign_dialect_hint(refused.error)}")
        except OSError as error:
            log.info("%s: connection lost: %s", self.peer, error)
        except ReferenceServerError as error:
            await self._drop_upload()
            raise RequestRefused(str(error)) from None
        return None

    async def _run_pump(self, first: bytes) -> object:
        """The pump's jobs, one after another, while the loop leaves the socket to them."""
        upload, wire = self.upload, self.wire
        assert isinstance(upload, Upload) and wire is not None
        pending = wire.hold()
        if pending:
            self.engine.receive_data(pending)
        pump = ContentPump(self.sock, self.engine, upload, self._seconds_left, self._count_content)
        job = self.pool.submit(pump.run, first)
        self._pump = pump
        try:
            while (outcome := await asyncio.wrap_future(job)) is SLICE_DONE:
                job = self.pool.submit(pump.run)  # behind the jobs that queued meanwhile
            return outcome
        except asyncio.CancelledError:  # shutdown: the thread must be done with socket and upload
            pump.wake()
            with contextlib.suppress(Exception):
                await asyncio.wait([asyncio.wrap_future(job)], timeout=self.config.read_timeout)
            raise
        finally:
            self._pump = None
            if self.interrupted or self.dropped:
                wire.abort()
            else:
                wire.unhold()

    def _count_content(self, size: int) -> None:
        self._content_received += size

    def _seconds_left(self) -> float:
        return self._timeout()[0]

    def _stalled(self) -> str:
        limits = self.config
        return (
            f"message stalled: nothing for {limits.read_timeout:g} s, or not complete within its "
            f"deadline ({limits.read_timeout:g} s, content at {limits.min_rate:g} bytes/s at least)"
        )

    def _timeout(self) -> tuple[float, str]:
        """Seconds the next read may wait, and what passing them means."""
        if self.engine.at_message_boundary:
            return self.config.idle_timeout, "idle"
        started = self._message_started
        assert started is not None
        deadline = started + self.config.read_timeout + self._content_received / self.config.min_rate
        # The stall timeout of spec 2.4 still applies: a large upload that stops stalls.
        return min(deadline - time.monotonic(), self.config.read_timeout), "message"

    async def _receive(self) -> bool:
        """Feed the engine what the socket has; False if the connection is done."""
        timeout, kind = self._timeout()
        if kind == "idle":
            self.table.idle(self)
            if self.wire is not None:
                self.wire.release()
        try:
            if timeout <= 0:
                raise _Deadline
            try:
                assert self.wire is not None
                data = await self.wire.read(timeout)
            except TimeoutError:
                raise _Deadline from None
        except _Deadline:
            if kind == "idle":
                log.info("%s: idle for %g s; closing the connection", self.peer, self.config.idle_timeout)
            else:
                await self._fail(self._stalled())
            return False
        except OSError as error:
            log.info("%s: connection lost: %s", self.peer, error)
            return False
        finally:
            self.table.busy(self)
        if self.interrupted:
            log.info("%s: closed by server shutdown", self.peer)
            return False
        if self.dropped:
            log.debug("%s: dropped to make room for a new connection", self.peer)
            return False
        if self.engine.at_message_boundary:
            self._message_started = time.monotonic() if data else None
            self._content_received = 0
            self._message_head = data[: self.engine.schemas.request_header_size]
        self.engine.receive_data(data)
        return True

    async def _send(self, data: bytes) -> bool:
        assert self.wire is not None
        try:
            self.wire.write(data)
            await self.wire.drain(self.config.read_timeout)
        except (OSError, TimeoutError) as error:
            log.info("%s: cannot send the response: %s", self.peer, error or "timed out")
            return False
        return True

    def _foreign_dialect_hint(self, error: RemoteProtocolError) -> str:
        """For a request code of another dialect: '; the client likely speaks 2024C (...)'."""
        head = self._message_head
        if error.kind is not ErrorKind.UNKNOWN_CODE or len(head) < self.engine.schemas.request_header_size:
            return ""
        dialects = detect_request_dialects(head)
        if not dialects or self.dialect in dialects:  # not this message's header, or no dialect's
            return ""
        fitting = " or ".join(d.name for d in dialects)
        return (
            f"; the client likely speaks {fitting} (this server speaks {self.dialect.name}; "
            f"a server for it runs with --dialect {fitting})"
        )

    def _way_out(self) -> str:
        """What `_refuse` does in this dialect, for the log: '2107 SERVER_ERROR' or a close."""
        if not self.dialect.has_server_error:
            return f"close ({self.dialect.name} has no SERVER_ERROR)"
        return f"{self._code(ResponseCode.SERVER_ERROR)}, closing"

    def _code(self, role: RequestCode | ResponseCode) -> str:
        """A message as the log names it: its wire code in this dialect and its role, '1600 REGISTERED'."""
        table = self.dialect.requests if isinstance(role, RequestCode) else self.dialect.responses
        return f"{table[role]} {role.name}"  # type: ignore[index]

    async def _fail(self, reason: str) -> None:
        """Log why, answer SERVER_ERROR (in 2022C: nothing) and close (spec 9, 17.4)."""
        if self.interrupted:
            log.info("%s: closed by server shutdown", self.peer)
            return
        log.warning("%s: %s -> %s", self.peer, reason, self._way_out())
        await self._drop_upload()
        await self._refuse()

    async def _refuse(self) -> None:
        """Send SERVER_ERROR (2022C: no bytes), half-close, and drain briefly so that the client
        reads the answer or an orderly FIN rather than a connection reset (spec 2.3, 17.4)."""
        wire = self.wire
        if wire is None:
            return
        try:
            answer = self.engine.send(ServerError())
            if answer and not await self._send(answer):
                return
            wire.write_eof()
            drained = 0
            async with asyncio.timeout(LINGER_SECONDS):
                while drained < LINGER_BYTES:
                    chunk = await wire.read()
                    if not chunk:
                        break
                    drained += len(chunk)
        except (OSError, TimeoutError, BackupProtoError):
            pass

    # -- requests ---------------------------------------------------------------------------

    def _on_request(self, request: Request) -> Response | None:
        if isinstance(request, Register):
            return self._register(request)
        if isinstance(request, SendPublicKey):
            return self._send_public_key(request)
        if isinstance(request, Reconnect):
            return self._reconnect(request)
        if isinstance(request, CrcOk | CrcGiveUp):
            return self._verdict(request)
        if isinstance(request, CrcRetry):
            self._known_client(request)
            self.store.touch(request.client_id)
            self._log(request, "no response (a resend follows)")
            return None
        raise RequestRefused(f"no handler for {_describe(request, self.dialect)}")  # pragma: no cover

    def _register(self, request: Register) -> Response:
        client = self.store.register(request.name)
        if client is None:
            self._log(request, f"{self._code(ResponseCode.REGISTRATION_FAILED)}: name taken")
            return RegistrationFailed()
        self._log(request, f"{self._code(ResponseCode.REGISTERED)} as {client.id.hex()}")
        return Registered(client.id)

    def _known_client(self, request: Request, name: str | None = None) -> bytes:
        client = self.store.client(request.client_id)
        if client is None:
            raise RequestRefused(f"client id {request.client_id.hex()} is not registered")
        if name is not None and name != client.name:
            raise RequestRefused(f"name {name!r} does not match the registered name {client.name!r}")
        return request.client_id

    def _send_public_key(self, request: SendPublicKey) -> Response:
        """2023A (4.2): a key is set once. 2022C (17.4) has no reconnect: a returning client re-sends
        1101 with its saved id, name and the same key, and gets a fresh AES key."""
        client_id = self._known_client(request, request.name)
        record = self.store.client(client_id)
        assert record is not None
        returning = not self.dialect.has_reconnect
        if record.public_key is not None and not returning:
            raise RequestRefused("the client already has a public key; keys are set once")
        public_key = import_public_key(request.public_key)
        field = request.public_key.ljust(self.dialect.public_key_size, b"\x00")
        if record.public_key is not None and record.public_key != field:
            raise RequestRefused(
                f"{ErrorKind.UNEXPECTED_MESSAGE.value}: the public key differs from the one on record "
                "(keys are set once; a returning client must send the same key, spec 17.4)"
            )
        aes_key = new_aes_key(self.dialect.aes_key_size)
        wrapped = wrap_aes_key(public_key, aes_key)
        if self.store.set_keys(client_id, aes_key, field, or_same=returning) is None:
            raise RequestRefused("the client already has another public key; keys are set once")
        self.aes_key = aes_key
        again = " (returning client, same key)" if record.public_key is not None else ""
        self._log(request, self._code(ResponseCode.AES_KEY) + again)
        return AesKey(client_id, wrapped)

    def _reconnect(self, request: Reconnect) -> Response:
        self._check_not_locked_out(request.client_id)
        client = self.store.client(request.client_id)
        reason = None
        if client is None:
            reason = "unknown client id"
        elif client.name != request.name:
            reason = f"name does not match the registered name {client.name!r}"
        elif client.public_key is None:
            reason = "no public key on record"
        else:
            try:
                public_key = import_public_key(client.public_key[: der_length(client.public_key)])
            except BackupProtoError as error:
                reason = f"the stored public key is unusable: {error}"
        if client is None or reason is not None:
            self._log(request, f"{self._code(ResponseCode.RECONNECT_DENIED)}: {reason}")
            return ReconnectDenied(request.client_id)
        aes_key = new_aes_key(self.dialect.aes_key_size)
        wrapped = wrap_aes_key(public_key, aes_key)
        self.store.set_keys(client.id, aes_key)
        self.aes_key = aes_key
        self._log(request, self._code(ResponseCode.RECONNECT_APPROVED))
        return ReconnectApproved(client.id, wrapped)

    async def _send_file(self, request: SendFile) -> None:
        """1103's header: checks in memory; a large file's temp file is created in the pool (a
        small file's after its row, in the pool too: creating a file can wait for the file
        system's journal, and the loop must not)."""
        client_id = self._known_client(request)
        self._check_not_locked_out(client_id)
        if self.aes_key is None:  # pragma: no cover - the engine allows 1103 only when keyed
            raise RequestRefused("no AES key on this connection")
        if request.content_size <= SMALL_FILE:
            self._held = bytearray()
        else:
            self.upload = await self._in_pool(self._begin_upload, request)
        log.debug("%s: receiving %r, %d bytes", self.peer, request.file_name, request.content_size)

    async def _on_file_end(self) -> Response:
        request = self.engine.conversation.file
        held, self._held = self._held, None
        assert request is not None and (held is not None or self.upload is not None)
        try:
            if held is not None:  # decrypted and checked here (16 KiB at most), written after its row
                crc = self._check_small_file(request, held)
            else:  # the temp file's last writes and fsync in the pool (many at once)
                crc = await self._in_pool(self._finish_upload, request)
            upload = self.upload
            assert upload is not None
            # The row on the store thread, then (a small file's writes and) the rename.
            await self.store_thread.run(self._install_upload, upload, request)
        except Exception:
            await self._undo_install(request)
            await self._drop_upload()
            raise
        self.upload = None
        self.written_version = upload.version
        self._log(
            request,
            f"{self._code(ResponseCode.FILE_RECEIVED)}: {upload.size} bytes, cksum {crc}, "
            f"stored as {upload.path_name}",
        )
        return FileReceived(request.client_id, request.content_size, request.file_name, crc)

    def _install_upload(self, upload: Installable, request: SendFile) -> None:
        """On the store thread: the row (committed with its batch), then the rename (spec 11.3)."""
        self.files.install(self.store, request.client_id, request.file_name, upload)

    def _begin_upload(self, request: SendFile) -> Upload:
        """In the pool: the upload's temp file (resolving its final path)."""
        assert self.aes_key is not None
        return self.files.begin(request.client_id, request.file_name, self.aes_key, request.content_size)

    def _finish_upload(self, request: SendFile) -> int:
        """In the pool: a large file's padding checked, the rest written, the temp file flushed;
        the cksum."""
        upload = self.upload
        assert isinstance(upload, Upload)
        try:
            crc = upload.finish()
        except CryptoError:
            self._count_failure(request.client_id)
            raise
        self._check_plaintext_size(request, upload.size)
        return crc

    def _check_small_file(self, request: SendFile, held: bytearray) -> int:
        """On the loop: a small file's whole content decrypted in memory, its padding and size
        checked; it becomes the session's upload (nothing on disk yet). The cksum."""
        assert self.aes_key is not None
        decryptor = CbcDecryptor(self.aes_key)
        try:
            plaintext = decryptor.update(held) + decryptor.finalize()
        except CryptoError:
            self._count_failure(request.client_id)
            raise
        self._check_plaintext_size(request, len(plaintext))
        self.upload = self.files.small(request.client_id, request.file_name, plaintext)
        return Cksum(plaintext).value

    def _check_plaintext_size(self, request: SendFile, size: int) -> None:
        if request.orig_file_size is not None and size != request.orig_file_size:
            raise RemoteProtocolError(  # spec 18.2, check 10 across packets
                ErrorKind.BAD_ORIG_FILE_SIZE,
                f"the content decrypts to {size} bytes",
                field="orig_file_size",
                offset=self.engine.schemas.offset(RequestCode.SEND_FILE, "orig_file_size"),
                expected=f"{request.orig_file_size} bytes (orig_file_size of every packet)",
            )

    async def _undo_install(self, request: SendFile) -> None:
        """After a failed install: put the file's row back if it was committed but the rename did
        not happen (`FileStore.undo_install`); a failure here leaves the row saying Verified=0."""
        upload = self.upload
        if upload is None or upload.renamed or not upload.installed:
            return
        try:
            undone = await self.store_thread.run(
                self.files.undo_install, self.store, request.client_id, request.file_name, upload
            )
        except ReferenceServerError as error:
            log.error("%s: cannot put back the row of %r: %s", self.peer, request.file_name, error)
            return
        if undone:
            log.info("%s: %r: the failed upload's row was put back as it was", self.peer, request.file_name)

    def _count_failure(self, client_id: bytes) -> None:
        if self.failures.record(client_id):
            log.warning(
                "%s: client %s: %d failed decryptions within %g s; its 1102 and 1103 are refused for %g s",
                self.peer,
                client_id.hex(),
                self.failures.limit,
                self.failures.lockout,
                self.failures.lockout,
            )

    def _check_not_locked_out(self, client_id: bytes) -> None:
        left = self.failures.locked_for(client_id)
        if left > 0:
            raise RequestRefused(
                f"client id {client_id.hex()} is locked out for {left:.0f} more s after "
                f"{self.failures.limit} failed decryptions (spec 13.3)"
            )

    def _verdict(self, request: CrcOk | CrcGiveUp) -> Response:
        client_id = self._known_client(request)
        if isinstance(request, CrcOk):
            verified = self.files.verify(self.store, client_id, request.file_name, self.written_version)
            outcome = "verified" if verified else "left unverified: replaced since by another connection"
        else:
            self.store.touch(client_id)
            outcome = "kept unverified"
        self._log(request, f"{self._code(ResponseCode.ACKNOWLEDGED)}: {outcome}")
        return Acknowledged(client_id)

    def _log(self, request: Request, outcome: str) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        client = self.store.client(request.client_id)
        who = f"client {request.client_id.hex()} ({client.name!r})" if client else "new client"
        log.info("%s: %s %s -> %s", self.peer, who, _describe(request, self.dialect), outcome)


def _describe(event: object, dialect: Dialect) -> str:
    if isinstance(event, Request):
        text = f"{dialect.requests[event.code]} {event.code.name}"
        if isinstance(event, Register | SendPublicKey | Reconnect):
            text += f" name={event.name!r}"
        file_name = getattr(event, "file_name", None)
        if file_name is not None:
            text += f" file={file_name!r}"
        return text
    return type(event).__name__
