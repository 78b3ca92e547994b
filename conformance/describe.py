"""One-line, human-readable descriptions of the bytes of a conversation (for transcripts).

Codes are named in the run's dialect (`schemas`): ``1025 REGISTER`` in 2023C, ``1600
REGISTERED`` in 2024A; headers are the same size in every dialect.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from backupproto.dialect import RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.events import Request, Response
from backupproto.schemas import V3_SCHEMAS, Schemas

SCHEMAS = V3_SCHEMAS
"""The 2023A schemas (headers have the same layout in every dialect)."""
REQUEST_HEADER_SIZE = SCHEMAS.request_header_size
RESPONSE_HEADER_SIZE = SCHEMAS.response_header_size
RESPONSE_CODE_BYTES = slice(
    SCHEMAS.offset(ResponseCode.REGISTERED, "code"), SCHEMAS.offset(ResponseCode.REGISTERED, "payload_size")
)
RESPONSE_SIZE_BYTES = slice(SCHEMAS.offset(ResponseCode.REGISTERED, "payload_size"), RESPONSE_HEADER_SIZE)
"""Where a response header's code and payload_size are (the same in every dialect)."""


def response_code(data: bytes) -> int | None:
    """The code of the response header that `data` begins with (None: shorter than a header)."""
    if len(data) < RESPONSE_HEADER_SIZE:
        return None
    return int(SCHEMAS.response_header.parse(data[:RESPONSE_HEADER_SIZE]).code)


def code_name(code: int, *, request: bool, schemas: Schemas = SCHEMAS) -> str:
    """``1100 REGISTER``, or ``1199 (unknown code)``: a wire code named in the dialect of `schemas`."""
    role = schemas.request_role(code) if request else schemas.response_role(code)
    if role is None:
        return f"{code} (unknown code in {schemas.dialect.name})"
    return f"{code} {role.name}"


def role_name(role: int, *, request: bool, schemas: Schemas = SCHEMAS) -> str:
    """A role (2023A value) named with its wire code in the dialect of `schemas`: ``1600 REGISTERED``."""
    try:
        wire = schemas.wire_code(role)
    except BackupProtoError:
        return f"(no {getattr(role, 'name', role)} in {schemas.dialect.name})"
    return code_name(wire, request=request, schemas=schemas)


def _value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
        return data.hex() if len(data) <= 20 else f"{data[:12].hex()}...({len(data)} bytes)"
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:30] + "...") + f"({len(value)} chars)"
    return repr(value)


def describe_event(event: Request | Response, schemas: Schemas = SCHEMAS) -> str:
    """``2100 REGISTERED client_id=...`` (the code in the dialect of `schemas`)."""
    request = isinstance(event, Request)
    parts = [role_name(event.code, request=request, schemas=schemas)]
    parts += [f"{f.name}={_value(getattr(event, f.name))}" for f in fields(event)]
    return " ".join(parts)


def describe_request_bytes(data: bytes, schemas: Schemas = SCHEMAS) -> str:
    """Decode a request (or the header and prefix of a send-file) as far as it goes."""
    if len(data) < REQUEST_HEADER_SIZE:
        return f"{len(data)} bytes: part of a request header"
    raw = schemas.request_header.parse(data[:REQUEST_HEADER_SIZE])
    head = (
        f"client_id={_value(raw.client_id)} version={raw.version} "
        f"code={code_name(raw.code, request=True, schemas=schemas)} payload_size={raw.payload_size}"
    )
    try:
        _header, values = schemas.parse_request(data)
    except BackupProtoError as error:
        problem = str(error)
        prefix_end = REQUEST_HEADER_SIZE + schemas.send_file_prefix_size
        if schemas.request_role(raw.code) is RequestCode.SEND_FILE and len(data) == prefix_end:
            try:
                prefix = schemas.parse_send_file_prefix(
                    data[REQUEST_HEADER_SIZE:], raw.payload_size, REQUEST_HEADER_SIZE
                )
                shown = " ".join(f"{k}={_value(v)}" for k, v in prefix.items())
                return f"{head} {shown}"
            except BackupProtoError as prefix_error:
                problem = str(prefix_error)
        body = len(data) - REQUEST_HEADER_SIZE
        return f"{head} +{body} payload bytes (not a valid request: {problem})"
    shown = " ".join(f"{k}={_value(v)}" for k, v in values.items())
    return f"{head} {shown}".rstrip()
