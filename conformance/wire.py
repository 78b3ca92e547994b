"""`Wire`: a TCP client for the server under test that records, decodes and checks every byte.

Requests are built with backupproto.schemas (well-formed, or deliberately malformed from
raw field values); responses are read leniently first (to name a deviation precisely:
big-endian fields, zero padding, a payload_size that disagrees with the bytes) and then
parsed strictly with backupproto.schemas. The bytes move through the library's one channel
(`backupproto.io.channel.ByteChannel`: raw bytes by count, no framing trusted).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

from backupproto.crypto import CbcEncryptor, encrypted_size
from backupproto.detect import dialects_with_code
from backupproto.dialect import Dialect, RequestCode, ResponseCode
from backupproto.engine import event_fields
from backupproto.errors import BackupProtoError
from backupproto.events import RESPONSE_EVENTS, Registered, Request, Response, ServerError
from backupproto.frames import send_file_start
from backupproto.io.channel import ByteChannel, ByteStream, ChannelTimeout, ConnectionLost, StreamEnded
from backupproto.packets import PacketSender
from backupproto.schemas import Schemas, schemas_for

from . import transport
from .describe import (
    RESPONSE_CODE_BYTES,
    RESPONSE_HEADER_SIZE,
    RESPONSE_SIZE_BYTES,
    code_name,
    describe_event,
    describe_request_bytes,
    role_name,
)


class Endpoint(Protocol):
    """Where the server under test listens (`conformance.case.Target`)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class CaseContext(Protocol):
    """What a `Wire` needs of the running case (`conformance.case.CaseContext`); a protocol, so
    that this module does not import `conformance.case` (which imports it)."""

    @property
    def target(self) -> Endpoint: ...

    @property
    def info(self) -> transport.CaseInfo | None: ...

    timeout_s: float
    wires: list[Wire]
    dialect: Dialect

    def fail(self, expected: str, actual: str, *, hint: str = "") -> NoReturn: ...

    def close(self) -> None: ...


_R = TypeVar("_R", bound=Response)
_PREVIEW = 96
_DRAIN_S = 0.3
_CARRY_CLIENT_ID = {
    ResponseCode.REGISTERED,
    ResponseCode.AES_KEY,
    ResponseCode.FILE_RECEIVED,
    ResponseCode.ACKNOWLEDGED,
    ResponseCode.RECONNECT_APPROVED,
    ResponseCode.RECONNECT_DENIED,
}


class Closed(Exception):
    """The server closed (or reset) the connection; `data` is what arrived of the current read."""

    def __init__(self, data: bytes = b"", reset: bool = False) -> None:
        super().__init__("connection reset by the server" if reset else "connection closed by the server")
        self.data = data
        self.reset = reset


class _Timeout(Exception):
    def __init__(self, data: bytes) -> None:
        super().__init__("timeout")
        self.data = data


@dataclass(frozen=True)
class Received:
    """One response as it arrived: raw bytes, header fields, the parsed event."""

    raw: bytes
    version: int
    code: int
    payload_size: int
    event: Response


@dataclass(frozen=True)
class _Entry:
    arrow: str
    text: str
    preview: bytes
    size: int


def response_name(cls: type[Response], schemas: Schemas) -> str:
    """``2100 REGISTERED``: a response class named with its wire code in the dialect of `schemas`."""
    return role_name(cls.code, request=False, schemas=schemas)


def foreign_code_hint(code: int, dialect: Dialect, *, request: bool = False) -> str:
    """'' unless `code` is a code of other dialects: then a diagnosis naming them."""
    others = [d.name for d in dialects_with_code(code, requests=request) if d.name != dialect.name]
    if not others:
        return ""
    return (
        f"{code} is a {'/'.join(others)} code, not a {dialect.name} one: the server speaks (or mixes in) "
        f"another dialect (spec dialects 17; --bp-dialect auto detects the server's dialect)"
    )


class Wire:
    """One connection to the target, with a transcript of every byte sent and received."""

    def __init__(self, context: CaseContext, label: str) -> None:
        self.context = context
        self.label = label
        self.timeout_s = context.timeout_s
        self.dialect = context.dialect
        self.schemas = schemas_for(context.dialect)
        self._entries: list[_Entry] = []
        self.send_error: OSError | None = None
        self._reconnect_before_send = ""
        """Why the next send opens a new connection first (adaptation); '' for no reconnect."""
        self.channel: ByteChannel | None = None
        """The connection (None once closed by the suite)."""
        self._stream = ByteStream()
        """The bytes received on the current connection and not read yet."""
        self._open()

    @property
    def peer_closed(self) -> bool:
        """True once the server closed (or reset) the current connection."""
        return self._stream.ended

    def _open(self) -> None:
        """Connect (adaptation: a server serving one connection at a time gets the others closed first)."""
        target = (self.context.target.host, self.context.target.port)
        try:
            sock = transport.connect(self.context.info, target, self.timeout_s, self._close_others)
        except OSError as error:
            self.fail(f"a TCP connection to {self.context.target}", f"connect failed: {error}")
        self.channel = ByteChannel.around(sock, timeout=self.timeout_s)
        self._stream = self.channel.receiver

    def _close_others(self) -> None:
        """Adaptation for a server that serves one connection at a time: close the case's others."""
        for wire in self.context.wires:
            if wire is not self and wire.channel is not None:
                wire.note("closed by the suite (adaptation: the server serves one connection at a time)")
                wire.close()
                wire._reconnect_before_send = "the server serves one connection at a time"

    def _reopen(self) -> None:
        """Adaptation (one request per connection, one connection at a time): a new connection."""
        self.close()
        self.send_error = None
        self.note(f"new connection for the next request (adaptation: {self._reconnect_before_send})")
        self._reconnect_before_send = ""
        self._open()

    # -- transcript -------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """Add a remark to the transcript."""
        self._entries.append(_Entry("--", text, b"", 0))

    def _record(self, arrow: str, text: str, data: bytes) -> None:
        self._entries.append(_Entry(arrow, text, bytes(data[:_PREVIEW]), len(data)))

    def transcript_lines(self) -> list[str]:
        """The conversation so far, one message per entry, with hex of its bytes."""
        lines = [f"conversation {self.label} ({self.context.target}):"]
        if not self._entries:
            lines.append("  (nothing sent or received)")
        for entry in self._entries:
            lines.append(f"  {entry.arrow} {entry.text}")
            if entry.size:
                more = f" ... ({entry.size} bytes)" if entry.size > len(entry.preview) else ""
                lines.append(f"       {entry.preview.hex(' ')}{more}")
        return lines

    def sent_lines(self) -> list[str]:
        """What this connection sent, one decoded line per message."""
        return [entry.text for entry in self._entries if entry.arrow == "->"]

    def fail(self, expected: str, actual: str, *, hint: str = "") -> NoReturn:
        """Fail the running case with this connection's conversation in the message."""
        if self not in self.context.wires:
            self.context.wires.append(self)
        self.context.fail(expected, actual, hint=hint)

    # -- sending ----------------------------------------------------------------------------

    def send_bytes(self, data: bytes, description: str | None = None) -> bool:
        """Send raw bytes (recorded); False if the server had already closed or reset."""
        if self._reconnect_before_send:
            self._reopen()
        self._record("->", description or describe_request_bytes(data, self.schemas), data)
        if self.channel is None or self.send_error is not None:
            return False
        if not self._send_raw(data):  # the server may close early after refusing a header
            self.note(f"sending stopped: {self.send_error}")
            return False
        return True

    def _send_raw(self, data: bytes) -> bool:
        """Send unrecorded bytes; False (and `send_error` set if sending failed) when not sent."""
        if self.channel is None or self.send_error is not None:
            return False
        try:
            self.channel.send_bytes(data)
        except ChannelTimeout as silence:
            self.send_error = silence
        except ConnectionLost as lost:
            self.send_error = lost.error
        return self.send_error is None

    def send(self, request: Request, *, version: int | None = None) -> bool:
        """Send a well-formed request (any request, in any state), built by backupproto.schemas."""
        data = self.schemas.build_request(request.code, request.client_id, event_fields(request), version)
        return self.send_bytes(data, describe_event(request, self.schemas))

    def send_header(self, client_id: bytes, code: int, payload_size: int, version: int | None = None) -> bool:
        """Send a request header with any field values (a role is sent as the dialect's wire code)."""
        return self.send_bytes(self.schemas.build_request_header(client_id, code, payload_size, version))

    def send_file(
        self,
        client_id: bytes,
        file_name: str | bytes,
        plaintext: bytes | Iterable[bytes],
        aes_key: bytes,
        *,
        plain_size: int | None = None,
    ) -> int:
        """Send a file (1103's role): the plaintext encrypted as one AES-CBC stream, streamed, in the
        dialect's layout (2024: packets of the dialect's packet size); returns content_size."""
        chunks: Iterable[bytes] = [plaintext] if isinstance(plaintext, bytes) else plaintext
        size = len(plaintext) if isinstance(plaintext, bytes) else plain_size
        if size is None:
            raise ValueError("plain_size is required when the plaintext is given in chunks")
        content_size = encrypted_size(size)
        fields: dict[str, object] = {"content_size": content_size, "file_name": file_name}
        framed = self.content_framer(client_id, fields, size)
        self.send_bytes(framed(b""))
        encryptor = CbcEncryptor(aes_key)
        sent = 0
        for chunk in itertools.chain(chunks, [None]):
            data = encryptor.update(chunk) if chunk is not None else encryptor.finalize()
            sent += len(data)
            if data:
                self._send_raw(framed(data))
            if self.send_error is not None:
                break
        self._record("->", f"content: {sent} of {content_size} encrypted bytes ({size} plaintext)", b"")
        if self.send_error is not None:
            self.note(f"sending stopped: {self.send_error}")
        return content_size

    def content_framer(self, client_id: bytes, fields: dict[str, object], plain_size: int) -> Any:
        """A function: content bytes -> bytes to send (b'' gives the first header and prefix)."""
        dialect = self.dialect
        if dialect.packet_size is None:
            start = send_file_start(client_id, fields, schemas=self.schemas).data
            return lambda data: data if data else start
        sender = PacketSender(
            self.schemas, client_id, {**fields, "orig_file_size": plain_size}, dialect.packet_size
        )
        first = sender.start()
        return lambda data: sender.content(data) if data else first

    def shutdown_write(self) -> None:
        """Half-close: tell the server we send nothing more."""
        self.note("client shuts down its sending side")
        if self.channel is not None:
            with contextlib.suppress(ConnectionLost):
                self.channel.shutdown_write()

    # -- receiving --------------------------------------------------------------------------

    def _recv_exact(self, size: int, timeout_s: float) -> bytes:
        """Exactly `size` bytes; `Closed` with what arrived (cleared), `_Timeout` with what arrived
        so far (kept)."""
        if self.channel is None:
            raise Closed(self._stream.take())
        try:
            return self.channel.receive_exact(size, timeout_s)
        except ChannelTimeout as silence:
            raise _Timeout(silence.received) from None
        except StreamEnded:
            raise Closed(self._stream.take()) from None
        except ConnectionLost as lost:
            if not isinstance(lost.error, ConnectionResetError | ConnectionAbortedError):
                raise
            raise Closed(self._stream.take(), reset=True) from None

    def drain(self, seconds: float, limit: int = 65536) -> bytes:
        """Whatever arrives within `seconds` (at most `limit` bytes), without failing."""
        if self.channel is None:
            return self._stream.take(limit)
        return self.channel.receive_up_to(limit, seconds)

    def receive(
        self, timeout_s: float | None = None, *, waiting_for: str = "a response", silence_hint: str = ""
    ) -> Received:
        """Read one response; fail with a precise diagnosis if it is malformed. Raises `Closed`."""
        timeout = transport.response_wait_s(self.context.info, waiting_for, timeout_s or self.timeout_s)
        try:
            head = self._recv_exact(RESPONSE_HEADER_SIZE, timeout)
        except Closed as closed:
            if closed.data:
                self._record("<-", "part of a response header, then the connection closed", closed.data)
                self.fail(f"{waiting_for}: a 7-byte response header", f"{len(closed.data)} bytes, then close")
            self.note("the server closed the connection" + (" (reset)" if closed.reset else ""))
            raise
        except _Timeout as timeout_error:
            if timeout_error.data:
                self._record("<-", "part of a response header (then silence)", timeout_error.data)
                actual = f"{len(timeout_error.data)} bytes of a response header within {timeout:g} s"
            else:
                self.note(f"nothing arrived within {timeout:g} s")
                actual = f"no response: nothing arrived within {timeout:g} s (the connection stayed open)"
            self.fail(
                waiting_for,
                actual,
                hint=silence_hint or "the server did not answer in time (--bp-timeout-s sets this wait)",
            )
        head = self._adapt_byte_order(head)
        raw = self.schemas.response_header.parse(head)
        version, code, size = raw.version, raw.code, raw.payload_size
        known = self._check_header(head, version, code, size, waiting_for)
        try:
            payload = self._recv_exact(size, timeout)
        except (Closed, _Timeout) as short:
            data = short.data
            name = code_name(code, request=False, schemas=self.schemas)
            self._record("<-", f"{name} with {len(data)} of {size} bytes", head + data)
            was_closed = isinstance(short, Closed)
            ended = "then the connection closed" if was_closed else f"then {timeout:g} s of silence"
            self.fail(
                f"{waiting_for}: {size} payload bytes as payload_size announces",
                f"{len(data)} payload bytes, {ended}",
                hint=self._short_payload_hint(known, size, len(data)),
            )
        try:
            values = self.schemas.parse_payload(self.schemas.responses[known], payload, RESPONSE_HEADER_SIZE)
        except BackupProtoError as error:
            name = code_name(code, request=False, schemas=self.schemas)
            self._record("<-", f"{name} (malformed payload)", head + payload)
            self.fail(f"{waiting_for}: a well-formed {name} payload", str(error))
        event = RESPONSE_EVENTS[known](**values)
        self._record("<-", describe_event(event, self.schemas), head + payload)
        self._adapt_after_response(len(head) + len(payload))
        return Received(head + payload, version, code, size, event)

    def _adapt_byte_order(self, head: bytes) -> bytes:
        """Adaptation for a big-endian server: the header's integers read big-endian."""
        raw = self.schemas.response_header.parse(head)
        known = self.schemas.response_role(raw.code) is not None
        if known or not transport.adapting(self.context.info, "big-endian"):
            return head
        code = int.from_bytes(raw.code.to_bytes(2, "little"), "big")
        size = int.from_bytes(raw.payload_size.to_bytes(4, "little"), "big")
        self.note("response header read big-endian (adaptation)")
        return self.schemas.build_response_header(code, size, raw.version)

    def _adapt_after_response(self, length: int) -> None:
        """Adaptations after a whole response: strip zero padding; reconnect before the next request."""
        found = transport.profile()
        if found is None:
            return
        padding = found.padded_to - length
        if padding > 0 and transport.adapting(self.context.info, "zero-padding"):
            try:
                stripped = self._recv_exact(padding, min(self.timeout_s, 2.0))
            except (Closed, _Timeout) as short:
                stripped = short.data
            self.note(f"{len(stripped)} padding bytes stripped (adaptation)")
        if found.closes_after_each_response and transport.adapting(
            self.context.info, "one-request-per-connection"
        ):
            self._reconnect_before_send = "one request per connection"

    def _check_header(
        self, head: bytes, version: int, code: int, size: int, waiting_for: str
    ) -> ResponseCode:
        """The response's role; fail with a diagnosis if the header is not a valid one of the dialect."""
        label = "response header"
        schemas, dialect = self.schemas, self.dialect
        if head == bytes(len(head)):
            extra = self.drain(_DRAIN_S)
            self._record("<-", "7 zero bytes where a response header belongs", head + extra)
            self.fail(
                f"{waiting_for}: a response header (version 3)",
                f"{len(head) + len(extra)} zero bytes",
                hint="zero bytes follow the previous response: responses look zero-padded to a fixed "
                "packet size (spec 3: 'There is no delimiter and no padding between messages')",
            )
        if version != dialect.version and not transport.adapting(self.context.info, "version"):
            self._record("<-", f"{label} with version {version}", head + self.drain(_DRAIN_S))
            self.fail(
                f"{waiting_for} with version {dialect.version} (spec 3.2)",
                f"version {version} in the response header",
            )
        found = schemas.response_role(code)
        if found is None:
            swapped = int.from_bytes(head[RESPONSE_CODE_BYTES], "big")
            self._record("<-", f"{label} with unknown code {code}", head + self.drain(_DRAIN_S))
            hint = foreign_code_hint(code, dialect)
            swapped_role = schemas.response_role(swapped)
            if swapped_role is not None:
                hint = (
                    f"the code bytes {head[RESPONSE_CODE_BYTES].hex(' ')} read big-endian give {swapped} "
                    f"({swapped_role.name}): the server writes big-endian integers (spec 3.3)"
                )
            codes = sorted(dialect.responses.values())
            self.fail(
                f"{waiting_for}: a {dialect.name} response code {codes[0]}..{codes[-1]}",
                f"code {code}",
                hint=hint,
            )
        known = found
        rule = schemas.response_size_rule(known)
        if rule.minimum <= size <= rule.maximum:
            return known
        swapped = int.from_bytes(head[RESPONSE_SIZE_BYTES], "big")
        extra = self.drain(_DRAIN_S)
        self._record(
            "<-", f"{code_name(code, request=False, schemas=schemas)} with payload_size {size}", head + extra
        )
        if rule.minimum <= swapped <= rule.maximum:
            hint = (
                f"the payload_size bytes {head[RESPONSE_SIZE_BYTES].hex(' ')} read big-endian give "
                f"{swapped}: "
                "the server writes big-endian integers (spec 3.3)"
            )
        elif known in _CARRY_CLIENT_ID and size == rule.minimum - 16 and len(extra) <= size:
            hint = f"{known.name} is {size} bytes shorter by exactly 16: the client_id is missing (spec 5)"
        elif extra and size < rule.minimum:
            hint = (
                f"payload_size says {size} but {len(extra)} bytes followed the header: "
                "the payload_size field disagrees with the bytes sent (too small"
                + (", 0 with a payload following)" if size == 0 else ")")
            )
        elif size > rule.maximum:
            hint = (
                f"payload_size {size} is larger than the layout allows and {len(extra)} bytes followed: "
                "payload_size too large"
            )
        else:
            hint = f"{len(extra)} bytes followed the header"
        self.fail(
            f"{waiting_for}: {known.name} with payload_size {rule.describe()} (spec 5)",
            f"payload_size {size}",
            hint=hint,
        )

    @staticmethod
    def _short_payload_hint(code: ResponseCode, announced: int, got: int) -> str:
        if got < announced:
            return (
                f"payload_size {announced} is larger than the {got} bytes the server sent "
                "(payload_size too large)"
            )
        return ""

    def expect(self, *expected: type[_R], client_id: bytes | None = None, waiting_for: str = "") -> _R:
        """Receive one response of one of the `expected` classes (client_id checked if given)."""
        names = " or ".join(response_name(cls, self.schemas) for cls in expected)
        what = waiting_for or names
        try:
            received = self.receive(waiting_for=what)
        except Closed:
            hint = self._death_hint() or self._close_hint()
            self.fail(names, "the server closed the connection without a response", hint=hint)
        event = received.event
        if not isinstance(event, expected):
            hint = ""
            if isinstance(event, ServerError):
                error = response_name(ServerError, self.schemas)
                hint = f"the server refused the request ({error} carries no reason; see the server's log)"
            self.fail(names, describe_event(event, self.schemas), hint=hint)
        carried = getattr(event, "client_id", None)
        checked = client_id is not None and carried is not None and not isinstance(event, Registered)
        if checked and carried != client_id:
            assert client_id is not None and carried is not None
            self.fail(
                f"{names} carrying the request's client_id {client_id.hex()} (spec 5)",
                f"client_id {carried.hex()}",
            )
        return event

    def request(self, request: Request, *expected: type[_R], **options: Any) -> _R:
        """Send `request`, then `expect` a response (client_id defaults to the request's, except 1100)."""
        self.send(request)
        if "client_id" not in options and request.code is not RequestCode.REGISTER:
            options["client_id"] = request.client_id
        return self.expect(*expected, **options)

    def expect_silence(self, seconds: float, *, because: str) -> None:
        """Fail if any byte arrives within `seconds` (a close is not reported here)."""
        data = self.drain(seconds)
        if not data:
            return
        decoded = "bytes that are not a response"
        if len(data) >= RESPONSE_HEADER_SIZE:
            raw = self.schemas.response_header.parse(data[:RESPONSE_HEADER_SIZE])
            name = code_name(raw.code, request=False, schemas=self.schemas)
            decoded = f"{name} (version {raw.version}, payload_size {raw.payload_size})"
        self._record("<-", f"unexpected: {decoded}", data)
        self.fail(f"no bytes for {seconds:g} s ({because})", f"{len(data)} bytes arrived: {decoded}")

    def expect_closed(self, seconds: float | None = None, *, after: str) -> None:
        """Fail unless the server closes the connection within `seconds` (no more bytes)."""
        wait = self.timeout_s if seconds is None else seconds
        bounded = transport.adapting(self.context.info, "open-after-2107")
        if bounded:
            wait = min(wait, _DRAIN_S)
        data = self.drain(wait)
        if data:
            self._record("<-", f"unexpected bytes after {after}", data)
            self.fail(f"the server closes the connection after {after}", f"{len(data)} more bytes arrived")
        if not self.peer_closed and bounded:
            self.note(f"still open {wait:g} s after {after}: not waited for longer (adaptation)")
            return
        if not self.peer_closed:
            self.fail(
                f"the server closes the connection after {after} (spec 2.3, 5.8)",
                f"the connection was still open {wait:g} s later",
            )
        self.note("the server closed the connection")

    def expect_error_and_close(self, *, allow_silent_close: bool = False, because: str = "") -> None:
        """Expect SERVER_ERROR (2107's role), then the close (`allow_silent_close`: a bare close is fine
        too). In a dialect without SERVER_ERROR (2022C) the server closes without a response."""
        if not self.dialect.has_server_error:
            self._expect_refusing_close(because)
            return
        error = response_name(ServerError, self.schemas)
        wanted = f"{error}, then close"
        if allow_silent_close:
            wanted += f" (or a close without {error.split()[0]})"
        if because:
            wanted += f" ({because})"
        try:
            received = self.receive(waiting_for=wanted)
        except Closed:
            if allow_silent_close:
                return
            self.fail(
                wanted,
                f"the server closed the connection without sending {error.split()[0]}",
                hint=self._death_hint(),
            )
        if not isinstance(received.event, ServerError):
            self.fail(wanted, describe_event(received.event, self.schemas))
        self.expect_closed(after=error)

    def _expect_refusing_close(self, because: str) -> None:
        """2022C: a refused request is answered by a close, no bytes (spec dialects 17.4)."""
        wanted = f"a close without a response ({self.dialect.name} has no SERVER_ERROR, spec dialects 17.4)"
        if because:
            wanted += f" ({because})"
        data = self.drain(self.timeout_s)
        if data:
            code = (
                self.schemas.response_header.parse(data[:RESPONSE_HEADER_SIZE]).code
                if len(data) >= RESPONSE_HEADER_SIZE
                else None
            )
            self._record("<-", "unexpected bytes instead of a close", data)
            hint = ""
            if code == int(ResponseCode.SERVER_ERROR):
                hint = (
                    f"the server sent 2107: reading 2107-in-{self.dialect.name} (2023A's error code "
                    f"mixed into {self.dialect.name}; spec dialects 17.4, 18.8)"
                )
            self.fail(wanted, f"{len(data)} bytes arrived", hint=hint)
        if not self.peer_closed:
            self.fail(wanted, f"the connection was still open {self.timeout_s:g} s later")
        self.note("the server closed the connection")

    def _close_hint(self) -> str:
        """Name when the server closed: after one response, after a 2104, after several."""
        answers = [entry.text for entry in self._entries if entry.arrow == "<-"]
        if not answers:
            return "the server closed the connection without answering (or refused without sending 2107)"
        last = answers[-1].split(" ", 2)[:2]
        said = " ".join(last)
        if len(answers) == 1:
            return (
                f"the server closed the connection after its first response ({said}): it seems to serve one "
                "request per connection (spec 2.1, 2.3: a connection carries any number of exchanges), "
                "or it refused this request without sending 2107"
            )
        if last[0] == str(self.schemas.wire_code(ResponseCode.ACKNOWLEDGED)):
            return (
                f"the server closed the connection after {said} "
                f"({len(answers)} responses on this connection): "
                "it ends the session after a confirmed file (spec 2.3: only the client closes after 2104)"
            )
        return (
            f"the server closed the connection after {len(answers)} responses (the last {said}) "
            "without sending 2107 (spec 2.3)"
        )

    def _death_hint(self) -> str:
        """After a close: a hint if the server no longer accepts connections at all."""
        time.sleep(0.2)  # a dying process closes its connections before its listening socket
        address = (self.context.target.host, self.context.target.port)
        try:
            transport.connect(self.context.info, address, self.timeout_s, self.context.close).close()
        except OSError as error:
            return f"the server seems to have died on this request: a new connection fails ({error})"
        return ""

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.channel is not None:
            try:
                self.channel.close()
            finally:
                self.channel = None
