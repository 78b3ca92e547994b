"""The backup flow: register or reconnect, then send each file and settle its CRC, recovering
from every failure the protocol knows (2107, 2106, CRC mismatches, lost connections)."""

from __future__ import annotations

import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, cast

from backupproto.client_timing import (
    CONNECT_TIMEOUT_S,
    RESPONSE_TIMEOUT_S,
    RETRIES,
    RETRY_DELAY_S,
    response_timeout,
)
from backupproto.crypto import (
    encrypted_size,
    generate_private_key,
    public_key_der,
    unwrap_aes_key,
)
from backupproto.dialect import V3, Dialect, RequestCode, ResponseCode
from backupproto.errors import CryptoError
from backupproto.events import (
    Acknowledged,
    AesKey,
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
    Response,
    SendFile,
    SendPublicKey,
)
from backupproto.schemas import schemas_for

from .atomic import write_atomically
from .channel import Channel
from .config import (
    ME_INFO,
    PRIV_KEY,
    Identity,
    ListedFile,
    Server,
    check_client_name,
    check_listed_file,
    private_key_base64,
    read_identity,
    read_private_key_file,
    write_identity,
)
from .errors import (
    ConfigError,
    ConnectionFailed,
    FatalError,
    ForeignDialect,
    ProtocolFailure,
    RetryableError,
    ServerRespondedWithError,
    TimedOut,
)
from .mismatch import dialects_refusing, run_with
from .report import Reporter, SilentReporter
from .results import BackupResult, FileStatus
from .upload import EncryptedContent

_R = TypeVar("_R", bound=Response)

CHUNK_SIZE: Final = 1 << 20
MAX_SENDS: Final = 3
"""Sends of one file in total (the first and two resends after 1105), then 1106."""
SERVER_ERROR_LINE: Final = "server responded with an error"


@dataclass(frozen=True)
class _Session:
    client_id: bytes
    aes_key: bytes


@dataclass(frozen=True)
class _Sent:
    crc: int
    size: int
    changed: bool


class BackupClient:
    """Backs files up to one server as one client, keeping its identity in `state_dir`
    (me.info, priv.key). Each `backup`/`backup_many` call uses one connection, and a fresh
    one (reconnect flow) after each failure, up to `retries` times per file; a response timeout
    (`read_timeout`, longer for a large SEND_FILE: spec 2.4) ends the run without a retry.

    `dialect` (default 2023A) sets the codes, the AES key size and the send-file layout. In a
    dialect without reconnect (2022C) a returning client re-sends its saved public key
    (SEND_PUBLIC_KEY) and gets a fresh AES key (spec/dialects.md 17.4).

    Raises `ConfigError` for unusable state files or paths (before connecting) and
    `FatalError` when the backup cannot go on; per-file failures are `BackupResult`s.
    """

    def __init__(
        self,
        server: tuple[str, int] | Server,
        name: str,
        state_dir: Path,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = RESPONSE_TIMEOUT_S,
        retries: int = RETRIES,
        retry_delay: float = RETRY_DELAY_S,
        chunk_size: int = CHUNK_SIZE,
        max_sends: int = MAX_SENDS,
        max_content_size: int | None = None,
        dialect: Dialect = V3,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = Server(*server)
        self.name = check_client_name(name, "name", None)
        self.state_dir = Path(state_dir)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.retries, self.retry_delay = retries, retry_delay
        self.chunk_size, self.max_sends = chunk_size, max_sends
        self.dialect = dialect
        limit = sendable_content_size(dialect)
        self.max_content_size = limit if max_content_size is None else max_content_size
        self.reporter: Reporter = reporter or SilentReporter()
        self.clock, self.sleep = clock, sleep
        self._identity: Identity | None = None
        self._identity_loaded = False
        self._step = "connecting"
        self._resending_key = False

    # --- public API -------------------------------------------------------------------------

    @property
    def identity(self) -> Identity | None:
        """The identity of me.info (None before the first registration)."""
        self._load_identity()
        return self._identity

    def backup(self, path: Path | str) -> BackupResult:
        """Back one file up."""
        return self.backup_many([path])[0]

    def backup_many(self, paths: Iterable[Path | str | ListedFile]) -> list[BackupResult]:
        """Back files up in turn on one connection; all paths are checked before connecting."""
        items = [p if isinstance(p, ListedFile) else check_listed_file(Path(p), Path(p), None) for p in paths]
        self._load_identity()
        results: list[BackupResult] = []
        pending = deque(items)
        failures = 0
        channel: Channel | None = None
        session: _Session | None = None
        try:
            while pending:
                try:
                    if channel is None or session is None:
                        self._step = f"connecting to {self.server}"
                        channel = Channel.open(
                            self.server,
                            connect_timeout=self.connect_timeout,
                            read_timeout=self.read_timeout,
                            dialect=self.dialect,
                        )
                        session = self._open_session(channel)
                    result = self._send_file(channel, session, pending[0])
                except ForeignDialect as error:
                    done = f" ({len(results)} file(s) done before it)" if results else ""
                    raise FatalError(f"{error}{done}", results) from None
                except TimedOut as error:  # a silent server: a new connection would wait the same
                    self.reporter.warning(f"{SERVER_ERROR_LINE}: {error}")
                    raise self._timed_out(error, failures + 1, pending[0], results) from None
                except RetryableError as error:
                    if channel is not None:
                        channel.close()
                    channel = session = None
                    failures += 1
                    self.reporter.warning(f"{SERVER_ERROR_LINE}: {error}")
                    if failures > self.retries:
                        raise self._fatal(error, failures, pending[0], results) from None
                    delay = self.retry_delay * 2 ** (failures - 1)
                    self.reporter.warning(
                        f"retrying ({failures} of {self.retries}) on a new connection in {delay:g} s"
                    )
                    self.sleep(delay)
                    continue
                pending.popleft()
                results.append(result)
                failures = 0
                report = self.reporter.info if result.ok else self.reporter.warning
                report(result.describe())
        finally:
            if channel is not None:
                channel.close()
        return results

    # --- identity ---------------------------------------------------------------------------

    def _load_identity(self) -> None:
        if self._identity_loaded:
            return
        me_info = self.state_dir / ME_INFO
        if not me_info.exists():
            # registering writes me.info: find out now, not after the server took the name
            if not self.state_dir.is_dir() or not os.access(self.state_dir, os.W_OK | os.X_OK):
                raise ConfigError(
                    self.state_dir, None, f"not a writable folder; {ME_INFO} must be saved here"
                )
        else:
            identity = read_identity(me_info)
            if identity.name != self.name:
                self.reporter.warning(
                    f"{me_info} names the client {identity.name!r}, not {self.name!r}; "
                    f"reconnecting as {identity.name!r}"
                )
            self._check_priv_key(identity)
            self._identity = identity
        self._identity_loaded = True

    def _check_priv_key(self, identity: Identity) -> None:
        """priv.key mirrors me.info line 3: recreate it if missing, warn if it differs."""
        priv_key = self.state_dir / PRIV_KEY
        if not priv_key.exists():
            write_atomically(priv_key, private_key_base64(identity.private_key) + "\n")
            self.reporter.warning(f"{priv_key} was missing; written again from {ME_INFO}")
            return
        try:
            same = read_private_key_file(priv_key) == identity.private_key
        except ConfigError as error:
            self.reporter.warning(f"{error}; using the key of {ME_INFO}")
            return
        if not same:
            self.reporter.warning(f"{priv_key} differs from line 3 of {ME_INFO}; using {ME_INFO}")

    # --- session ----------------------------------------------------------------------------

    def _open_session(self, channel: Channel) -> _Session:
        """Steps 3-4 of spec 8.4: reconnect with me.info, or register; end KEYED."""
        identity = self._identity
        if identity is None:
            return self._register(channel, denied=identity)
        if not self.dialect.has_reconnect:
            return self._send_key_again(channel, identity)
        self._step = f"reconnecting as {identity.name!r}"
        response = channel.request(Reconnect(identity.client_id, identity.name))
        if isinstance(response, ReconnectApproved):
            self.reporter.info(f"reconnected as {identity.name!r} (client id {identity.client_id.hex()})")
            return self._keyed(identity, response.encrypted_aes_key)
        _check(response, ReconnectDenied)
        self.reporter.warning(
            f"the server does not know client {identity.client_id.hex()} named {identity.name!r} "
            f"with a public key ({self._code(ResponseCode.RECONNECT_DENIED)}, reconnect denied)"
        )
        return self._register(channel, denied=identity)

    def _register(self, channel: Channel, denied: Identity | None = None) -> _Session:
        self._step = f"registering as {self.name!r}"
        response = channel.request(Register(bytes(16), self.name))
        if isinstance(response, RegistrationFailed):
            if denied is not None:
                resumed = self._resume_registration(channel, denied)
                if resumed is not None:
                    return resumed
                advice = (
                    f"the server does not know the client of {self.state_dir / ME_INFO} "
                    f"(id {denied.client_id.hex()}, {self._code(ResponseCode.RECONNECT_DENIED)}) and "
                )
                after = f", or restore the {ME_INFO} that belongs to this name"
            else:
                advice = after = ""
            failed = self._code(ResponseCode.REGISTRATION_FAILED)
            raise FatalError(
                f"{advice}the name {self.name!r} is already registered on {self.server} "
                f"({failed}, registration failed). Pick another client name in line 2 of transfer.info "
                f"(or --name){after}"
            )
        registered = _check(response, Registered)
        identity = Identity(self.name, registered.client_id, generate_private_key())
        try:
            write_identity(self.state_dir, identity)
        except OSError as error:
            raise FatalError(
                f"registered as {self.name!r} (client id {registered.client_id.hex()}) but cannot save "
                f"{self.state_dir / ME_INFO}: {error.strerror or error}. Free space or fix permissions; the "
                "name stays taken on the server, so use another name afterwards"
            ) from None
        self._identity = identity
        self.reporter.info(f"registered as {self.name!r} (client id {identity.client_id.hex()})")
        return self._send_public_key(channel, identity)

    def _resume_registration(self, channel: Channel, identity: Identity) -> _Session | None:
        """After 2106 and 2101: a registration cut off between 2100 and 2102 left our id without a
        key, so 1102 is denied and the name is taken by ourselves; offering the saved key completes it
        (spec 8.4). None if the server refuses (2107: the name belongs to another client)."""
        try:
            session = self._send_public_key(channel, identity)
        except ServerRespondedWithError:
            return None
        self.reporter.info(f"completed the registration of {identity.name!r} with the saved key")
        return session

    def _send_key_again(self, channel: Channel, identity: Identity) -> _Session:
        """A returning client of a dialect without reconnect (2022C): SEND_PUBLIC_KEY with the saved
        id, name and key, answered by AES_KEY with a fresh key; a close is an error (retried)."""
        self._step = (
            f"sending the saved public key of {identity.name!r} again ({self.dialect.name} has no reconnect)"
        )
        self._resending_key = True
        session = self._send_public_key(channel, identity, step=self._step)
        self._resending_key = False
        self.reporter.info(f"keyed again as {identity.name!r} (client id {identity.client_id.hex()})")
        return session

    def _send_public_key(self, channel: Channel, identity: Identity, step: str | None = None) -> _Session:
        self._step = step or f"sending the public key of {identity.name!r}"
        response = channel.request(
            SendPublicKey(identity.client_id, identity.name, public_key_der(identity.private_key))
        )
        return self._keyed(identity, _check(response, AesKey).encrypted_aes_key)

    def _keyed(self, identity: Identity, wrapped: bytes) -> _Session:
        try:
            aes_key = unwrap_aes_key(identity.private_key, wrapped, self.dialect.aes_key_size)
        except CryptoError as error:
            size = self.dialect.aes_key_size
            raise ProtocolFailure(
                f"the AES key from the server is unusable with the private key of {ME_INFO}: {error} "
                f"({self.dialect.name} uses AES-{size * 8}: a {size}-byte key)"
            ) from None
        return _Session(identity.client_id, aes_key)

    # --- files ------------------------------------------------------------------------------

    def _send_file(self, channel: Channel, session: _Session, item: ListedFile) -> BackupResult:
        """Send a file up to `max_sends` times until the CRCs agree; 1104 or finally 1106."""
        file_name = item.file_name
        sent: _Sent | None = None
        server_crc: int | None = None
        for send in range(1, self.max_sends + 1):
            self._step = f"sending {file_name} (send {send} of {self.max_sends})"
            refused, sent = self._send_once(channel, session, item, first=send == 1)
            if refused is not None:
                return refused
            assert sent is not None
            self._step = f"waiting for the CRC of {file_name} ({self._code(ResponseCode.FILE_RECEIVED)})"
            wait = response_timeout(encrypted_size(sent.size), self.read_timeout)
            server_crc = _check(channel.receive(timeout=wait), FileReceived).cksum
            self._step = f"settling the CRC of {file_name}"
            if not sent.changed and server_crc == sent.crc:
                _check(channel.request(CrcOk(session.client_id, file_name)), Acknowledged)
                return BackupResult(
                    item.path, file_name, FileStatus.VERIFIED, sent.size, send, sent.crc, server_crc
                )
            why = "the file changed while it was read" if sent.changed else "CRC mismatch"
            why += f" (ours {sent.crc}, the server's {server_crc})"
            if send < self.max_sends:
                self.reporter.warning(f"{file_name}: {why}; sending again ({send + 1} of {self.max_sends})")
                channel.send(CrcRetry(session.client_id, file_name))
            else:
                self.reporter.warning(
                    f"{file_name}: {why}; giving up after {send} sends "
                    f"({self._code(RequestCode.CRC_GIVE_UP)})"
                )
        assert sent is not None
        _check(channel.request(CrcGiveUp(session.client_id, file_name)), Acknowledged)
        if sent.changed:
            status, detail = FileStatus.CHANGED, f"the file kept changing during {self.max_sends} sends"
        else:
            status = FileStatus.CRC_MISMATCH
            detail = (
                f"the server's CRC ({server_crc}) differed from ours ({sent.crc}) on all {self.max_sends} "
                "sends; the server keeps the copy marked unverified"
            )
        return BackupResult(
            item.path, file_name, status, sent.size, self.max_sends, sent.crc, server_crc, detail
        )

    def _send_once(
        self, channel: Channel, session: _Session, item: ListedFile, *, first: bool
    ) -> tuple[BackupResult | None, _Sent | None]:
        """One 1103 of the file; or, on the first send only, a result refusing it unsent.

        A resend must follow 1105 with a 1103, so a file that became unusable between sends
        ends the connection instead; the retry's first send then reports it.
        """
        try:
            stream = item.path.open("rb", buffering=0)
        except OSError as error:
            if first:
                detail = f"cannot read: {error.strerror}; not sent"
                return _unsent(item, FileStatus.UNREADABLE, 0, detail), None
            raise ConnectionFailed(f"{item.path} became unreadable between sends: {error.strerror}") from None
        with stream:
            size = os.fstat(stream.fileno()).st_size
            if encrypted_size(size) > self.max_content_size:
                if first:
                    detail = (
                        f"{size} bytes; one send carries at most {self.max_content_size - 1} bytes "
                        "(the protocol's limit); not sent"
                    )
                    return _unsent(item, FileStatus.TOO_LARGE, size, detail), None
                raise ConnectionFailed(f"{item.path} grew beyond the protocol's limit between sends")
            return None, self._stream_file(channel, session, item.file_name, stream, size)

    def _stream_file(
        self, channel: Channel, session: _Session, file_name: str, stream: io.RawIOBase, size: int
    ) -> _Sent:
        """Send one 1103: `size` bytes read, CRC'd and encrypted in chunks by a worker thread
        (`EncryptedContent`) while this thread sends the chunks before."""
        before = os.fstat(stream.fileno())
        original = size if self.dialect.packetised else None
        channel.send(SendFile(session.client_id, encrypted_size(size), file_name, original))
        self.reporter.file_started(file_name, size, self.clock())
        with EncryptedContent(stream, size, session.aes_key, self.chunk_size) as content:
            for data, done in content:
                # the engine passes content through as it is (a view: no copy); typed bytes
                channel.send(FileChunk(cast(bytes, data)))
                self.reporter.file_progress(done, self.clock())
        channel.send(FileChunk(content.final))
        channel.send(FileEnd())
        self.reporter.file_finished(self.clock())
        after = os.fstat(stream.fileno())
        changed = content.changed
        if stream.read(1) or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            changed = True
        return _Sent(content.crc, size, changed)

    # --- failures ---------------------------------------------------------------------------

    def _code(self, role: RequestCode | ResponseCode) -> int:
        """The wire code of a role in this client's dialect (for messages)."""
        return schemas_for(self.dialect).wire_code(role)

    def _fatal(
        self, error: RetryableError, attempts: int, item: ListedFile, results: list[BackupResult]
    ) -> FatalError:
        done = f"; {len(results)} file(s) done before it" if results else ""
        where = f"while {self._step}, backing up {item.path} to {self.server}"
        if isinstance(error, ServerRespondedWithError):
            text = self._server_error_advice(error, attempts, where, done)
        elif isinstance(error, ConnectionFailed):
            text = (
                f"{error} (failed {attempts} times, {where}){done}. Check that the server is running and "
                "that line 1 of transfer.info (or --server) names it; raise --connect-timeout for slow links"
            )
        else:
            text = (
                f"{error} (failed {attempts} times, {where}){done}. The server does not follow protocol v3 "
                f"({self.dialect.name}) as this client expects; report it to the server's maintainers"
            )
        return FatalError(text, results)

    def _timed_out(
        self, error: TimedOut, attempt: int, item: ListedFile, results: list[BackupResult]
    ) -> FatalError:
        done = f"; {len(results)} file(s) done before it" if results else ""
        return FatalError(
            f"{error} (attempt {attempt}, while {self._step}, backing up {item.path} to "
            f"{self.server}){done}. "
            "The server took the connection but stayed silent; a response timeout is not retried "
            f"(spec 8.4). Check the server, or raise --timeout (now {self.read_timeout:g} s) for a slow one",
            results,
        )

    def _server_error_advice(
        self, error: ServerRespondedWithError, attempts: int, where: str, done: str
    ) -> str:
        """The last words after server errors on every attempt: a returning 2022C client, a
        foreign dialect refusing our first request, or the server's own trouble."""
        ours = error.answer is not None and self.dialect.response_role(error.answer) is not None
        what = f"the server answered with an error ({error.answer})" if ours else str(error)
        text = f"{what} on all {attempts} attempts {where}{done}. "
        if self._resending_key:
            return text + (
                f"The server may not know this client any more ({self.dialect.name} cannot tell: it has no "
                f"reconnect); removing {self.state_dir / ME_INFO} makes the client register anew under a "
                "new id, leaving the files stored under the old one"
            )
        if error.first_request is not None:
            likely = dialects_refusing(self.dialect, error.first_request, error.answer)
            if likely:
                code = self.dialect.requests[error.first_request]
                return text + (
                    f"It refused our first request, {code} ({error.first_request.name}), which a "
                    f"{'/'.join(d.name for d in likely)} server does not know: if it speaks that dialect, "
                    f"{run_with(likely)}; otherwise check the server's log"
                )
        return text + "Check the server's log (disk space, database), then run the backup again"


def sendable_content_size(dialect: Dialect) -> int:
    """The largest content_size this client sends: the dialect's, and in a packetised dialect
    also what `total_packets` can count in our packets (spec/dialects.md 18.2)."""
    schemas = schemas_for(dialect)
    if dialect.packet_size is None:
        return schemas.max_content_size
    (total,) = (field for field in schemas.send_file_prefix.subcons if field.name == "total_packets")
    most_packets = (1 << (8 * total.sizeof())) - 1
    return min(schemas.max_content_size, most_packets * dialect.packet_size)


def _check(response: Response, expected: type[_R]) -> _R:
    """The engine has checked that `response` answers the request; narrow its type."""
    if not isinstance(response, expected):
        raise ProtocolFailure(f"unexpected {type(response).__name__} ({int(response.code)})")
    return response


def _unsent(item: ListedFile, status: FileStatus, size: int, detail: str) -> BackupResult:
    return BackupResult(item.path, item.file_name, status, size, 0, detail=detail)
