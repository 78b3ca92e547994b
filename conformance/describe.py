"""One-line, human-readable descriptions of the bytes of a conversation (for transcripts)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from backupproto.dialect import RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.events import Request, Response
from backupproto.schemas import V3_SCHEMAS

SCHEMAS = V3_SCHEMAS
REQUEST_HEADER_SIZE = SCHEMAS.request_header_size
RESPONSE_HEADER_SIZE = SCHEMAS.response_header_size


def code_name(code: int, *, request: bool) -> str:
    """``1100 REGISTER``, or ``1199 (unknown code)``."""
    table: Any = RequestCode if request else ResponseCode
    try:
        return f"{code} {table(code).name}"
    except ValueError:
        return f"{code} (unknown code)"


def _value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
        return data.hex() if len(data) <= 20 else f"{data[:12].hex()}...({len(data)} bytes)"
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:30] + "...") + f"({len(value)} chars)"
    return repr(value)


def describe_event(event: Request | Response) -> str:
    """``2100 REGISTERED client_id=...``."""
    request = isinstance(event, Request)
    parts = [code_name(int(event.code), request=request)]
    parts += [f"{f.name}={_value(getattr(event, f.name))}" for f in fields(event)]
    return " ".join(parts)


def describe_request_bytes(data: bytes) -> str:
    """Decode a request (or the header and prefix of a 1103) as far as it goes."""
    if len(data) < REQUEST_HEADER_SIZE:
        return f"{len(data)} bytes: part of a request header"
    raw = SCHEMAS.request_header.parse(data[:REQUEST_HEADER_SIZE])
    head = (
        f"client_id={_value(raw.client_id)} version={raw.version} "
        f"code={code_name(raw.code, request=True)} payload_size={raw.payload_size}"
    )
    try:
        _header, values = SCHEMAS.parse_request(data)
    except BackupProtoError as error:
        problem = str(error)
        if raw.code == RequestCode.SEND_FILE and len(data) == REQUEST_HEADER_SIZE + 259:
            try:
                prefix = SCHEMAS.parse_send_file_prefix(data[REQUEST_HEADER_SIZE:], raw.payload_size, 23)
                return f"{head} content_size={prefix['content_size']} file_name={_value(prefix['file_name'])}"
            except BackupProtoError as prefix_error:
                problem = str(prefix_error)
        body = len(data) - REQUEST_HEADER_SIZE
        return f"{head} +{body} payload bytes (not a valid request: {problem})"
    shown = " ".join(f"{k}={_value(v)}" for k, v in values.items())
    return f"{head} {shown}".rstrip()
