"""The compensating transport: which findings `Wire` works around in which case, and the record of it.

The plugin installs one `Adaptation` per run (after the profiling stage). `Wire` and the
flows ask `adapting(info, key)` before compensating for a finding (strip zero padding, read
big-endian headers, reconnect per request, bounded waits for a close that never comes,
OAEP SHA-256 keys): it answers True unless adaptation is off (``--bp-no-adapt``), the
finding was not made, or the running case is one that tests that habit directly (there
the deviation is reported, once). Every compensation is recorded per case, so that the
summary can say which cases ran under which adaptation.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .profile import Finding, Profile


class CaseInfo(Protocol):
    """What the transport needs of a case (`conformance.case.CaseInfo`): its id."""

    @property
    def id(self) -> str: ...


class Adaptation:
    """The findings of one run and the cases that ran under each adaptation."""

    def __init__(self, profile: Profile | None, *, enabled: bool) -> None:
        self.profile = profile
        self.enabled = enabled
        self.discovered: dict[str, Finding] = {}
        """Findings made during the cases (not by the profiling stage)."""
        self.used: dict[str, set[str]] = {}
        """case id -> keys of the findings the transport compensated for in that case."""
        self.never_sent: dict[str, str] = {}
        """finding key -> the response code the server was found never to send (silently dropped)."""

    def findings(self) -> dict[str, Finding]:
        """Every finding of the run, profiling stage first."""
        made = dict(self.profile.findings) if self.profile is not None else {}
        for key, finding in self.discovered.items():
            made.setdefault(key, finding)
        return made

    def discover(self, finding: Finding) -> None:
        """Record a finding made during a case (kept once)."""
        self.discovered.setdefault(finding.key, finding)

    def applies(self, info: CaseInfo | None, key: str) -> bool:
        """True when the transport should compensate for finding `key` in the case `info`."""
        finding = self.findings().get(key)
        if not self.enabled or finding is None:
            return False
        return info is None or info.id not in finding.case_ids

    def record(self, info: CaseInfo | None, key: str) -> None:
        if info is not None:
            self.used.setdefault(info.id, set()).add(key)

    def adapted_cases(self, key: str) -> list[str]:
        """The cases that ran under the adaptation for finding `key`."""
        return [case_id for case_id, keys in self.used.items() if key in keys]


_INSTALLED: list[Adaptation] = []


def install(adaptation: Adaptation) -> None:
    """Make `adaptation` the run's (the plugin calls this after the profiling stage)."""
    _INSTALLED[:] = [adaptation]


def uninstall() -> None:
    _INSTALLED.clear()


def current() -> Adaptation | None:
    """The run's adaptation (None before the profiling stage, or outside a run)."""
    return _INSTALLED[0] if _INSTALLED else None


def profile() -> Profile | None:
    """The run's profile, if the profiling stage ran."""
    adaptation = current()
    return adaptation.profile if adaptation is not None else None


def adapting(info: CaseInfo | None, key: str) -> bool:
    """True (and recorded for the case) when the transport compensates for finding `key` here."""
    adaptation = current()
    if adaptation is None or not adaptation.applies(info, key):
        return False
    adaptation.record(info, key)
    return True


def may_adapt(info: CaseInfo | None, finding: Finding) -> bool:
    """For a finding made during a case: record it; True when the case may work around it."""
    adaptation = current()
    if adaptation is None:
        return False
    adaptation.discover(finding)
    return adapting(info, finding.key)


_BRIEF_WAIT_S = 0.5
"""At least this long for a response the server was found to drop (20 x its answer time if longer)."""


def never_sends(finding: Finding, code: str) -> None:
    """Record a finding made during a case: the server answers no request with `code` (it drops
    the request silently). Later waits for that response are brief (`response_wait_s`)."""
    adaptation = current()
    if adaptation is not None:
        adaptation.discover(finding)
        adaptation.never_sent[finding.key] = code


def response_wait_s(info: CaseInfo | None, waiting_for: str, timeout_s: float) -> float:
    """How long to wait for the response described by `waiting_for` (it starts with the wire
    code): `timeout_s`, or a brief wait once the run found that the server never sends it."""
    adaptation = current()
    if adaptation is None or not adaptation.enabled:
        return timeout_s
    for key, code in adaptation.never_sent.items():
        if waiting_for.split(" ", 1)[0] == code:
            adaptation.record(info, key)
            answer_s = adaptation.profile.answer_s if adaptation.profile is not None else 0.0
            return min(timeout_s, max(_BRIEF_WAIT_S, 20 * answer_s))
    return timeout_s


def connect_retrying(
    address: tuple[str, int], timeout_s: float, retry_refused: Callable[[], bool], deadline: float
) -> socket.socket:
    """A TCP connection to `address`; a refused connect is tried again (50 ms later) while
    `retry_refused()` says so and `deadline` (time.monotonic) has not passed. Raises OSError."""
    while True:
        try:
            return socket.create_connection(address, timeout=timeout_s)
        except ConnectionRefusedError:
            if time.monotonic() > deadline or not retry_refused():
                raise
            time.sleep(0.05)


def connect(
    info: CaseInfo | None, address: tuple[str, int], timeout_s: float, make_room: Callable[[], None]
) -> socket.socket:
    """A TCP connection to the target. Under the one-connection-at-a-time adaptation a refused
    connect calls `make_room` (close the case's other connections) and retries for `timeout_s`.
    Raises OSError."""
    deadline = time.monotonic() + timeout_s
    adapted = False

    def room_made() -> bool:
        nonlocal adapted
        adapted = adapted or adapting(info, "one-connection-at-a-time")
        if adapted:
            make_room()
        return adapted

    while True:
        sock = connect_retrying(address, timeout_s, room_made, deadline)
        adaptation = current()
        if adaptation is None or not adaptation.applies(info, "one-connection-at-a-time") or _settled(sock):
            return sock
        sock.close()  # queued on a listening socket the server then closed: connect again
        if time.monotonic() > deadline:
            raise ConnectionResetError("the server reset every new connection")


_SETTLE_S = 0.02


def _settled(sock: socket.socket) -> bool:
    """False if the server resets or closes a new connection at once (a server that closes its
    listening socket while serving drops the connections queued on it)."""
    timeout = sock.gettimeout()
    sock.settimeout(_SETTLE_S)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except TimeoutError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
