"""Which dialect(s) a peer speaks, from the first bytes it sent: pure functions for auto-detection.

A request or response header fits a dialect when its version, its code and its
payload_size are all valid there. Several dialects can fit one header (2023C and 2024A
share their request codes; 2022C, 2023A and 2023C their response codes), so the result is
a list, in the order of `DIALECTS`; the caller narrows it with the next message.
"""

from __future__ import annotations

from collections.abc import Iterable

from .dialect import DIALECTS, Dialect
from .errors import MalformedMessage
from .schemas import schemas_for


def detect_request_dialects(data: bytes, among: Iterable[Dialect] = DIALECTS.values()) -> list[Dialect]:
    """The dialects whose request header the first bytes of `data` fit (a client's first bytes).

    `data` shorter than a request header fits every dialect: nothing can be told yet.
    """
    return [dialect for dialect in among if _fits(dialect, data, requests=True)]


def detect_response_dialects(data: bytes, among: Iterable[Dialect] = DIALECTS.values()) -> list[Dialect]:
    """The dialects whose response header the first bytes of `data` fit (a server's first bytes)."""
    return [dialect for dialect in among if _fits(dialect, data, requests=False)]


def dialects_with_code(code: int, *, requests: bool) -> list[Dialect]:
    """The dialects that have `code` as a request (or response) wire code, e.g. 1600 -> 2024A, 2024C."""
    return [
        dialect
        for dialect in DIALECTS.values()
        if (dialect.request_role(code) if requests else dialect.response_role(code)) is not None
    ]


def _fits(dialect: Dialect, data: bytes, *, requests: bool) -> bool:
    schemas = schemas_for(dialect)
    size = schemas.request_header_size if requests else schemas.response_header_size
    if len(data) < size:
        return True
    try:
        if requests:
            schemas.parse_request_header(bytes(data[:size]))
        else:
            schemas.parse_response_header(bytes(data[:size]))
    except MalformedMessage:
        return False
    return True
