"""The rules of a conversation, independent of which side we are: turn-taking and identity binding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from .dialect import V3, Dialect, RequestCode, ResponseCode
from .errors import ErrorKind, ProtocolError
from .events import (
    AesKey,
    FileReceived,
    ReconnectApproved,
    Registered,
    Request,
    Response,
    SendFile,
    ServerError,
)
from .schemas import V3_SCHEMAS, Schemas
from .states import WITHOUT_RESPONSE, State, after_response, requests_allowed


@lru_cache(maxsize=16)
def _rules(
    dialect: Dialect,
) -> tuple[Mapping[State, frozenset[RequestCode]], Mapping[tuple[RequestCode, ResponseCode], State]]:
    """The dialect's turn-taking tables, made once per dialect (read-only: every connection shares them)."""
    return MappingProxyType(requests_allowed(dialect)), MappingProxyType(after_response(dialect))


class Conversation:
    """Tracks the state of one connection and checks each message against spec section 8.

    `fault` is the exception class raised on a violation: `LocalProtocolError` for what we
    send, `RemoteProtocolError` for what we receive.
    """

    def __init__(self, schemas: Schemas = V3_SCHEMAS) -> None:
        self.schemas = schemas
        self.dialect = schemas.dialect
        self.requests_allowed, self.after_response = _rules(self.dialect)
        self.state = State.CONNECTED
        self.pending: Request | None = None
        """The request that awaits its response, if any."""
        self.client_id: bytes | None = None
        """The client this connection acts for, once a response has named it."""
        self.file: SendFile | None = None
        """The last file sent, while its CRC verdict is open."""

    def check_header(self, code: RequestCode, client_id: bytes, fault: type[ProtocolError]) -> None:
        """Raise `fault` unless a request with this code and client_id may come now (turn and identity)."""
        if self.pending is not None:
            raise fault(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{self._name(code)} sent while {self._name(self.pending.code)} awaits its response",
                field="code",
                offset=self.schemas.offset(code, "code"),
                expected="one request at a time",
            )
        if code not in self.dialect.requests:
            raise fault(
                ErrorKind.UNKNOWN_CODE,
                f"dialect {self.dialect.name} has no {code.name}",
                field="code",
                expected=_one_of(self.dialect.requests, self.dialect),
            )
        allowed = self.requests_allowed[self.state]
        if code not in allowed:
            raise fault(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{self._name(code)} is not allowed in state {self.state}",
                field="code",
                offset=self.schemas.offset(code, "code"),
                expected=_one_of(allowed, self.dialect),
            )
        bound = self.client_id
        if bound is not None and code is not RequestCode.REGISTER and client_id != bound:
            raise fault(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"client_id {client_id.hex()} differs from this connection's {bound.hex()}",
                field="client_id",
                offset=self.schemas.offset(code, "client_id"),
                expected=bound.hex(),
            )

    def check_request(self, request: Request, fault: type[ProtocolError]) -> None:
        """Raise `fault` unless `request` may be sent now."""
        self.check_header(request.code, request.client_id, fault)
        if self.file is not None and request.code is not RequestCode.REGISTER:
            file_name = getattr(request, "file_name", self.file.file_name)
            if file_name != self.file.file_name:
                raise fault(
                    ErrorKind.UNEXPECTED_MESSAGE,
                    f"{self._name(request.code)} names {file_name!r} while {self.file.file_name!r} is open",
                    field="file_name",
                    offset=self.schemas.offset(request.code, "file_name"),
                    expected=repr(self.file.file_name),
                )

    def request_sent(self, request: Request) -> None:
        """Record a request (already checked) as fully sent or received."""
        if isinstance(request, SendFile):
            self.file = request
        follow = WITHOUT_RESPONSE.get(request.code)
        if follow is not None:
            self.state = follow
        else:
            self.pending = request

    def check_response(self, response: Response, fault: type[ProtocolError]) -> State:
        """Raise `fault` unless `response` answers the pending request; return the next state."""
        if isinstance(response, ServerError):
            return State.CLOSED
        pending = self.pending
        if pending is None:
            after = f" after {self._name(RequestCode.CRC_RETRY)}" if self.state is State.RESENDING else ""
            raise fault(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"response {self._name(response.code)} while no request awaits one{after}",
                field="code",
                offset=self.schemas.offset(response.code, "code"),
                expected="no response",
            )
        following = self.after_response.get((pending.code, response.code))
        if following is None:
            answers = [resp for (req, resp) in self.after_response if req is pending.code]
            if self.dialect.has_server_error:
                answers.append(ResponseCode.SERVER_ERROR)
            raise fault(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{self._name(response.code)} does not answer {self._name(pending.code)}",
                field="code",
                offset=self.schemas.offset(response.code, "code"),
                expected=_one_of(answers, self.dialect),
            )
        client_id = getattr(response, "client_id", None)
        if client_id is not None and not isinstance(response, Registered) and client_id != pending.client_id:
            raise fault(
                ErrorKind.UNEXPECTED_MESSAGE,
                f"{self._name(response.code)} carries client_id {client_id.hex()}",
                field="client_id",
                offset=self.schemas.offset(response.code, "client_id"),
                expected=f"the request's client_id {pending.client_id.hex()}",
            )
        if isinstance(response, FileReceived) and isinstance(pending, SendFile):
            for field in ("content_size", "file_name"):
                got, want = getattr(response, field), getattr(pending, field)
                if got != want:
                    raise fault(
                        ErrorKind.UNEXPECTED_MESSAGE,
                        f"{self._name(response.code)} has {field} {got!r}",
                        field=field,
                        offset=self.schemas.offset(response.code, field),
                        expected=f"{want!r}, as in the request",
                    )
        return following

    def _name(self, code: RequestCode | ResponseCode) -> str:
        return _name(code, self.dialect)

    def response_sent(self, response: Response, following: State) -> None:
        """Record a response (already checked) as sent or received."""
        self.state = following
        self.pending = None
        if isinstance(response, Registered | AesKey | ReconnectApproved):
            self.client_id = response.client_id
        elif following is State.CONNECTED:
            self.client_id = None
        if following is not State.VERIFYING:
            self.file = None


def _name(code: RequestCode | ResponseCode, dialect: Dialect = V3) -> str:
    """The role's name and its wire code in `dialect`, e.g. "SEND_FILE (1028)"."""
    table: Mapping[Any, int] = dialect.requests if isinstance(code, RequestCode) else dialect.responses
    return f"{code.name} ({table.get(code, int(code))})"


def _one_of(codes: Iterable[RequestCode | ResponseCode], dialect: Dialect) -> str:
    names = [_name(code, dialect) for code in sorted(codes, key=int)]
    return "one of " + ", ".join(names) if names else "nothing"
