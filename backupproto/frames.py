"""Deliberately malformed frames for test tools: build through the schemas, then alter.

Every frame starts as a valid message built by `backupproto.schemas`; each alteration
returns a new `Frame` and names what it changes, so no test tool writes bytes or offsets
by hand::

    frame = request_frame(RequestCode.REGISTER, client_id, {"name": "alice"})
    data = bytes(frame.with_header(payload_size=254).truncated(frame.size - 1))

Header overrides rebuild the header through the schemas (any value that fits the field,
valid or not); `with_field` replaces a payload field's raw bytes in place; `truncated` and
`with_trailing` cut or extend the message. `payload_size` is never recomputed after the
message was built: override it explicitly if you want it to agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .dialect import RequestCode, ResponseCode
from .errors import ErrorKind, LocalProtocolError
from .schemas import V3_SCHEMAS, Schemas


@dataclass(frozen=True)
class Frame:
    """One message's bytes and what they were built as (`code` is the role it was built for)."""

    schemas: Schemas
    code: RequestCode | ResponseCode
    data: bytes

    def __bytes__(self) -> bytes:
        return self.data

    @property
    def size(self) -> int:
        """Length of the frame in bytes."""
        return len(self.data)

    @property
    def is_request(self) -> bool:
        return isinstance(self.code, RequestCode)

    @property
    def header_size(self) -> int:
        schemas = self.schemas
        return schemas.request_header_size if self.is_request else schemas.response_header_size

    def with_header(self, **overrides: Any) -> Frame:
        """Rebuild the header with some fields replaced: client_id, version, code, payload_size.

        `code` is taken as a wire value as it is (an int, or a role of this frame's dialect).
        """
        schemas = self.schemas
        header = schemas.request_header if self.is_request else schemas.response_header
        values = {k: v for k, v in header.parse(self.data[: self.header_size]).items() if k != "_io"}
        unknown = set(overrides) - set(values)
        if unknown:
            raise LocalProtocolError(
                ErrorKind.INVALID_FIELD,
                f"no header field {sorted(unknown)[0]!r}",
                field=sorted(unknown)[0],
                expected=", ".join(values),
            )
        values.update(overrides)
        if self.is_request:
            built = schemas.build_request_header(
                values["client_id"], values["code"], values["payload_size"], values["version"]
            )
        else:
            built = schemas.build_response_header(values["code"], values["payload_size"], values["version"])
        return replace(self, data=built + self.data[self.header_size :])

    def with_field(self, field: str, raw: bytes) -> Frame:
        """Replace the bytes of a payload or header field with `raw` (any length; the rest shifts)."""
        start = self.schemas.offset(self.code, field)
        end = start + self._field_size(field)
        return replace(self, data=self.data[:start] + bytes(raw) + self.data[end:])

    def truncated(self, size: int) -> Frame:
        """The first `size` bytes only."""
        if not 0 <= size <= self.size:
            raise LocalProtocolError(
                ErrorKind.INVALID_FIELD,
                f"cannot cut a {self.size}-byte frame to {size}",
                expected=f"0..{self.size}",
            )
        return replace(self, data=self.data[:size])

    def with_trailing(self, extra: bytes) -> Frame:
        """The frame followed by `extra` bytes (payload_size unchanged)."""
        return replace(self, data=self.data + bytes(extra))

    def _field_size(self, field: str) -> int:
        """The built size of `field`: up to the next field's offset, or to the end of the frame."""
        schemas = self.schemas
        offsets = schemas.message_offsets(self.code)
        start = offsets[field]
        later = [at for at in offsets.values() if at > start]
        return (min(later) if later else self.size) - start


def request_frame(
    code: RequestCode, client_id: bytes, fields: Mapping[str, Any], *, schemas: Schemas = V3_SCHEMAS
) -> Frame:
    """A valid request built through the schemas (for 1103: `content` included)."""
    return Frame(schemas, code, schemas.build_request(code, client_id, fields))


def response_frame(code: ResponseCode, fields: Mapping[str, Any], *, schemas: Schemas = V3_SCHEMAS) -> Frame:
    """A valid response built through the schemas."""
    return Frame(schemas, code, schemas.build_response(code, fields))


def send_file_start(client_id: bytes, fields: Mapping[str, Any], *, schemas: Schemas = V3_SCHEMAS) -> Frame:
    """The start of a streamed 1103 (header and prefix; payload_size counts content_size bytes to come)."""
    return Frame(schemas, RequestCode.SEND_FILE, schemas.build_send_file_start(client_id, fields))
