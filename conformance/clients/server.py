"""A scripted server for client cases: backupproto's `ServerConnection` on a loopback socket,
answering as a `Script` says (honest by default; lying CRCs, 2107s, silence, early closes on
request), and recording every connection decoded for the judge. Each connection is read through
backupproto's blocking `Channel` (io.channel), whose receiver shows every byte to the `RequestTap`
before the engine."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from backupproto import crypto
from backupproto.cksum import Cksum
from backupproto.dialect import V3, Dialect, ResponseCode
from backupproto.engine import ServerConnection
from backupproto.errors import BackupProtoError
from backupproto.events import (
    PAUSED,
    Acknowledged,
    AesKey,
    ConnectionClosed,
    CrcGiveUp,
    CrcOk,
    CrcRetry,
    Event,
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
from backupproto.io.channel import Channel, ChannelTimeout, ConnectionLost, StreamEnded
from backupproto.io.listener import ThreadedListener
from backupproto.schemas import schemas_for
from conformance.describe import describe_event, describe_request_bytes

from .tap import PacketRecord, RequestTap

POLL_S = 0.1
"""The longest a session waits for the client before it looks whether the case is over."""
MAX_SENDS_SERVED = 6
"""Copies of one file a connection takes before the server closes it (a client that never gives up)."""


@dataclass
class Script:
    """How the scripted server answers. The defaults make an honest server."""

    taken_names: frozenset[str] = frozenset()
    """1100 with one of these names gets 2101."""
    known: dict[bytes, tuple[str, crypto.RsaKey | None]] = field(default_factory=dict)
    """Clients a 1102 may reconnect as: id -> (name, public key); registrations are added."""
    deny_reconnect: bool = False
    crc_lies: int = 0
    """How many 2103s of each file (counted over the whole run) carry a wrong cksum."""
    failing_connections: int = 0
    """The first request of this many connections is answered 2107 (then the server closes)."""
    close_after_content: int | None = None
    """On the first connection, close after this many bytes of the first 1103's content."""
    silent: bool = False
    """Never answer; read until the client closes."""
    unknown_code_connections: int = 0
    """The first request of this many connections is answered with an unknown response code."""
    unknown_code: int = 2199
    response_dialect: Dialect | None = None
    """Answer with this dialect's response codes (same payloads) instead of the client's."""


@dataclass
class FileRecord:
    """One 1103 as received: its fields, and what its content decrypts to."""

    file_name: str
    content_size: int
    payload_size: int
    received: int = 0
    plain_size: int = 0
    plain_cksum: int = 0
    cipher_sha256: str = ""
    decrypt_error: str | None = None
    complete: bool = False
    short_key_cksum: int | None = None
    """2024: the cksum the content decrypts to with only the first 16 bytes of the 32-byte key
    (None: it does not decrypt that way)."""


@dataclass
class Connection:
    """One accepted connection: the decoded conversation and what it carried."""

    number: int
    lines: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    raw_requests: list[bytes] = field(default_factory=list)
    """Header and fixed payload of each request (a 1103 without its content)."""
    files: list[FileRecord] = field(default_factory=list)
    responses: list[Response | int] = field(default_factory=list)
    aes_key: bytes | None = None
    error: str | None = None
    rejected_bytes: bytes = b""
    """The start of the request the engine refused (for diagnosis)."""
    closed_by: str = ""
    wire_codes: list[int] = field(default_factory=list)
    """Every request code as sent, refused ones and later packets included."""
    packets: list[PacketRecord] = field(default_factory=list)
    """Every send-file message's numbers as sent (2024: every packet)."""

    def codes(self) -> list[int]:
        """The request codes in order."""
        return [int(request.code) for request in self.requests]


class ScriptedServer:
    """Serves each connection in its own thread until `stop`; `connections` is the record."""

    def __init__(
        self, script: Script, *, dialect: Dialect = V3, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.script = script
        self.dialect = dialect
        self.schemas = schemas_for(dialect)
        self._listener = ThreadedListener(listen, self._handle)
        self.address: tuple[str, int] = (self._listener.address.host, self._listener.address.port)
        self.connections: list[Connection] = []
        self.crc_lies_told: dict[str, int] = {}
        self.keys_sent: list[bytes] = []
        self._stop = threading.Event()
        self._open = 0
        self.idle = threading.Event()
        """Set while no connection is open."""
        self.idle.set()
        self.activity = threading.Condition()

    @property
    def stopping(self) -> bool:
        """True once `stop` was called (the case is over)."""
        return self._stop.is_set()

    def start(self) -> ScriptedServer:
        self._listener.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end the open connections, wait for their threads."""
        self._stop.set()
        self._listener.close(timeout=10)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _handle(self, sock: socket.socket, number: int) -> None:
        record = Connection(number)
        with self.activity:
            self.connections.append(record)
            self.connections.sort(key=lambda connection: connection.number)
            self._open += 1
            self.idle.clear()
            self.activity.notify_all()
        try:
            _Session(self, sock, record).run()
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self.activity:
                self._open -= 1
                if not self._open:
                    self.idle.set()
                self.activity.notify_all()

    def describe(self, event: Request | Response) -> str:
        """`describe_event` with the dialect's wire code in front of the role's name (1025 REGISTER)."""
        role = int(event.code)
        if isinstance(event, Request):
            wire = self.dialect.requests.get(event.code, role)
        else:
            wire = self.dialect.responses.get(event.code, role)
        return f"{wire}{describe_event(event)[len(str(role)) :]}"

    def wrap_key(self, public_key: crypto.RsaKey) -> tuple[bytes, bytes]:
        """(fresh AES key, wrapped with OAEP SHA-1 to `public_key`)."""
        key = crypto.new_aes_key(self.dialect.aes_key_size)
        self.keys_sent.append(key)
        return key, crypto.wrap_aes_key(public_key, key)


class _Session:
    """One connection driven through the engine."""

    def __init__(self, server: ScriptedServer, sock: socket.socket, record: Connection) -> None:
        self.server, self.record = server, record
        self.script = server.script
        self.engine = ServerConnection(server.dialect)
        self.tap = RequestTap(server.schemas)
        record.wire_codes, record.packets = self.tap.codes, self.tap.packets
        self.file: FileRecord | None = None
        self.decryptor: crypto.CbcDecryptor | None = None
        self.cksum = Cksum()
        self.digest = hashlib.sha256()
        self.short_key: tuple[crypto.CbcDecryptor, Cksum] | None = None
        self.client_id = b""
        self.sends: dict[str, int] = {}
        self.first_request = True
        self.channel = Channel(sock, _Tapped(self.tap, self.engine), timeout=POLL_S)

    def run(self) -> None:
        """Read and answer through the channel until the client closes, the server closes, or
        the suite stops the server (each wait is bounded by POLL_S to watch `stopping`)."""
        channel = self.channel
        while not self.server.stopping:
            try:
                event = channel.next_event()
                if event is PAUSED:  # a silent script left a request unanswered: read on until a close
                    if not channel.peer_closed:
                        channel.receive_more()
                        continue
                    event = ConnectionClosed()
            except ChannelTimeout:
                continue
            except StreamEnded:
                event = ConnectionClosed()
            except ConnectionLost as lost:
                self.record.lines.append(f"!! connection reset by the client ({lost.error})")
                self.record.closed_by = "client (reset)"
                return
            except BackupProtoError as error:
                if channel.peer_closed:
                    self.record.closed_by = "client"
                self._reject(error)
                return
            if isinstance(event, ConnectionClosed):
                self.record.closed_by = "client"
                self.record.lines.append("-- the client closed the connection")
                return
            if not self._handle(event):
                return
        self.record.lines.append("-- the suite stopped the server (case over)")

    def _handle(self, event: Event) -> bool:
        """Handle one event of the engine; False once the server closed the connection."""
        if isinstance(event, FileChunk):
            self._content(event.data)
            return self._content_allowed()
        if isinstance(event, FileEnd):
            assert self.file is not None
            request: Request = self.record.requests[-1]
            self._finish_file()
        else:
            assert isinstance(event, Request)
            request = event
            self._received(request)
            if isinstance(request, SendFile):
                self._start_file(request)
                return True
        return self._answer(request)

    def _received(self, request: Request) -> None:
        start = self.tap.starts.popleft()
        self.record.raw_requests.append(start.raw)
        self.record.requests.append(request)
        self.client_id = request.client_id
        line = f">> {self.server.describe(request)}"
        if start.packet is not None:
            line += f" (payload_size={start.payload_size}{_packet_text(start.packet)})"
        self.record.lines.append(line)

    # --- file content -------------------------------------------------------------------------

    def _start_file(self, request: SendFile) -> None:
        header = self.server.schemas.request_header.parse(self.record.raw_requests[-1])
        self.file = FileRecord(request.file_name, request.content_size, header.payload_size)
        self.record.files.append(self.file)
        self.sends[request.file_name] = self.sends.get(request.file_name, 0) + 1
        key = self.record.aes_key
        self.decryptor = crypto.CbcDecryptor(key) if key is not None else None
        self.cksum, self.digest = Cksum(), hashlib.sha256()
        short = key is not None and len(key) > 16
        self.short_key = (crypto.CbcDecryptor(key[:16]), Cksum()) if key is not None and short else None

    def _content(self, data: bytes) -> None:
        assert self.file is not None
        self.file.received += len(data)
        self.digest.update(data)
        if self.short_key is not None:
            try:
                self.short_key[1].update(self.short_key[0].update(data))
            except BackupProtoError:
                self.short_key = None
        if self.decryptor is not None and self.file.decrypt_error is None:
            try:
                plain = self.decryptor.update(data)
            except BackupProtoError as error:
                self.file.decrypt_error = str(error)
                return
            self.cksum.update(plain)
            self.file.plain_size += len(plain)

    def _content_allowed(self) -> bool:
        limit = self.script.close_after_content
        if limit is None or self.record.number != 1 or len(self.record.files) != 1:
            return True
        assert self.file is not None
        if self.file.received < limit:
            return True
        self.record.lines.append(
            f"-- the server closes the connection after {self.file.received} of "
            f"{self.file.content_size} content bytes (scripted)"
        )
        self.record.closed_by = "server (scripted, mid-transfer)"
        return False

    def _finish_file(self) -> None:
        file = self.file
        assert file is not None
        file.complete = True
        for _ in range(1, self.record.packets[-1].total_packets or 1):  # later packets: no event
            if self.tap.starts:
                self.tap.starts.popleft()
        if self.short_key is not None:
            try:
                self.short_key[1].update(self.short_key[0].finalize())
                file.short_key_cksum = self.short_key[1].value
            except BackupProtoError:
                pass
        if self.decryptor is not None and file.decrypt_error is None:
            try:
                plain = self.decryptor.finalize()
                self.cksum.update(plain)
                file.plain_size += len(plain)
            except BackupProtoError as error:
                file.decrypt_error = str(error)
        file.plain_cksum = self.cksum.value
        file.cipher_sha256 = self.digest.hexdigest()
        outcome = file.decrypt_error or f"decrypts to {file.plain_size} bytes, cksum {file.plain_cksum}"
        self.record.lines.append(f"   ({file.received} content bytes; {outcome})")

    # --- answers ------------------------------------------------------------------------------

    def _answer(self, request: Request) -> bool:
        """Send the scripted answer; False when the server closed the connection."""
        script = self.script
        first, self.first_request = self.first_request, False
        if script.silent:
            self.record.lines.append("   (the scripted server does not answer)")
            return True
        number = self.record.number
        if first and number <= script.failing_connections:
            return self._fail("scripted")
        if first and number <= script.unknown_code_connections:
            schemas = self.server.schemas
            data = schemas.build_response_header(script.unknown_code, 0)
            self.record.responses.append(script.unknown_code)
            self.record.lines.append(f"<< {script.unknown_code} (an unknown response code, empty payload)")
            self._write(data)
            return True
        response = self._honest(request)
        if response is None:
            return True
        if isinstance(response, ServerError):
            return self._fail("refused")
        self._send(response)
        return True

    def _honest(self, request: Request) -> Response | None:
        script = self.script
        if isinstance(request, Register):
            if request.name in script.taken_names:
                return RegistrationFailed()
            client_id = crypto.new_aes_key()  # 16 random bytes
            script.known[client_id] = (request.name, None)
            self.client_id = client_id
            return Registered(client_id)
        if isinstance(request, SendPublicKey):
            try:
                public = crypto.import_public_key(request.public_key)
            except BackupProtoError as error:
                self.record.error = f"unusable public key: {error}"
                return ServerError()
            script.known[request.client_id] = (request.name, public)
            self.record.aes_key, wrapped = self.server.wrap_key(public)
            return AesKey(request.client_id, wrapped)
        if isinstance(request, Reconnect):
            known = script.known.get(request.client_id)
            if script.deny_reconnect or known is None or known[0] != request.name or known[1] is None:
                return ReconnectDenied(request.client_id)
            self.record.aes_key, wrapped = self.server.wrap_key(known[1])
            return ReconnectApproved(request.client_id, wrapped)
        if isinstance(request, SendFile):
            file = self.file
            assert file is not None
            if file.decrypt_error is not None:
                return ServerError()
            if self.sends[file.file_name] > MAX_SENDS_SERVED:
                self.record.lines.append(f"-- the server closes: {MAX_SENDS_SERVED} copies of one file")
                self.record.closed_by = "server (too many copies of one file)"
                return ServerError()
            told = self.server.crc_lies_told.get(file.file_name, 0)
            cksum = file.plain_cksum
            if told < script.crc_lies:
                self.server.crc_lies_told[file.file_name] = told + 1
                cksum ^= 0xFFFFFFFF
            return FileReceived(request.client_id, file.content_size, file.file_name, cksum)
        if isinstance(request, CrcOk | CrcGiveUp):
            return Acknowledged(request.client_id)
        assert isinstance(request, CrcRetry)
        return None

    def _fail(self, why: str) -> bool:
        """The server's error: SERVER_ERROR then close, or (2022C, no such code) a close; False."""
        dialect = self.server.dialect
        if dialect.has_server_error:
            self._send(ServerError())
            code = dialect.responses[ResponseCode.SERVER_ERROR]
            self.record.closed_by = f"server (after {code}: {why})"
        else:
            self.record.lines.append(f"-- the server closes ({dialect.name} has no SERVER_ERROR)")
            self.record.closed_by = f"server (a close instead of an error response: {why})"
        return False

    def _send(self, response: Response) -> None:
        try:
            data = self.engine.send(response)
        except BackupProtoError as error:  # the script broke the engine's rules: a suite bug
            self.record.error = f"the scripted server could not send {response.code.name}: {error}"
            return
        other = self.script.response_dialect
        line = f"<< {self.server.describe(response)}"
        if other is not None:
            header_size = self.server.schemas.response_header_size
            schemas = schemas_for(other)
            data = schemas.build_response_header(other.responses[response.code], len(data) - header_size) + (
                data[header_size:]
            )
            line += f" sent as {other.name}'s {other.responses[response.code]}"
        self.record.responses.append(response)
        self.record.lines.append(line)
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self.channel.send_bytes(data)
        except ConnectionLost as lost:
            self.record.lines.append(f"!! could not send: {lost.error}")
        except ChannelTimeout as silence:
            self.record.lines.append(f"!! could not send: {silence}")

    def _reject(self, error: BackupProtoError) -> None:
        self.record.error = str(error)
        self.record.rejected_bytes = self.tap.pending()
        rejected = self.record.rejected_bytes
        shown = describe_request_bytes(rejected) if rejected else "nothing"
        self.record.lines.append(f"!! malformed request: {error}")
        self.record.lines.append(f"   received: {shown}")
        self.record.lines.append(f"   bytes: {self.record.rejected_bytes[:64].hex(' ')}")
        with contextlib.suppress(BackupProtoError):
            self._fail("malformed request")


class _Tapped:
    """The engine as the channel's receiver, every byte shown to the tap first (the tap reads
    the requests the engine refuses too)."""

    def __init__(self, tap: RequestTap, engine: ServerConnection) -> None:
        self.tap, self.engine = tap, engine

    def receive_data(self, data: bytes) -> None:
        self.tap.feed(data)
        self.engine.receive_data(data)

    def next_event(self) -> Any:
        return self.engine.next_event()


def _packet_text(packet: PacketRecord) -> str:
    if packet.packet_number is None:
        return ""
    return (
        f", packet {packet.packet_number} of {packet.total_packets}, content_size={packet.content_size}, "
        f"orig_file_size={packet.orig_file_size}, {packet.length} content bytes"
    )

