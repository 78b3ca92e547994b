"""Recorded sessions (spec/sessions.md), pure: the data model (`model`), the splitter that cuts a
byte stream into messages (`splitter`) and the JSON document form (`document`).

Reading and writing session files, the recording proxy and replay are the suite's tools:
`conformance.recording` and `conformance.replay`.
"""

from .document import from_json, to_json
from .model import (
    DEFAULT_VARIABLES,
    FORMAT,
    FORMAT_VERSION,
    INLINE_LIMIT,
    NAME_PATTERN,
    ClientKey,
    Content,
    Direction,
    Message,
    Plaintext,
    Session,
    SessionError,
    join,
)
from .splitter import (
    Body,
    End,
    Piece,
    Splitter,
    Start,
    decode_request_start,
    decode_response,
    error_record,
    split_all,
)

__all__ = [
    "DEFAULT_VARIABLES",
    "FORMAT",
    "FORMAT_VERSION",
    "INLINE_LIMIT",
    "NAME_PATTERN",
    "Body",
    "ClientKey",
    "Content",
    "Direction",
    "End",
    "Message",
    "Piece",
    "Plaintext",
    "Session",
    "SessionError",
    "Splitter",
    "Start",
    "decode_request_start",
    "decode_response",
    "error_record",
    "from_json",
    "join",
    "split_all",
    "to_json",
]
