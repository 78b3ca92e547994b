"""The profiling stage: before the cases, learn the target's transport habits.

A few short, bounded conversations find out whether the target is reachable, whether it
answers a valid 1100 REGISTER (and how fast), how it frames responses (byte order, version,
zero padding), whether a connection carries several requests, whether a second connection
is served while a first is open, whether a request split across TCP segments is read
whole, and whether the server closes after 2107. Each deviating habit is a `Finding`;
`conformance.transport` compensates for the ones it can so that the cases still test the
deeper behaviour. A target that cannot be tested at all raises `TargetUnusable`.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from backupproto.crypto import public_key_der
from backupproto.dialect import DIALECT_2023A, Dialect, RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.io.channel import ByteChannel, ChannelTimeout, ConnectionLost
from backupproto.schemas import Schemas, schemas_for

from .case import Target
from .describe import REQUEST_HEADER_SIZE, RESPONSE_HEADER_SIZE
from .dialect_probe import Detected, connected, detect_server_dialect

_DRAIN_S = 0.5
_PIECE_PAUSE_S = 0.05
_SECOND_CONNECTION_WAIT_S = 2.0


@dataclass(frozen=True)
class Finding:
    """One deviating habit of the target, reported once, with its level and spec section."""

    key: str
    title: str
    level: str
    section: str
    case_ids: tuple[str, ...]
    """The cases that test this habit directly: they run without its adaptation and report it."""
    evidence: str
    adaptation: str = ""
    """What the transport does about it ('' when nothing can be done)."""
    signature: str = ""
    """A regex (multi-line): failures whose expected/actual/diagnosis lines match are this finding again."""
    masks: tuple[str, ...] = ()
    """Cases that cannot be judged under this finding's adaptation (their failure is this finding)."""

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "title": self.title,
            "level": self.level,
            "section": self.section,
            "cases": list(self.case_ids),
            "evidence": self.evidence,
            "adaptation": self.adaptation,
        }


class TargetUnusable(Exception):
    """The target cannot be tested at all (nothing listening, mute): stop with this message."""

    def __init__(self, message: str, exit_code: pytest.ExitCode, finding: Finding | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.finding = finding


@dataclass
class Profile:
    """What the profiling stage learnt; `findings` are keyed by `Finding.key`."""

    target: Target
    answer_s: float = 0.0
    """Seconds until the first 2100 arrived."""
    big_endian: bool = False
    version: int = 3
    padded_to: int = 0
    """Responses zero-padded to this many bytes (0: no padding)."""
    closes_after_each_response: bool = False
    one_connection_at_a_time: bool = False
    stays_open_after_error: bool = False
    split_read_whole: bool = True
    findings: dict[str, Finding] = field(default_factory=dict)
    dialect: Dialect = DIALECT_2023A
    """The dialect the run speaks (--bp-dialect, or the one detected)."""
    dialect_line: str = ""
    """How the dialect was chosen, one line for the top of the run."""

    @property
    def schemas(self) -> Schemas:
        return schemas_for(self.dialect)

    def add(self, finding: Finding) -> None:
        self.findings.setdefault(finding.key, finding)

    def facts(self) -> str:
        """One line for the summary header."""
        habits = ", ".join(f.title for f in self.findings.values()) or "no transport deviations"
        register = self.dialect.requests[RequestCode.REGISTER]
        answered = f"answered a {register} REGISTER in {self.answer_s * 1000:.0f} ms"
        return f"dialect {self.dialect.name}; {answered}; {habits}"


# -- the findings the profiling stage can name -------------------------------------------------

TRANSPORT_FINDINGS = (
    "zero-padding",
    "big-endian",
    "version",
    "one-request-per-connection",
    "one-connection-at-a-time",
    "open-after-2107",
)
"""Findings about framing and connections: cases that bypass the compensating transport cannot run."""
BYPASSING_TRANSPORT = ("15-replay-",)
"""Case ids (prefixes) that read the wire themselves: session replays compare recorded bytes exactly."""


def _big_endian(evidence: str) -> Finding:
    return Finding(
        "big-endian",
        "response integers written big-endian",
        "MUST",
        "3.3",
        ("3.3-little-endian",),
        evidence,
        "response headers read big-endian",
        r"server writes big-endian integers",
    )


def _version(version: int, evidence: str) -> Finding:
    return Finding(
        "version",
        f"responses carry version {version} instead of 3",
        "MUST",
        "3.2",
        ("3.2-response-version-3",),
        evidence,
        f"version {version} accepted in responses",
        rf"version {version} in the response header",
    )


def _padding(size: int, evidence: str) -> Finding:
    return Finding(
        "zero-padding",
        f"responses zero-padded to {size} bytes",
        "MUST",
        "3",
        ("3-no-padding-between-messages",),
        evidence,
        f"zero padding up to {size} bytes stripped after each response",
        r'zero-padded to a fixed packet size|zero bytes where a response header belongs|"hex": "0{14}"',
    )


def _closes_after_each(evidence: str) -> Finding:
    return Finding(
        "one-request-per-connection",
        "the server closes the connection after every response (one request per connection)",
        "MUST",
        "2.1",
        ("2.1-several-requests-one-connection", "2.3-connection-open-after-response"),
        evidence,
        "a new connection for each request",
        r"one request per connection|closed the connection after one response"
        r"|^diagnosis: the server closed the connection$",
        ("7.4-file-needs-session-key", "4-client-id-bound-to-connection", "8.2-out-of-turn"),
    )


def _one_at_a_time(evidence: str) -> Finding:
    return Finding(
        "one-connection-at-a-time",
        "a second connection is not served while the first is open (the server stops listening "
        "while it serves a connection)",
        "MUST",
        "9.1",
        ("9.1-concurrent-clients",),
        evidence,
        "the case's earlier connections are closed before a new one is opened",
        r"connect failed|Connection refused",
    )


def _split(evidence: str) -> Finding:
    return Finding(
        "split-request",
        "a request split across TCP segments is not read whole",
        "MUST",
        "3.6",
        ("3.6-request-in-pieces",),
        evidence,
        "",
        "",
    )


def _open_after_error(evidence: str) -> Finding:
    return Finding(
        "open-after-2107",
        "the server does not close the connection after 2107 SERVER_ERROR",
        "MUST",
        "5.8",
        ("5.8-close-after-server-error",),
        evidence,
        "a short bounded wait for the close after 2107 instead of the full timeout",
        r"still open [\d.]+ s later|closes the connection\nactual: +nothing$",
    )


def oaep_sha256(found_in: str) -> Finding:
    """Found during a case (not by the profiling stage): the AES key wrapped with OAEP SHA-256."""
    return Finding(
        "oaep-sha256",
        "the AES key is wrapped with RSA-OAEP SHA-256 instead of SHA-1",
        "MUST",
        "7.2",
        ("7.2-oaep-sha1",),
        f"first seen in {found_in}",
        "keys unwrapped with OAEP SHA-256 after trying SHA-1",
        r"wraps with SHA-256",
    )


# -- the probes ---------------------------------------------------------------------------------


class _Conversation:
    """A connection read by bounded reads (the profile must not trust the server's framing)."""

    def __init__(self, sock: socket.socket) -> None:
        self.channel = ByteChannel.around(sock, timeout=sock.gettimeout())

    @property
    def closed(self) -> bool:
        """True once the server closed or reset the connection, or sending to it failed."""
        return self.channel.peer_closed

    def read(self, size: int, seconds: float) -> bytes:
        """Up to `size` bytes within `seconds` (fewer on close or silence)."""
        return self.channel.receive_up_to(size, seconds)

    def send(self, data: bytes) -> bool:
        try:
            self.channel.send_bytes(data)
        except (ChannelTimeout, ConnectionLost):
            self.channel.feed_end()  # nothing more is read from a failed connection
            return False
        return True


def _register_bytes(schemas: Schemas, name: str = "") -> bytes:
    from .flows import ZERO_ID, unique_name

    return schemas.build_request(RequestCode.REGISTER, ZERO_ID, {"name": name or unique_name("profile")})


def _send_key_bytes(schemas: Schemas, answer: _Answer, name: str) -> bytes | None:
    """The 1101 that may follow the 2100 in `answer` (None if its client_id cannot be read)."""
    from .flows import client_key

    payload = answer.raw[RESPONSE_HEADER_SIZE:]
    try:
        fields = schemas.parse_payload(
            schemas.responses[ResponseCode.REGISTERED], payload, RESPONSE_HEADER_SIZE
        )
    except BackupProtoError:
        return None
    key = {"name": name, "public_key": public_key_der(client_key())}
    return schemas.build_request(RequestCode.SEND_PUBLIC_KEY, fields["client_id"], key)


@dataclass
class _Answer:
    code: int = 0
    """The role (2023A value) of the response, or the wire code when the dialect has none."""
    version: int = 0
    big_endian: bool = False
    raw: bytes = b""
    """Header and payload, as long as payload_size said."""


def _read_answer(schemas: Schemas, talk: _Conversation, seconds: float) -> _Answer | None:
    """One response header and its payload, in either byte order; None if none arrived."""
    head = talk.read(RESPONSE_HEADER_SIZE, seconds)
    if len(head) < RESPONSE_HEADER_SIZE:
        return None
    header = schemas.response_header.parse(head)
    code, size, big = header.code, header.payload_size, False
    if schemas.response_role(code) is None:
        swapped_code = _swap(code, 2)
        if schemas.response_role(swapped_code) is not None:
            code, size, big = swapped_code, _swap(size, 4), True
    payload = talk.read(min(size, 1 << 16), seconds)
    role = schemas.response_role(code)
    return _Answer(int(role) if role is not None else code, header.version, big, head + payload)


def _swap(value: int, width: int) -> int:
    """`value` with its `width` little-endian bytes read big-endian."""
    return int.from_bytes(value.to_bytes(width, "little"), "big")


@contextlib.contextmanager
def _opened(target: Target, seconds: float, *, retry: bool = True) -> Iterator[_Conversation]:
    """A connection; with `retry`, refused connects are retried for `seconds` (a re-binding server)."""
    with connected(target, seconds, retry=retry) as sock:
        yield _Conversation(sock)


def profile_target(
    target: Target, bound_s: float, dialect: Dialect | None = None, detected: Detected | None = None
) -> Profile:
    """Run the profiling probes (each wait at most `bound_s`); raise `TargetUnusable` if untestable.

    `dialect` None (--bp-dialect auto): the server's dialect is detected first (spec dialects
    19.2); a named dialect is checked the same way, and a server answering another is one finding.
    `detected`: the probe's result when it was made already (while collecting).
    """
    profile = Profile(target)
    try:
        if detected is None:  # its first connection tells whether anything listens
            detected = detect_server_dialect(target, bound_s)
    except OSError as error:
        raise TargetUnusable(
            f"nothing to test: a TCP connection to {target} failed ({error}). Is the server running "
            "and listening on that address? (no cases were run)",
            pytest.ExitCode.USAGE_ERROR,
        ) from None
    if detected.stopped_listening:
        raise _stops_listening(target, bound_s)
    if detected.silent:
        raise _mute(target, "sent no response", bound_s)
    _choose_dialect(profile, dialect, detected)
    try:
        with _opened(target, bound_s) as first:  # retried: a server re-binding after the probe's connection
            _first_exchange(profile, first, bound_s)
    except ConnectionRefusedError:
        raise _stops_listening(target, bound_s) from None
    for probe in (_second_connection, _split_request, _close_after_error):
        try:
            probe(profile, bound_s)
        except ConnectionRefusedError:
            raise _stops_listening(target, bound_s) from None
        except OSError:
            continue  # inconclusive (a reset, say): the cases test this habit themselves
    return profile


def _choose_dialect(profile: Profile, told: Dialect | None, detected: Detected) -> None:
    """Take the detected dialect (spec dialects 19.2); stop with one finding if the server answers
    none, mixes two, or answers another than --bp-dialect names."""
    line = detected.line()
    if detected.dialect is None:
        raise _dialect_stop(profile.target, _no_dialect(detected), told)
    if detected.reading in STOPPING_READINGS:
        raise _dialect_stop(profile.target, _mixed(detected), told)
    if detected.reading:
        profile.add(_reading(detected))
    if told is not None and told != detected.dialect:
        raise _dialect_stop(profile.target, _other_dialect(detected, told), told)
    profile.dialect = detected.dialect
    profile.dialect_line = line if told is None else f"--bp-dialect {told.name}: confirmed, {line}"


STOPPING_READINGS = frozenset({"2023-responses-in-2024"})
"""Mixed readings under which no case can be judged (every response is another dialect's code)."""


def _reading(detected: Detected) -> Finding:
    """A mixed reading the run can go on with (2107-in-2022C: a SHOULD NOT, spec dialects 17.4)."""
    return Finding(
        f"reading-{detected.reading}",
        f"reading {detected.reading}" + (f" ({detected.note})" if detected.note else ""),
        "SHOULD",
        "dialects 18.8",
        (),
        "; ".join(detected.evidence),
    )


def _no_dialect(detected: Detected) -> Finding:
    return Finding(
        "no-dialect",
        "the server answers none of the dialects (2022C, 2023A, 2023C, 2024A, 2024C)",
        "MUST",
        "dialects 19.2",
        (),
        "; ".join(detected.evidence),
    )


def _mixed(detected: Detected) -> Finding:
    assert detected.dialect is not None
    return Finding(
        f"reading-{detected.reading}",
        f"the server mixes dialects: reading {detected.reading} (its requests are "
        f"{detected.dialect.name}'s, its responses another dialect's)",
        "MUST",
        "dialects 18.4",
        (),
        "; ".join(detected.evidence),
    )


def _other_dialect(detected: Detected, told: Dialect) -> Finding:
    assert detected.dialect is not None
    title = f"the server answers {detected.dialect.name}, not {told.name}"
    register = RequestCode.REGISTER
    if (
        not told.has_reconnect
        and detected.dialect.has_reconnect
        and told.requests[register] == (detected.dialect.requests[register])
    ):
        reconnect = detected.dialect.requests[RequestCode.RECONNECT]
        title += (
            f": it answers {reconnect} RECONNECT, which {told.name} does not have "
            f"(reading reconnect-in-{told.name}, spec dialects 18.3), or it speaks {detected.dialect.name}"
        )
    return Finding(
        "other-dialect",
        title,
        "MUST",
        "dialects 17",
        (),
        f"{'; '.join(detected.evidence)} ({detected.line()}); run with --bp-dialect {detected.dialect.name} "
        "or --bp-dialect auto",
    )


def _dialect_stop(target: Target, finding: Finding, told: Dialect | None) -> TargetUnusable:
    asked = f" (--bp-dialect {told.name})" if told is not None else ""
    return TargetUnusable(
        f"nothing to test in this dialect{asked}: {target}: "
        f"Finding [{finding.level}, spec {finding.section}]: {finding.title}."
        f" Evidence: {finding.evidence}. No cases were run.",
        pytest.ExitCode.TESTS_FAILED,
        finding,
    )


def _mute(target: Target, what: str, bound_s: float) -> TargetUnusable:
    return TargetUnusable(
        f"nothing to test: {target} accepts connections but {what} to a valid 1100 REGISTER "
        f"within {bound_s:g} s (--timeout-s sets this wait). The server is mute or hung; no cases were run.",
        pytest.ExitCode.INTERRUPTED,
    )


def _first_exchange(profile: Profile, talk: _Conversation, bound_s: float) -> None:
    """1100 then 1101 on one connection: framing, byte order, version, padding, close after each."""
    from .flows import unique_name

    name = unique_name("profile")
    started = time.monotonic()
    talk.send(_register_bytes(profile.schemas, name))
    answer = _read_answer(profile.schemas, talk, bound_s)
    if answer is None:
        what = "closed the connection without answering" if talk.closed else "sent no response"
        raise _mute(profile.target, what, bound_s)
    profile.answer_s = time.monotonic() - started
    if answer.big_endian:
        profile.big_endian = True
        profile.add(_big_endian(f"2100 header bytes {answer.raw[:RESPONSE_HEADER_SIZE].hex(' ')}"))
    if answer.version != profile.dialect.version:
        profile.version = answer.version
        profile.add(
            _version(answer.version, f"2100 header bytes {answer.raw[:RESPONSE_HEADER_SIZE].hex(' ')}")
        )
    extra = talk.read(1 << 16, _DRAIN_S)
    if extra and extra == bytes(len(extra)):
        profile.padded_to = len(answer.raw) + len(extra)
        profile.add(
            _padding(profile.padded_to, f"{len(extra)} zero bytes after the {len(answer.raw)}-byte 2100")
        )
    follow_up = (
        _send_key_bytes(profile.schemas, answer, name) if answer.code == ResponseCode.REGISTERED else None
    )
    if talk.closed:
        profile.closes_after_each_response = True
    elif follow_up is not None and talk.send(follow_up):
        again = _read_answer(profile.schemas, talk, bound_s)
        profile.closes_after_each_response = again is None and talk.closed
    if profile.closes_after_each_response:
        profile.add(
            _closes_after_each("the connection closed after the 2100; the 1101 that followed got no answer")
        )


def _second_connection(profile: Profile, bound_s: float) -> None:
    """While one connection is open and idle, is a second one accepted and answered?"""
    with _opened(profile.target, bound_s) as idle:
        try:
            second = socket.create_connection(profile.target, timeout=bound_s)
        except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError) as error:
            # reset: it reached the listening socket the server closes while it serves the first
            refused = f"a second connection was refused while the first was open ({error})"
            second = None
        if second is not None:
            talk = _Conversation(second)
            talk.send(_register_bytes(profile.schemas))
            answered = (
                _read_answer(profile.schemas, talk, min(bound_s, _SECOND_CONNECTION_WAIT_S)) is not None
            )
            second.close()
            if answered:
                return
            refused = "a second connection got no answer while the first was open"
        idle.channel.close()
    with _opened(profile.target, bound_s) as later:
        later.send(_register_bytes(profile.schemas))
        if _read_answer(profile.schemas, later, bound_s) is None:
            raise _mute(profile.target, "after its first connection closed, sent no response", bound_s)
    profile.one_connection_at_a_time = True
    profile.add(_one_at_a_time(f"{refused}; accepted again once the first closed"))


def _stops_listening(target: Target, bound_s: float) -> TargetUnusable:
    finding = Finding(
        "stops-listening",
        "the server stops listening after its first connection",
        "MUST",
        "9.1",
        (),
        f"the first connection was served; every later connect was refused for {bound_s:g} s",
    )
    return TargetUnusable(
        f"nothing more to test: {target} served its first connection, then stopped listening "
        f"({finding.evidence}). Finding [MUST, spec 9.1]: {finding.title}. No cases were run.",
        pytest.ExitCode.INTERRUPTED,
        finding,
    )


def _split_request(profile: Profile, bound_s: float) -> None:
    """A 1100 sent in three pieces (the header split too) is answered."""
    data = _register_bytes(profile.schemas)
    with _opened(profile.target, bound_s) as talk:
        for start, end in ((0, 5), (5, REQUEST_HEADER_SIZE), (REQUEST_HEADER_SIZE, len(data))):
            talk.send(data[start:end])
            time.sleep(_PIECE_PAUSE_S)
        answer = _read_answer(profile.schemas, talk, bound_s)
    if answer is None or answer.code != ResponseCode.REGISTERED:
        got = "no response" if answer is None else f"response code {answer.code}"
        profile.split_read_whole = False
        profile.add(_split(f"a 1100 sent in 3 TCP segments got {got}"))


def _close_after_error(profile: Profile, bound_s: float) -> None:
    """1101 for an unknown client: 2107, then the server closes (within a short bound)."""
    from .flows import client_key, unique_name

    if not profile.dialect.has_server_error:
        return  # 2022C refuses with a close: nothing to learn
    fields = {"name": unique_name("profile-unknown"), "public_key": public_key_der(client_key())}
    data = profile.schemas.build_request(RequestCode.SEND_PUBLIC_KEY, uuid.uuid4().bytes, fields)
    with _opened(profile.target, bound_s) as talk:
        talk.send(data)
        answer = _read_answer(profile.schemas, talk, bound_s)
        if answer is None or answer.code != ResponseCode.SERVER_ERROR:
            return  # inconclusive: the cases say what is wrong with this answer
        wait = min(bound_s, _SECOND_CONNECTION_WAIT_S)
        talk.read(1 << 16, wait)
        if not talk.closed:
            profile.stays_open_after_error = True
            profile.add(_open_after_error(f"the connection was still open {wait:g} s after 2107"))


def fresh_client_answers(target: Target, bound_s: float) -> str:
    """'' when a fresh client's 1100 REGISTER gets a response header within `bound_s`; else what
    happened. A connection closed unanswered is tried again within the bound (a server that
    re-binds its listening socket resets the connections waiting in the old one)."""
    from .transport import profile as installed

    found = installed()
    schemas = found.schemas if found is not None else schemas_for(DIALECT_2023A)
    deadline = time.monotonic() + bound_s
    problem = ""
    while time.monotonic() < deadline:
        left = max(deadline - time.monotonic(), 0.1)
        try:
            with _opened(target, left) as talk:
                talk.send(_register_bytes(schemas))
                if _read_answer(schemas, talk, left) is not None:
                    return ""
                if not talk.closed:
                    return f"a fresh client's 1100 REGISTER: no response within {bound_s:g} s"
                problem = "a fresh client's 1100 REGISTER: the connection closed without a response"
        except OSError as error:
            problem = f"a fresh client could not connect ({error})"
        time.sleep(0.05)
    return problem or f"a fresh client's 1100 REGISTER: no response within {bound_s:g} s"


__all__ = ["Finding", "Profile", "TargetUnusable", "fresh_client_answers", "oaep_sha256", "profile_target"]
