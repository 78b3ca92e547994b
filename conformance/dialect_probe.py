"""Which dialect the server under test speaks: the probe of spec/dialects.md 19.2.

Each probe is one REGISTER (or, for 2022C against 2023A, one RECONNECT) on a new
connection with a fresh name, in the order 1100, then 1102 / 1025 / 825 as needed; the
first answer that decides stops. A connection closed without an answer is tried again on
new connections (`CLOSED_RETRIES`) before the close counts as the answer. A server that
answers none of the dialects, or that mixes the codes of two, is one `Finding` (the run
stops with it instead of failing every case).
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from backupproto.dialect import DIALECTS, Dialect, RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.io.channel import ByteChannel, ChannelTimeout, ConnectionLost
from backupproto.schemas import schemas_for

from .describe import RESPONSE_CODE_BYTES, RESPONSE_HEADER_SIZE, RESPONSE_SIZE_BYTES
from .transport import connect_retrying

_2022C, _2023A, _2023C, _2024A, _2024C = (
    DIALECTS[name] for name in ("2022C", "2023A", "2023C", "2024A", "2024C")
)
_ZERO_ID = bytes(_2023A.client_id_size)
_ALL_RESPONSES = frozenset(code for d in DIALECTS.values() for code in d.responses.values())
_REGISTER_ANSWERS = (ResponseCode.REGISTERED, ResponseCode.REGISTRATION_FAILED)
CLOSED_RETRIES = 2
"""New connections a probe request is sent on again when the server closed one unanswered."""


@dataclass(frozen=True)
class Detected:
    """The outcome of the probe: the dialect (None: none fits), what was seen, a mixing reading."""

    dialect: Dialect | None
    evidence: tuple[str, ...]
    reading: str = ""
    """A named mixed-dialect reading of spec dialects 18.8 ('' when the server is consistent)."""
    note: str = ""
    """Something worth saying beside the dialect (an ambiguity, a close where an error is due)."""
    silent: bool = False
    """The first request got no response at all (the connection stayed open): a mute server."""
    stopped_listening: bool = False
    """A later probe's connection was refused (within the bound): the server stopped listening."""

    def line(self) -> str:
        """One line for the top of the run: "the server speaks 2023C: register is 1025, ..."."""
        if self.dialect is None:
            return "the server answers none of the dialects (" + "; ".join(self.evidence) + ")"
        text = f"the server speaks {self.dialect.describe()}"
        if self.reading:
            text += f", mixed: reading {self.reading}"
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class _Answer:
    code: int | None
    """The response code (read either byte order); None when the server closed or stayed silent."""
    payload: bytes = b""
    closed: bool = False

    def said(self) -> str:
        if self.code is not None:
            return f"{self.code}"
        return "a close without a response" if self.closed else "no response"


_Ask = Callable[[Dialect, bytes, str], _Answer]


def _ask(target: tuple[str, int], data: bytes, seconds: float, *, retry: bool) -> _Answer:
    """Send `data` on a new connection; the response code and payload (bounded reads). A connection
    reset as it opens counts as closed unanswered (a refused one raises)."""
    try:
        sock = _open(target, seconds, retry=retry)
    except (ConnectionResetError, ConnectionAbortedError):
        return _Answer(None, closed=True)
    with contextlib.closing(sock):
        channel = ByteChannel.around(sock, timeout=seconds)
        try:
            channel.send_bytes(data)
        except (ChannelTimeout, ConnectionLost):
            return _Answer(None, closed=True)
        head = channel.receive_up_to(RESPONSE_HEADER_SIZE, seconds)
        if len(head) < RESPONSE_HEADER_SIZE:
            return _Answer(None, closed=channel.peer_closed)
        code = int.from_bytes(head[RESPONSE_CODE_BYTES], "little")
        size = int.from_bytes(head[RESPONSE_SIZE_BYTES], "little")
        if code not in _ALL_RESPONSES and int.from_bytes(head[RESPONSE_CODE_BYTES], "big") in _ALL_RESPONSES:
            code = int.from_bytes(head[RESPONSE_CODE_BYTES], "big")
            size = int.from_bytes(head[RESPONSE_SIZE_BYTES], "big")
        payload = channel.receive_up_to(min(size, 1 << 12), seconds)
        return _Answer(code, payload)


@contextlib.contextmanager
def connected(target: tuple[str, int], seconds: float, *, retry: bool) -> Iterator[socket.socket]:
    """A connection; with `retry`, a refused connect is tried again within `seconds` (a server
    that re-binds its listening socket between connections)."""
    with contextlib.closing(_open(target, seconds, retry=retry)) as sock:
        yield sock


def _open(target: tuple[str, int], seconds: float, *, retry: bool) -> socket.socket:
    sock = connect_retrying(target, seconds, lambda: retry, time.monotonic() + seconds)
    with contextlib.suppress(OSError):  # reset already: the first send or read says so
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _register(dialect: Dialect) -> tuple[bytes, str]:
    name = f"cf-dialect-{uuid.uuid4().hex[:16]}"
    return schemas_for(dialect).build_request(RequestCode.REGISTER, _ZERO_ID, {"name": name}), name


def _is(answer: _Answer, dialect: Dialect, *roles: ResponseCode) -> bool:
    return answer.code is not None and dialect.response_role(answer.code) in roles


def _client_id(answer: _Answer, dialect: Dialect) -> bytes | None:
    try:
        schemas = schemas_for(dialect)
        values = schemas.parse_payload(
            schemas.responses[ResponseCode.REGISTERED], answer.payload, RESPONSE_HEADER_SIZE
        )
    except BackupProtoError:
        return None
    client_id = values["client_id"]
    return client_id if isinstance(client_id, bytes) else None


def detect_server_dialect(target: tuple[str, int], seconds: float) -> Detected:
    """Spec dialects 19.2: 1100, then 1102 (2022C or 2023A), 1025, 825; at most three requests
    (and the repeats of a close).

    OSError when nothing accepts the first connection."""
    evidence: list[str] = []

    def ask(dialect: Dialect, data: bytes, what: str) -> _Answer:
        answer = _ask(target, data, seconds, retry=bool(evidence))
        for _ in range(CLOSED_RETRIES):  # bounded
            if answer.code is not None or not answer.closed:
                break
            # A server that re-binds its listening socket per connection resets a connection that
            # waited in the old one unread: only a close that happens again is the server's answer.
            answer = _ask(target, data, seconds, retry=True)
        evidence.append(f"{what}: {answer.said()}")
        return answer

    data, name = _register(_2023A)
    first = ask(_2023A, data, "1100 REGISTER")
    if first.code is None and not first.closed:
        return Detected(None, tuple(evidence), silent=True)
    try:
        return _after_first(ask, first, name, evidence)
    except ConnectionRefusedError:
        return Detected(None, tuple(evidence), stopped_listening=True)


def _after_first(ask: _Ask, first: _Answer, name: str, evidence: list[str]) -> Detected:
    """Steps 2 to 4 of 19.2, after the answer to 1100."""
    if _is(first, _2023A, *_REGISTER_ANSWERS):
        return _2022c_or_2023a(ask, first, name, evidence)
    if first.code == _2023C.responses[ResponseCode.SERVER_ERROR]:
        data, _ = _register(_2023C)
        confirm = ask(_2023C, data, "1025 REGISTER")
        if _is(confirm, _2023C, *_REGISTER_ANSWERS):
            return Detected(_2023C, tuple(evidence))
    data, _ = _register(_2024A)
    third = ask(_2024A, data, "1025 REGISTER")
    if _is(third, _2024A, *_REGISTER_ANSWERS):
        return Detected(_2024A, tuple(evidence))
    if _is(third, _2023C, *_REGISTER_ANSWERS):
        note = "it closed the connection on 1100 where 2023C answers 2107" if first.code is None else ""
        return Detected(_2023C, tuple(evidence), note=note)
    data, _ = _register(_2024C)
    fourth = ask(_2024C, data, "825 REGISTER")
    if _is(fourth, _2024C, *_REGISTER_ANSWERS):
        return Detected(_2024C, tuple(evidence))
    if _is(fourth, _2023A, *_REGISTER_ANSWERS):
        return Detected(_2024C, tuple(evidence), reading="2023-responses-in-2024")
    if _is(third, _2023A, *_REGISTER_ANSWERS):
        return Detected(_2024A, tuple(evidence), reading="2023-responses-in-2024")
    return Detected(None, tuple(evidence))


def _2022c_or_2023a(ask: _Ask, first: _Answer, name: str, evidence: list[str]) -> Detected:
    """Step 2: 1102 RECONNECT of the client just registered tells 2023A (2105/2106) from 2022C (close)."""
    client_id = _client_id(first, _2023A) if _is(first, _2023A, ResponseCode.REGISTERED) else None
    if client_id is None:
        return Detected(_2023A, tuple(evidence), note="1102 not tried (no client id): 2022C is also possible")
    schemas = schemas_for(_2023A)
    answer = ask(
        _2023A, schemas.build_request(RequestCode.RECONNECT, client_id, {"name": name}), "1102 RECONNECT"
    )
    if _is(answer, _2023A, ResponseCode.RECONNECT_APPROVED, ResponseCode.RECONNECT_DENIED):
        return Detected(_2023A, tuple(evidence))
    if answer.code is None:
        return Detected(_2022C, tuple(evidence))
    if _is(answer, _2023A, ResponseCode.SERVER_ERROR):
        return Detected(
            _2022C,
            tuple(evidence),
            reading="2107-in-2022C",
            note="or a 2023A server that refused the reconnect of a client without a key",
        )
    return Detected(_2023A, tuple(evidence), note=f"1102 got {answer.said()}")


__all__ = ["Detected", "connected", "detect_server_dialect"]
