"""Every number of a protocol variant in one place: the dialects, declared as data.

The same protocol was assigned in several semesters ("dialects": 2022C, 2023A, 2023C,
2024A, 2024C) with other codes, key sizes and send-file fields. `RequestCode` and
`ResponseCode` name the *roles* of the messages (their values are the 2023A codes, so
`RequestCode.SEND_FILE == 1103`); each `Dialect` maps the roles it has to its own wire
codes and declares its layouts and limits. Schemas, state tables and engines are built
from a `Dialect`: a new variant is one more declaration, not a change of logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from types import MappingProxyType
from typing import Final, TypeVar


class RequestCode(IntEnum):
    """Request roles; the values are their 2023A wire codes (spec section 4)."""

    REGISTER = 1100
    SEND_PUBLIC_KEY = 1101
    RECONNECT = 1102
    SEND_FILE = 1103
    CRC_OK = 1104
    CRC_RETRY = 1105
    CRC_GIVE_UP = 1106


class ResponseCode(IntEnum):
    """Response roles; the values are their 2023A wire codes (spec section 5)."""

    REGISTERED = 2100
    REGISTRATION_FAILED = 2101
    AES_KEY = 2102
    FILE_RECEIVED = 2103
    ACKNOWLEDGED = 2104
    RECONNECT_APPROVED = 2105
    RECONNECT_DENIED = 2106
    SERVER_ERROR = 2107


PAYLOAD_CLIENT_ID: Final = "payload_client_id"
"""Name of a client_id carried inside a request's payload (2022C); it must equal the header's."""

SEND_FILE_2023: Final = ("content_size", "file_name")
SEND_FILE_2022: Final = (PAYLOAD_CLIENT_ID, "content_size", "file_name")
SEND_FILE_2024: Final = ("content_size", "orig_file_size", "packet_number", "total_packets", "file_name")
"""The send-file prefixes (the content follows). In 2024 `content_size` is the file's total
encrypted size, `orig_file_size` its plaintext size; packets are numbered from 1."""

VERDICT_2023: Final = ("file_name",)
VERDICT_2022: Final = (PAYLOAD_CLIENT_ID, "file_name")
"""Payloads of the CRC verdicts (1104, 1105, 1106 roles)."""


_Role = TypeVar("_Role", RequestCode, ResponseCode)


def _consecutive(roles: type[_Role], first: int, *, without: tuple[_Role, ...] = ()) -> Mapping[_Role, int]:
    """Wire codes numbered from `first` in role order (a role left out keeps its number unused)."""
    return MappingProxyType({role: first + index for index, role in enumerate(roles) if role not in without})


def _listed(codes: Mapping[_Role, int]) -> Mapping[_Role, int]:
    return MappingProxyType(dict(codes))


@dataclass(frozen=True)
class Dialect:
    """The constants of one protocol variant. The defaults are 2023A's."""

    name: str = "2023A"
    version: int = 3
    client_id_size: int = 16
    name_size: int = 255
    public_key_size: int = 160
    rsa_bits: int = 1024
    rsa_exponent: int = 17
    aes_key_size: int = 16
    aes_block_size: int = 16
    max_encrypted_key_size: int = 512
    requests: Mapping[RequestCode, int] = field(
        default_factory=lambda: _consecutive(RequestCode, 1100), hash=False
    )
    """Wire code of each request role the dialect has (a role not listed does not exist)."""
    responses: Mapping[ResponseCode, int] = field(
        default_factory=lambda: _consecutive(ResponseCode, 2100), hash=False
    )
    """Wire code of each response role the dialect has."""
    send_file_fields: tuple[str, ...] = SEND_FILE_2023
    verdict_fields: tuple[str, ...] = VERDICT_2023
    acknowledged_fields: tuple[str, ...] = ("client_id",)
    """2104's payload (2022C's text leaves it open; decided: client_id, as in 2023A)."""
    packet_size: int | None = None
    """Content bytes per send-file packet our sender uses, in a packetised dialect (2024)."""
    default_port: int = 1234
    database_name: str = "server.db"
    database_required: bool = True
    crc_send_limit: int = 3
    """Sends of one file in total before the client gives up (3: one send and two resends)."""

    @property
    def max_name_length(self) -> int:
        """Longest name in characters: the field keeps one byte for the NUL terminator."""
        return self.name_size - 1

    @property
    def packetised(self) -> bool:
        """True when a file travels as numbered send-file packets (2024A, 2024C)."""
        return "packet_number" in self.send_file_fields

    @property
    def has_server_error(self) -> bool:
        """True when the dialect has a general server-error response (2107's role)."""
        return ResponseCode.SERVER_ERROR in self.responses

    @property
    def has_reconnect(self) -> bool:
        """True when the dialect has the reconnect request (1102's role)."""
        return RequestCode.RECONNECT in self.requests

    def request_role(self, wire_code: int) -> RequestCode | None:
        """The request role a wire code stands for, or None."""
        return _role_of(self.requests, wire_code)

    def response_role(self, wire_code: int) -> ResponseCode | None:
        """The response role a wire code stands for, or None."""
        return _role_of(self.responses, wire_code)

    def describe(self) -> str:
        """One line: the dialect's name and code ranges, e.g. for a detected target."""
        requests, responses = sorted(self.requests.values()), sorted(self.responses.values())
        return (
            f"{self.name}: register is {self.requests[RequestCode.REGISTER]}, requests "
            f"{_ranges(requests)}, responses {_ranges(responses)}, AES-{self.aes_key_size * 8}"
        )


def _role_of(table: Mapping[_Role, int], wire_code: int) -> _Role | None:
    for role, code in table.items():
        if code == wire_code:
            return role
    return None


def _ranges(codes: list[int]) -> str:
    parts: list[str] = []
    start = previous = codes[0]
    for code in [*codes[1:], None]:
        if code is not None and code == previous + 1:
            previous = code
            continue
        parts.append(f"{start}" if start == previous else f"{start}-{previous}")
        if code is not None:
            start = previous = code
    return ", ".join(parts)


# -- the declarations (facts and decisions: spec/dialects.md) ----------------------------------

DIALECT_2023A: Final = Dialect()
"""Requests 1100-1106, responses 2100-2107, AES-128, server.db, port 1234."""

DIALECT_2022C: Final = Dialect(
    name="2022C",
    requests=_consecutive(RequestCode, 1100, without=(RequestCode.RECONNECT,)),
    responses=_consecutive(
        ResponseCode,
        2100,
        without=(ResponseCode.RECONNECT_APPROVED, ResponseCode.RECONNECT_DENIED, ResponseCode.SERVER_ERROR),
    ),
    send_file_fields=SEND_FILE_2022,
    verdict_fields=VERDICT_2022,
)
"""No reconnect and no server-error code; 1103-1106 carry the client_id in the payload too.

2104's payload (not given by the assignment) is client_id 16, as in 2023A. A returning
client re-sends 1101 with its saved id, name and key and gets 2102 with a fresh key.
"""

DIALECT_2023C: Final = replace(
    DIALECT_2023A,
    name="2023C",
    requests=_consecutive(RequestCode, 1025),
    default_port=1357,
    database_name="defensive.db",
)
"""2023A with requests 1025-1031; responses stay 2100-2107."""

DIALECT_2024A: Final = Dialect(
    name="2024A",
    aes_key_size=32,
    requests=_consecutive(RequestCode, 1025),
    responses=_consecutive(ResponseCode, 1600),
    send_file_fields=SEND_FILE_2024,
    packet_size=65536,
    default_port=1256,
    database_name="defensive.db",
    database_required=False,
)
"""Requests 1025-1031, responses 1600-1607, AES-256, files in numbered packets."""

DIALECT_2024C: Final = replace(
    DIALECT_2024A,
    name="2024C",
    requests=_listed(
        {
            RequestCode.REGISTER: 825,
            RequestCode.SEND_PUBLIC_KEY: 826,
            RequestCode.RECONNECT: 827,
            RequestCode.SEND_FILE: 828,
            RequestCode.CRC_OK: 900,
            RequestCode.CRC_RETRY: 901,
            RequestCode.CRC_GIVE_UP: 902,
        }
    ),
)
"""2024A with requests 825-828 and 900-902."""

V3: Final = DIALECT_2023A
"""The project's first dialect, under its old name."""

DIALECTS: Final[Mapping[str, Dialect]] = MappingProxyType(
    {d.name: d for d in (DIALECT_2022C, DIALECT_2023A, DIALECT_2023C, DIALECT_2024A, DIALECT_2024C)}
)
"""Every declared dialect by name."""


def dialect_named(name: str) -> Dialect:
    """The dialect called `name` (case-insensitive); ValueError listing the known ones otherwise."""
    for known, dialect in DIALECTS.items():
        if known.lower() == name.strip().lower():
            return dialect
    raise ValueError(f"unknown dialect {name!r}; known: {', '.join(DIALECTS)}")
