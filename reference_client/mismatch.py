"""Naming a foreign dialect from what the server did (spec/dialects.md 19.1), so that the client
says "run with --dialect 2024A or 2024C" instead of blaming the server's disk.

Two clues: a response code that is not this dialect's but is another's (`foreign_code`), and
an error answer (or a close) to the first request of a connection, which a server of another
dialect gives to a request code it does not know (`dialects_refusing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backupproto.detect import dialects_with_code
from backupproto.dialect import DIALECTS, Dialect, RequestCode, ResponseCode


@dataclass(frozen=True)
class ForeignCode:
    """A response code of other dialects (`owners`), met by a client of `dialect`."""

    code: int
    dialect: Dialect
    owners: tuple[Dialect, ...]
    likely: tuple[Dialect, ...]
    """The owners that also have our request's code for the same role (all owners if none do)."""

    @property
    def is_server_error(self) -> bool:
        """True when it is a server error of a dialect of our response family and ours has none:
        a server of our dialect following another reading (2107-in-2022C), an error like a close."""
        ours = self.dialect
        if ours.has_server_error:
            return False
        registered = ours.responses[ResponseCode.REGISTERED]
        return any(
            owner.response_role(self.code) is ResponseCode.SERVER_ERROR
            and owner.responses.get(ResponseCode.REGISTERED) == registered
            for owner in self.owners
        )

    def describe(self) -> str:
        """E.g. "the server answered 1600 (a 2024A/2024C code, not a 2023A one)"."""
        names = "/".join(owner.name for owner in self.owners)
        return f"the server answered {self.code} (a {names} code, not a {self.dialect.name} one)"


def foreign_code(dialect: Dialect, code: int, request: RequestCode | None = None) -> ForeignCode | None:
    """The other dialects that have response `code`, when ours does not (None otherwise).

    `request`: the role of the request it answered; the owners that share its wire code are
    the likely ones (a 2023C client answered 1600 meets a 2024A server, not a 2024C one)."""
    if dialect.response_role(code) is not None:
        return None
    owners = tuple(owner for owner in dialects_with_code(code, requests=False) if owner is not dialect)
    if not owners:
        return None
    wire = None if request is None else dialect.requests[request]
    sharing = tuple(owner for owner in owners if wire is not None and owner.request_role(wire) is request)
    return ForeignCode(code, dialect, owners, sharing or owners)


def dialects_refusing(dialect: Dialect, request: RequestCode, answer: int | None) -> list[Dialect]:
    """The other dialects whose server would refuse our `request` as an unknown code the way this
    server did: with `answer` (their server-error code) or, when `answer` is None, by closing."""
    wire = dialect.requests[request]
    found = []
    for other in DIALECTS.values():
        if other is dialect or other.request_role(wire) is request:
            continue
        error = other.responses.get(ResponseCode.SERVER_ERROR)
        if error == answer:
            found.append(other)
    return found


def run_with(dialects: Sequence[Dialect]) -> str:
    """The advice: "run with --dialect 2024A or 2024C"."""
    return "run with --dialect " + " or ".join(dialect.name for dialect in dialects)
