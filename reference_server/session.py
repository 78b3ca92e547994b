"""One client connection: socket bytes into the sans-I/O engine, requests into store and files.

The engine (backupproto.engine.ServerConnection) parses and checks every message and the
turn-taking; this module decides what each well-formed request does. Anything refused,
malformed or failing is answered with 2107 (SERVER_ERROR) and the connection is closed;
nothing stored before is touched by a failure.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Final

from backupproto.crypto import import_public_key, new_aes_key, wrap_aes_key
from backupproto.engine import ServerConnection
from backupproto.errors import BackupProtoError, CryptoError, RemoteProtocolError
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
from backupproto.schemas import V3_SCHEMAS, der_length

from .config import ServerConfig
from .errors import ReferenceServerError, RequestRefused
from .files import FileStore, Upload
from .lockout import DecryptionFailures
from .store import Store

RECV_SIZE: Final = 1024 * 1024
"""Bytes asked of each recv(): the most content held in memory per connection, about."""
LINGER_SECONDS: Final = 2.0
LINGER_BYTES: Final = 64 * 1024
"""After 2107 the server half-closes and discards what still arrives for this long / this much,
so the client reads the 2107 instead of a connection reset."""

log = logging.getLogger(__name__)


class Session:
    """Serves one accepted connection until the client leaves, a 2107, a timeout or shutdown."""

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        store: Store,
        files: FileStore,
        config: ServerConfig,
        failures: DecryptionFailures,
    ) -> None:
        self.failures = failures
        self.sock = sock
        self.peer = peer
        self.store = store
        self.files = files
        self.config = config
        self.engine = ServerConnection(max_content_size=config.max_file_size)
        self.aes_key: bytes | None = None
        self.upload: Upload | None = None
        self.written_version: str | None = None
        """The version of the file this connection wrote last (1104 verifies only that one)."""
        self.interrupted = False

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        """Serve requests until the conversation ends; never raises."""
        try:
            self._serve()
        except Exception:
            log.exception("%s: internal error; closing the connection", self.peer)
            self._refuse()
        finally:
            self._drop_upload()
            self.sock.close()

    def interrupt(self) -> None:
        """Called from another thread at shutdown: wake a blocked recv, abort the transfer."""
        self.interrupted = True
        with contextlib.suppress(OSError):  # already closed
            self.sock.shutdown(socket.SHUT_RDWR)

    def _drop_upload(self) -> None:
        if self.upload is not None:
            upload, self.upload = self.upload, None
            upload.abort()
            log.info("%s: transfer of %s aborted, unfinished file removed", self.peer, upload.path_name)

    # -- the loop ---------------------------------------------------------------------------

    def _serve(self) -> None:
        engine = self.engine
        while True:
            try:
                event = engine.next_event()
            except RemoteProtocolError as error:
                self._fail(f"protocol error: {error}")
                return
            if event is NEED_DATA:
                if not self._receive():
                    return
                continue
            if isinstance(event, ConnectionClosed):
                log.debug("%s: client closed the connection", self.peer)
                return
            try:
                if isinstance(event, FileChunk):
                    self._on_chunk(event.data)
                    continue
                if isinstance(event, FileEnd):
                    response: Response | None = self._on_file_end()
                else:
                    assert isinstance(event, Request)
                    response = self._on_request(event)
            except (ReferenceServerError, BackupProtoError) as error:
                self._fail(f"{_describe(event)} refused: {error}")
                return
            if response is not None and not self._send(engine.send(response)):
                return

    def _on_chunk(self, data: bytes) -> None:
        assert self.upload is not None
        try:
            self.upload.write(data)
        except ReferenceServerError as error:
            self._drop_upload()
            raise RequestRefused(str(error)) from None

    def _receive(self) -> bool:
        """Feed the engine what the socket has; False if the connection is done."""
        started = not self.engine.at_message_boundary
        timeout = self.config.read_timeout if started else self.config.idle_timeout
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            if started:
                self._fail(f"message stalled: nothing received for {timeout:g} s")
            else:
                log.info("%s: idle for %g s; closing the connection", self.peer, timeout)
            return False
        except OSError as error:
            log.info("%s: connection lost: %s", self.peer, error)
            return False
        if self.interrupted:
            log.info("%s: closed by server shutdown", self.peer)
            return False
        self.engine.receive_data(data)
        return True

    def _send(self, data: bytes) -> bool:
        self.sock.settimeout(self.config.read_timeout)
        try:
            self.sock.sendall(data)
        except OSError as error:
            log.info("%s: cannot send the response: %s", self.peer, error)
            return False
        return True

    def _fail(self, reason: str) -> None:
        """Log why, answer 2107 and close (spec 9)."""
        if self.interrupted:
            log.info("%s: closed by server shutdown", self.peer)
            return
        log.warning("%s: %s -> 2107 SERVER_ERROR, closing", self.peer, reason)
        self._drop_upload()
        self._refuse()

    def _refuse(self) -> None:
        """Send 2107, half-close, and drain briefly so that the client can read it."""
        try:
            if not self._send(self.engine.send(ServerError())):
                return
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                chunk = self.sock.recv(RECV_SIZE)
                if not chunk:
                    break
                drained += len(chunk)
        except (OSError, BackupProtoError):
            pass

    # -- requests ---------------------------------------------------------------------------

    def _on_request(self, request: Request) -> Response | None:
        if isinstance(request, Register):
            return self._register(request)
        if isinstance(request, SendPublicKey):
            return self._send_public_key(request)
        if isinstance(request, Reconnect):
            return self._reconnect(request)
        if isinstance(request, SendFile):
            self._send_file(request)
            return None
        if isinstance(request, CrcOk | CrcGiveUp):
            return self._verdict(request)
        if isinstance(request, CrcRetry):
            self._known_client(request)
            self.store.touch(request.client_id)
            self._log(request, "no response (a resend follows)")
            return None
        raise RequestRefused(f"no handler for {_describe(request)}")  # pragma: no cover

    def _register(self, request: Register) -> Response:
        client = self.store.register(request.name)
        if client is None:
            self._log(request, "2101 REGISTRATION_FAILED: name taken")
            return RegistrationFailed()
        self._log(request, f"2100 REGISTERED as {client.id.hex()}")
        return Registered(client.id)

    def _known_client(self, request: Request, name: str | None = None) -> bytes:
        client = self.store.client(request.client_id)
        if client is None:
            raise RequestRefused(f"client id {request.client_id.hex()} is not registered")
        if name is not None and name != client.name:
            raise RequestRefused(f"name {name!r} does not match the registered name {client.name!r}")
        return request.client_id

    def _send_public_key(self, request: SendPublicKey) -> Response:
        client_id = self._known_client(request, request.name)
        record = self.store.client(client_id)
        assert record is not None
        if record.public_key is not None:
            raise RequestRefused("the client already has a public key; keys are set once")
        public_key = import_public_key(request.public_key)
        aes_key = new_aes_key()
        wrapped = wrap_aes_key(public_key, aes_key)
        field = request.public_key.ljust(V3_SCHEMAS.dialect.public_key_size, b"\x00")
        if self.store.set_keys(client_id, aes_key, field) is None:
            raise RequestRefused("the client already has a public key; keys are set once")
        self.aes_key = aes_key
        self._log(request, "2102 AES_KEY")
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
            self._log(request, f"2106 RECONNECT_DENIED: {reason}")
            return ReconnectDenied(request.client_id)
        aes_key = new_aes_key()
        wrapped = wrap_aes_key(public_key, aes_key)
        self.store.set_keys(client.id, aes_key)
        self.aes_key = aes_key
        self._log(request, "2105 RECONNECT_APPROVED")
        return ReconnectApproved(client.id, wrapped)

    def _send_file(self, request: SendFile) -> None:
        client_id = self._known_client(request)
        self._check_not_locked_out(client_id)
        if self.aes_key is None:  # pragma: no cover - the engine allows 1103 only when keyed
            raise RequestRefused("no AES key on this connection")
        self.upload = self.files.begin(client_id, request.file_name, self.aes_key)
        log.debug("%s: receiving %r, %d bytes", self.peer, request.file_name, request.content_size)

    def _on_file_end(self) -> Response:
        upload = self.upload
        request = self.engine.conversation.file
        assert upload is not None and request is not None
        try:
            try:
                crc = upload.finish()
            except CryptoError:
                self._count_failure(request.client_id)
                raise
            self.files.install(self.store, request.client_id, request.file_name, upload)
        except Exception:
            self._drop_upload()
            raise
        self.upload = None
        self.written_version = upload.version
        self._log(
            request, f"2103 FILE_RECEIVED: {upload.size} bytes, cksum {crc}, stored as {upload.path_name}"
        )
        return FileReceived(request.client_id, request.content_size, request.file_name, crc)

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
        self._log(request, f"2104 ACKNOWLEDGED: {outcome}")
        return Acknowledged(client_id)

    def _log(self, request: Request, outcome: str) -> None:
        client = self.store.client(request.client_id)
        who = f"client {request.client_id.hex()} ({client.name!r})" if client else "new client"
        log.info("%s: %s %s -> %s", self.peer, who, _describe(request), outcome)


def _describe(event: object) -> str:
    if isinstance(event, Request):
        text = f"{int(event.code)} {event.code.name}"
        if isinstance(event, Register | SendPublicKey | Reconnect):
            text += f" name={event.name!r}"
        file_name = getattr(event, "file_name", None)
        if file_name is not None:
            text += f" file={file_name!r}"
        return text
    return type(event).__name__
