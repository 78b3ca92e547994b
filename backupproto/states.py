"""The conversation's state machine as data (spec section 8), shared by both roles."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from .dialect import Dialect, RequestCode, ResponseCode


class State(StrEnum):
    """Where a connection's conversation stands between messages (spec 8.1)."""

    CONNECTED = "CONNECTED"
    REGISTERED = "REGISTERED"
    KEYED = "KEYED"
    VERIFYING = "VERIFYING"
    RESENDING = "RESENDING"
    CLOSED = "CLOSED"


REQUESTS_ALLOWED: Final[dict[State, frozenset[RequestCode]]] = {
    State.CONNECTED: frozenset({RequestCode.REGISTER, RequestCode.RECONNECT, RequestCode.SEND_PUBLIC_KEY}),
    State.REGISTERED: frozenset({RequestCode.SEND_PUBLIC_KEY}),
    State.KEYED: frozenset({RequestCode.SEND_FILE}),
    State.VERIFYING: frozenset({RequestCode.CRC_OK, RequestCode.CRC_RETRY, RequestCode.CRC_GIVE_UP}),
    State.RESENDING: frozenset({RequestCode.SEND_FILE}),
    State.CLOSED: frozenset(),
}
"""Which requests a client may send in each state (spec 8.2)."""

WITHOUT_RESPONSE: Final[dict[RequestCode, State]] = {RequestCode.CRC_RETRY: State.RESENDING}
"""Requests that get no response, and the state they lead to directly."""

AFTER_RESPONSE: Final[dict[tuple[RequestCode, ResponseCode], State]] = {
    (RequestCode.REGISTER, ResponseCode.REGISTERED): State.REGISTERED,
    (RequestCode.REGISTER, ResponseCode.REGISTRATION_FAILED): State.CONNECTED,
    (RequestCode.SEND_PUBLIC_KEY, ResponseCode.AES_KEY): State.KEYED,
    (RequestCode.RECONNECT, ResponseCode.RECONNECT_APPROVED): State.KEYED,
    (RequestCode.RECONNECT, ResponseCode.RECONNECT_DENIED): State.CONNECTED,
    (RequestCode.SEND_FILE, ResponseCode.FILE_RECEIVED): State.VERIFYING,
    (RequestCode.CRC_OK, ResponseCode.ACKNOWLEDGED): State.KEYED,
    (RequestCode.CRC_GIVE_UP, ResponseCode.ACKNOWLEDGED): State.KEYED,
}
"""Which response may answer which request, and the state that follows (spec 8.3).

SERVER_ERROR (2107) may answer anything, at any time, and leads to CLOSED.
"""


def requests_allowed(dialect: Dialect) -> dict[State, frozenset[RequestCode]]:
    """`REQUESTS_ALLOWED` restricted to the request roles `dialect` has."""
    roles = frozenset(dialect.requests)
    return {state: codes & roles for state, codes in REQUESTS_ALLOWED.items()}


def after_response(dialect: Dialect) -> dict[tuple[RequestCode, ResponseCode], State]:
    """`AFTER_RESPONSE` restricted to the request and response roles `dialect` has."""
    return {
        (request, response): state
        for (request, response), state in AFTER_RESPONSE.items()
        if request in dialect.requests and response in dialect.responses
    }
