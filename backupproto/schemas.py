"""The wire format, declared once with construct: headers, every payload, strict parsing.

Every encoder and decoder of the project goes through these schemas. Parsing is strict:
exact sizes, NUL-terminated and NUL-padded names that follow the name grammar, no
trailing bytes. A failure raises `MalformedMessage` naming the field, the byte offset
(from the start of the message) and what was expected.

Building is strict too, with one deliberate escape hatch for test tools: a name field
given as `bytes` of exactly the field size is sent as it is, unchecked.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from construct import (
    Adapter,
    Bytes,
    ConstructError,
    FormatField,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Int32ul,
    SizeofError,
    Struct,
    this,
)

from .crypto import encrypted_size
from .dialect import PAYLOAD_CLIENT_ID, V3, Dialect, RequestCode, ResponseCode
from .errors import ErrorKind, LocalProtocolError, MalformedMessage

_PRINTABLE_LOW, _PRINTABLE_HIGH = 0x20, 0x7E
_FORBIDDEN_IN_FILE_NAMES: Final = frozenset(b"/\\:")
_NOT_PRINTABLE: Final = re.compile(b"[^%c-%c]" % (_PRINTABLE_LOW, _PRINTABLE_HIGH))
_FORBIDDEN_PATTERN: Final = re.compile(b"[" + re.escape(bytes(sorted(_FORBIDDEN_IN_FILE_NAMES))) + b"]")
"""The same checks as searches (C speed): the first offending byte, if any."""


class _FieldFault(Exception):
    """Raised inside an adapter; `parse_*` turns it into `MalformedMessage` with the absolute offset."""

    def __init__(self, kind: ErrorKind, message: str, expected: str, at: int) -> None:
        super().__init__(message)
        self.kind, self.message, self.expected, self.at = kind, message, expected, at
        self.field = ""


def _check_name_bytes(raw: bytes, kind: ErrorKind, file_name: bool) -> str:
    """Check a 255-byte field: terminator, padding, grammar; return the text."""
    end = raw.find(b"\x00")
    if end < 0:
        raise _FieldFault(
            ErrorKind.MISSING_NUL,
            f"no NUL terminator in the {len(raw)}-byte field",
            f"at most {len(raw) - 1} characters and a NUL",
            len(raw) - 1,
        )
    padding = raw[end + 1 :]
    if padding.count(0) != len(padding):
        index = end + 1 + len(padding) - len(padding.lstrip(b"\x00"))
        raise _FieldFault(
            ErrorKind.NONZERO_PADDING,
            f"byte 0x{raw[index]:02x} after the NUL terminator",
            "NUL bytes only after the terminator",
            index,
        )
    text = raw[:end]
    if not text:
        raise _FieldFault(kind, "empty name", "1 to 254 printable ASCII characters", 0)
    unprintable = _NOT_PRINTABLE.search(text)
    if unprintable is not None:
        index = unprintable.start()
        raise _FieldFault(
            kind,
            f"byte 0x{text[index]:02x} is not printable ASCII",
            "printable ASCII 0x20..0x7e",
            index,
        )
    if file_name:
        _check_file_name_text(text)
    return text.decode("ascii")


def _check_file_name_text(text: bytes) -> None:
    forbidden = _FORBIDDEN_PATTERN.search(text)
    if forbidden is not None:
        index = forbidden.start()
        raise _FieldFault(
            ErrorKind.INVALID_FILE_NAME,
            f"file name contains {chr(text[index])!r}",
            "a plain file name without '/', '\\' or ':'",
            index,
        )
    if text in (b".", b".."):
        raise _FieldFault(
            ErrorKind.INVALID_FILE_NAME,
            f"file name {text.decode()!r} names a folder",
            "a plain file name, not '.' or '..'",
            0,
        )
    if text[0] == 0x20 or text[-1] == 0x20:
        raise _FieldFault(
            ErrorKind.INVALID_FILE_NAME,
            "file name starts or ends with a space",
            "no leading or trailing space",
            0 if text[0] == 0x20 else len(text) - 1,
        )


def check_name(text: str, *, file_name: bool = False, dialect: Dialect = V3) -> None:
    """Raise `LocalProtocolError` if `text` may not be sent as a client name (or file name)."""
    kind = ErrorKind.INVALID_FILE_NAME if file_name else ErrorKind.INVALID_NAME
    field = "file_name" if file_name else "name"
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            kind, f"{text!r} is not ASCII", field=field, expected="printable ASCII"
        ) from None
    if len(raw) > dialect.max_name_length:
        raise LocalProtocolError(
            kind,
            f"{len(raw)} characters do not fit the field",
            field=field,
            expected=f"at most {dialect.max_name_length} characters",
        )
    try:
        _check_name_bytes(raw.ljust(dialect.name_size, b"\x00"), kind, file_name)
    except _FieldFault as fault:
        raise LocalProtocolError(
            fault.kind, f"{text!r}: {fault.message}", field=field, expected=fault.expected
        ) from None


class NameField(Adapter):  # type: ignore[type-arg]
    """A fixed-size ASCII name: text, NUL terminator, NUL padding (spec 3.4)."""

    def __init__(self, size: int, *, file_name: bool) -> None:
        super().__init__(Bytes(size))
        self.size = size
        self.file_name = file_name
        self.kind = ErrorKind.INVALID_FILE_NAME if file_name else ErrorKind.INVALID_NAME
        self._dialect = Dialect(name_size=size)
        """For `check_name` (made once: a Dialect is costly to build per message)."""

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        try:
            return _check_name_bytes(obj, self.kind, self.file_name)
        except _FieldFault as fault:
            fault.field = "file_name" if self.file_name else "name"
            raise

    def _encode(self, obj: str | bytes, context: Any, path: Any) -> bytes:
        if isinstance(obj, bytes | bytearray):
            if len(obj) != self.size:
                raise LocalProtocolError(
                    self.kind,
                    f"raw field of {len(obj)} bytes",
                    expected=f"exactly {self.size} bytes",
                )
            return bytes(obj)
        check_name(obj, file_name=self.file_name, dialect=self._dialect)
        return obj.encode("ascii").ljust(self.size, b"\x00")


def der_length(data: bytes) -> int | None:
    """Total length of the DER element at the start of `data`, or None if the header is not DER."""
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


class PublicKeyField(Adapter):  # type: ignore[type-arg]
    """A fixed-size field holding one DER SEQUENCE, zero-padded after its end (spec 3.5)."""

    def __init__(self, size: int) -> None:
        super().__init__(Bytes(size))
        self.size = size

    def _decode(self, obj: bytes, context: Any, path: Any) -> bytes:
        try:
            return self._check(obj)
        except _FieldFault as fault:
            fault.field = "public_key"
            raise

    def _check(self, obj: bytes) -> bytes:
        length = der_length(obj)
        if obj[:1] != b"\x30" or length is None:
            raise _FieldFault(
                ErrorKind.BAD_PUBLIC_KEY,
                "the field does not start with a DER SEQUENCE",
                "X.509 SubjectPublicKeyInfo DER (0x30 ...)",
                0,
            )
        if length > self.size:
            raise _FieldFault(
                ErrorKind.BAD_PUBLIC_KEY,
                f"the DER is {length} bytes long",
                f"at most {self.size} bytes",
                1,
            )
        for index in range(length, self.size):
            if obj[index]:
                raise _FieldFault(
                    ErrorKind.NONZERO_PADDING,
                    f"byte 0x{obj[index]:02x} after the {length}-byte DER",
                    "zero bytes after the DER",
                    index,
                )
        return obj[:length]

    def _encode(self, obj: bytes, context: Any, path: Any) -> bytes:
        if len(obj) > self.size:
            raise LocalProtocolError(
                ErrorKind.BAD_PUBLIC_KEY,
                f"a {len(obj)}-byte key does not fit the field",
                field="public_key",
                expected=f"at most {self.size} bytes",
            )
        return bytes(obj).ljust(self.size, b"\x00")


@dataclass(frozen=True)
class RequestHeader:
    """A parsed, validated request header."""

    client_id: bytes
    version: int
    code: RequestCode
    payload_size: int


@dataclass(frozen=True)
class ResponseHeader:
    """A parsed, validated response header."""

    version: int
    code: ResponseCode
    payload_size: int


Fields = dict[str, Any]
"""A parsed payload: field name to value (names as `str`, byte fields as `bytes`)."""


@dataclass(frozen=True)
class SizeRule:
    """Which payload_size values a code admits: `minimum..maximum`, or exactly `minimum` if fixed."""

    minimum: int
    maximum: int
    step: int = 1
    """Admitted sizes are `minimum + k * step`."""

    @property
    def fixed(self) -> bool:
        return self.minimum == self.maximum

    def describe(self) -> str:
        if self.fixed:
            return f"exactly {self.minimum}"
        steps = f" in steps of {self.step}" if self.step > 1 else ""
        return f"{self.minimum}..{self.maximum}{steps}"


class Schemas:
    """The construct schemas of one dialect, addressed by code."""

    def __init__(self, dialect: Dialect = V3) -> None:
        self.dialect = dialect
        d = dialect
        client_id = Bytes(d.client_id_size)
        name = NameField(d.name_size, file_name=False)
        file_name = NameField(d.name_size, file_name=True)
        self.request_header: Final = Struct(
            "client_id" / client_id,
            "version" / Int8ul,
            "code" / Int16ul,
            "payload_size" / Int32ul,
        )
        self.response_header: Final = Struct(
            "version" / Int8ul,
            "code" / Int16ul,
            "payload_size" / Int32ul,
        )
        field_types: dict[str, Any] = {
            PAYLOAD_CLIENT_ID: client_id,
            "content_size": Int32ul,
            "orig_file_size": Int32ul,
            "packet_number": Int16ul,
            "total_packets": Int16ul,
            "file_name": file_name,
        }
        self.send_file_prefix: Final = Struct(*(name / field_types[name] for name in d.send_file_fields))
        raw_name = Bytes(d.name_size)
        self._send_file_numbers: Final = Struct(
            *(name / (raw_name if name == "file_name" else field_types[name]) for name in d.send_file_fields)
        )
        """The prefix with the file name unchecked: its numbers are checked first, in wire order."""
        content = GreedyBytes if d.packetised else Bytes(this.content_size)
        verdict = Struct(*(name / field_types[name] for name in d.verdict_fields))
        requests: dict[RequestCode, Struct] = {
            RequestCode.REGISTER: Struct("name" / name),
            RequestCode.SEND_PUBLIC_KEY: Struct(
                "name" / name, "public_key" / PublicKeyField(d.public_key_size)
            ),
            RequestCode.RECONNECT: Struct("name" / name),
            RequestCode.SEND_FILE: Struct(*self.send_file_prefix.subcons, "content" / content),
            RequestCode.CRC_OK: verdict,
            RequestCode.CRC_RETRY: verdict,
            RequestCode.CRC_GIVE_UP: verdict,
        }
        self.requests: Final = {role: requests[role] for role in d.requests}
        """The payload of every request role the dialect has."""
        wrapped_key = Struct("client_id" / client_id, "encrypted_aes_key" / GreedyBytes)
        response_fields: dict[str, Any] = {"client_id": client_id}
        responses: dict[ResponseCode, Struct] = {
            ResponseCode.REGISTERED: Struct("client_id" / client_id),
            ResponseCode.REGISTRATION_FAILED: Struct(),
            ResponseCode.AES_KEY: wrapped_key,
            ResponseCode.FILE_RECEIVED: Struct(
                "client_id" / client_id,
                "content_size" / Int32ul,
                "file_name" / file_name,
                "cksum" / Int32ul,
            ),
            ResponseCode.ACKNOWLEDGED: Struct(
                *(name / response_fields[name] for name in d.acknowledged_fields)
            ),
            ResponseCode.RECONNECT_APPROVED: wrapped_key,
            ResponseCode.RECONNECT_DENIED: Struct("client_id" / client_id),
            ResponseCode.SERVER_ERROR: Struct(),
        }
        self.responses: Final = {role: responses[role] for role in d.responses}
        """The payload of every response role the dialect has."""
        self.request_header_size: Final[int] = self.request_header.sizeof()
        self.response_header_size: Final[int] = self.response_header.sizeof()
        self.send_file_prefix_size: Final[int] = self.send_file_prefix.sizeof()
        self.max_content_size: Final[int] = _round_down(
            0xFFFFFFFF - self.send_file_prefix_size, d.aes_block_size
        )
        self._request_rules = {code: self._request_rule(code) for code in self.requests}
        self._response_rules = {code: self._response_rule(code) for code in self.responses}
        self._request_offsets = {
            code: self._message_offsets(self.request_header, schema) for code, schema in self.requests.items()
        }
        self._response_offsets = {
            code: self._message_offsets(self.response_header, schema)
            for code, schema in self.responses.items()
        }
        self._request_header_offsets = _field_offsets(self.request_header)
        self._response_header_offsets = _field_offsets(self.response_header)
        self._compiled_request_header = self.request_header.compile()
        self._compiled_response_header = self.response_header.compile()

    # -- field positions --------------------------------------------------------------------

    @staticmethod
    def _message_offsets(header: Any, payload: Any) -> dict[str, int]:
        offsets = _field_offsets(header)
        base = header.sizeof()
        offsets.update({name: base + at for name, at in _field_offsets(payload).items()})
        return offsets

    def message_offsets(self, code: RequestCode | ResponseCode) -> dict[str, int]:
        """Every field of a `code` message and its byte offset (header fields included)."""
        if isinstance(code, RequestCode):
            return dict(self._request_offsets[code])
        return dict(self._response_offsets[code])

    def offset(self, code: RequestCode | ResponseCode, field: str) -> int:
        """Byte offset of `field` from the start of a `code` message (header fields included).

        Derived from the construct declarations: `offset(RequestCode.SEND_FILE, "file_name")`
        is 27 in 2023A. Raises KeyError for a field the message does not have.
        """
        try:
            return self.message_offsets(code)[field]
        except KeyError:
            raise KeyError(f"{code.name} has no field {field!r}") from None

    # -- codes ------------------------------------------------------------------------------

    def request_role(self, wire_code: int) -> RequestCode | None:
        """The request role a wire code stands for in this dialect, or None."""
        return self.dialect.request_role(wire_code)

    def response_role(self, wire_code: int) -> ResponseCode | None:
        """The response role a wire code stands for in this dialect, or None."""
        return self.dialect.response_role(wire_code)

    def wire_code(self, code: int) -> int:
        """The wire value of a role in this dialect; a plain int is taken as a wire value already."""
        if isinstance(code, RequestCode):
            found = self.dialect.requests.get(code)
        elif isinstance(code, ResponseCode):
            found = self.dialect.responses.get(code)
        else:
            return int(code)
        if found is None:
            raise LocalProtocolError(
                ErrorKind.UNKNOWN_CODE,
                f"dialect {self.dialect.name} has no {code.name}",
                field="code",
                expected=f"a message of dialect {self.dialect.name}",
            )
        return found

    # -- size rules -------------------------------------------------------------------------

    def request_size_rule(self, code: RequestCode) -> SizeRule:
        """The payload sizes a request code admits (for 1103: the header-level bounds)."""
        return self._request_rules[code]

    def response_size_rule(self, code: ResponseCode) -> SizeRule:
        """The payload sizes a response code admits."""
        return self._response_rules[code]

    def _request_rule(self, code: RequestCode) -> SizeRule:
        if code is RequestCode.SEND_FILE:
            prefix, block = self.send_file_prefix_size, self.dialect.aes_block_size
            if self.dialect.packetised:  # a packet carries any part of the ciphertext
                return SizeRule(prefix + 1, prefix + self.max_content_size)
            return SizeRule(prefix + block, prefix + self.max_content_size, block)
        size = self.requests[code].sizeof()
        return SizeRule(size, size)

    def _response_rule(self, code: ResponseCode) -> SizeRule:
        schema = self.responses[code]
        try:
            size = schema.sizeof()
        except SizeofError:
            base = self.dialect.client_id_size
            return SizeRule(base + 1, base + self.dialect.max_encrypted_key_size)
        return SizeRule(size, size)

    # -- headers ----------------------------------------------------------------------------

    def parse_request_header(self, data: bytes) -> RequestHeader:
        """Parse and validate a 23-byte request header (version, code, payload_size; spec 3.6)."""
        raw, code = self._parse_header(data, requests=True)
        return RequestHeader(raw["client_id"], raw["version"], code, raw["payload_size"])

    def parse_response_header(self, data: bytes) -> ResponseHeader:
        """Parse and validate a 7-byte response header."""
        raw, code = self._parse_header(data, requests=False)
        return ResponseHeader(raw["version"], code, raw["payload_size"])

    def _parse_header(self, data: bytes, *, requests: bool) -> tuple[Fields, Any]:
        """A header's raw fields and its role, checked in the order of spec 3.6: length, version,
        code, payload_size."""
        if requests:
            size, compiled, offsets = (
                self.request_header_size,
                self._compiled_request_header,
                self._request_header_offsets,
            )
        else:
            size, compiled, offsets = (
                self.response_header_size,
                self._compiled_response_header,
                self._response_header_offsets,
            )
        if len(data) != size:
            raise MalformedMessage(
                ErrorKind.TRUNCATED if len(data) < size else ErrorKind.TRAILING_BYTES,
                f"header of {len(data)} bytes",
                field="header",
                offset=min(len(data), size),
                expected=f"{size} bytes",
            )
        # Safe to use the compiled parser: the length was checked above.
        raw = _fields(compiled.parse(data))
        self._check_version(raw["version"], offsets["version"])
        code = self._known(raw["code"], offsets["code"], requests=requests)
        rule = self.request_size_rule(code) if requests else self.response_size_rule(code)
        _check_payload_size(raw["payload_size"], rule, code, offsets["payload_size"])
        return raw, code

    def _known(self, code: int, offset: int, *, requests: bool) -> Any:
        d = self.dialect
        role = d.request_role(code) if requests else d.response_role(code)
        if role is None:
            known = sorted((d.requests if requests else d.responses).values())
            raise MalformedMessage(
                ErrorKind.UNKNOWN_CODE,
                f"unknown {'request' if requests else 'response'} code {code} in dialect {d.name}",
                field="code",
                offset=offset,
                expected="one of " + ", ".join(map(str, known)),
            )
        return role

    def _check_version(self, version: int, offset: int) -> None:
        if version != self.dialect.version:
            raise MalformedMessage(
                ErrorKind.UNSUPPORTED_VERSION,
                f"version {version}",
                field="version",
                offset=offset,
                expected=f"{self.dialect.version}",
            )

    # -- payloads ---------------------------------------------------------------------------

    def parse_payload(self, schema: Any, data: bytes, base: int, client_id: bytes | None = None) -> Fields:
        """Parse a payload that must fill `data` exactly; `base` is its offset in the message.

        With the header's `client_id`, a payload client_id (2022C) is checked against it
        (`client_id_mismatch`) and left out of the fields.
        """
        expected = _fixed_size(schema)
        if expected is not None and len(data) != expected:
            raise MalformedMessage(
                ErrorKind.TRUNCATED if len(data) < expected else ErrorKind.TRAILING_BYTES,
                f"payload of {len(data)} bytes",
                field="payload",
                offset=base + min(len(data), expected),
                expected=f"{expected} bytes",
            )
        fast = _compiled(schema) if expected is not None else None
        try:  # compiled code reads the fields as the Struct does once the size is known to fit
            fields = _fields((schema if fast is None else fast.compiled).parse(data))
        except _FieldFault as fault:
            offsets = _field_offsets(schema)  # only on the error path
            raise MalformedMessage(
                fault.kind,
                fault.message,
                field=fault.field,
                offset=base + offsets.get(fault.field or "", 0) + fault.at,
                expected=fault.expected,
            ) from None
        if client_id is not None and PAYLOAD_CLIENT_ID in fields:
            inner = fields.pop(PAYLOAD_CLIENT_ID)
            if inner != client_id:
                raise MalformedMessage(
                    ErrorKind.CLIENT_ID_MISMATCH,
                    f"the payload's client_id {inner.hex()} differs from the header's {client_id.hex()}",
                    field="client_id",
                    offset=base + _field_offsets(schema)[PAYLOAD_CLIENT_ID],
                    expected="the same client_id in header and payload",
                )
        return fields

    def parse_send_file_prefix(
        self,
        data: bytes,
        payload_size: int,
        base: int,
        max_content_size: int | None = None,
        client_id: bytes | None = None,
    ) -> Fields:
        """Parse a send-file prefix and check it against payload_size (`base`: its offset).

        `max_content_size`: a receiver's limit on content_size (`payload_too_large`). In a
        packetised dialect content_size is the whole file's encrypted size and the packet's
        own content is payload_size minus the prefix; the checks of one packet (spec
        dialects 18.2) are made here, those across packets by `packets.PacketReceiver`.
        """
        numbers = self.parse_payload(self._send_file_numbers, data, base, client_id)
        size, block = numbers["content_size"], self.dialect.aes_block_size
        offsets = _field_offsets(self.send_file_prefix)
        size_at = base + offsets["content_size"]
        if size == 0 or size % block:
            raise MalformedMessage(
                ErrorKind.BAD_CONTENT_SIZE,
                f"content_size {size}",
                field="content_size",
                offset=size_at,
                expected=f"a non-zero multiple of {block} (encrypted size)",
            )
        if max_content_size is not None and size > max_content_size:
            raise MalformedMessage(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"content_size {size} exceeds this receiver's limit",
                field="content_size",
                offset=size_at,
                expected=f"at most {max_content_size}",
            )
        content = payload_size - self.send_file_prefix_size
        if self.dialect.packetised:
            self._check_packet_numbers(numbers, base, offsets)
        prefix = self.parse_payload(self.send_file_prefix, data, base, client_id)  # the file name
        if self.dialect.packetised:
            self._check_packet_content(prefix, content, base, offsets)
        elif payload_size != self.send_file_prefix_size + size:
            raise MalformedMessage(
                ErrorKind.PAYLOAD_SIZE_MISMATCH,
                f"payload_size {payload_size} with content_size {size}",
                field="payload_size",
                offset=self._request_header_offsets["payload_size"],
                expected=f"payload_size = {self.send_file_prefix_size} + content_size",
            )
        return prefix

    def _check_packet_numbers(self, prefix: Fields, base: int, offsets: dict[str, int]) -> None:
        """Checks 3-5 of one packet (spec dialects 18.2), in that order."""
        size, original = prefix["content_size"], prefix["orig_file_size"]
        number, total = prefix["packet_number"], prefix["total_packets"]
        if size != encrypted_size(original):
            raise MalformedMessage(
                ErrorKind.BAD_ORIG_FILE_SIZE,
                f"orig_file_size {original} does not encrypt to content_size {size}",
                field="orig_file_size",
                offset=base + offsets["orig_file_size"],
                expected=f"content_size {encrypted_size(original)} (PKCS#7 padding of the original)",
            )
        if total == 0:
            raise MalformedMessage(
                ErrorKind.BAD_TOTAL_PACKETS,
                "total_packets 0",
                field="total_packets",
                offset=base + offsets["total_packets"],
                expected="at least 1",
            )
        if not 1 <= number <= total:
            raise MalformedMessage(
                ErrorKind.BAD_PACKET_NUMBER,
                f"packet_number {number} of {total}",
                field="packet_number",
                offset=base + offsets["packet_number"],
                expected=f"1..{total} (packets are numbered from 1)",
            )

    def _check_packet_content(self, prefix: Fields, content: int, base: int, offsets: dict[str, int]) -> None:
        """Check 7 of one packet: its content fits content_size beside the other packets."""
        size, number, total = prefix["content_size"], prefix["packet_number"], prefix["total_packets"]
        room = size - (total - 1)  # every other packet carries at least one byte
        if content > room or (total == 1 and content != size):
            raise MalformedMessage(
                ErrorKind.CONTENT_SIZE_INCONSISTENT,
                f"packet {number} of {total} carries {content} content bytes of content_size {size}",
                field="content_size",
                offset=base + offsets["content_size"],
                expected=f"exactly {size} bytes" if total == 1 else f"at most {room} bytes in one packet",
            )

    def parse_request(self, data: bytes) -> tuple[RequestHeader, Fields]:
        """Parse one whole request message (header and payload, nothing after it).

        A payload client_id (2022C) is checked against the header's and left out of the fields.
        """
        size = self.request_header_size
        header = self.parse_request_header(bytes(data[:size]))
        payload = _exact_payload(data, size, header.payload_size)
        if header.code is RequestCode.SEND_FILE:
            prefix_size = self.send_file_prefix_size
            prefix = payload[:prefix_size]
            fields = self.parse_send_file_prefix(
                prefix, header.payload_size, size, client_id=header.client_id
            )
            fields["content"] = payload[prefix_size:]
        else:
            fields = self.parse_payload(self.requests[header.code], payload, size, header.client_id)
        return header, fields

    def parse_response(self, data: bytes) -> tuple[ResponseHeader, Fields]:
        """Parse one whole response message (header and payload, nothing after it)."""
        size = self.response_header_size
        header = self.parse_response_header(bytes(data[:size]))
        payload = _exact_payload(data, size, header.payload_size)
        return header, self.parse_payload(self.responses[header.code], payload, size)

    # -- building ---------------------------------------------------------------------------

    def build_request_header(
        self, client_id: bytes, code: int, payload_size: int, version: int | None = None
    ) -> bytes:
        """Build a request header from any field values (also invalid ones, for test tools)."""
        values = {
            "client_id": client_id,
            "version": self.dialect.version if version is None else version,
            "code": self.wire_code(code),
            "payload_size": payload_size,
        }
        if isinstance(client_id, bytes) and len(client_id) == self.dialect.client_id_size:
            try:  # the compiled struct does not check byte lengths (done just above); numbers it does
                return bytes(self._compiled_request_header.build(values))
            except (ConstructError, struct.error):
                pass  # the interpreted build names the value that does not fit
        return build_struct(self.request_header, values, "request header")

    def build_response_header(self, code: int, payload_size: int, version: int | None = None) -> bytes:
        """Build a response header from any field values."""
        values = {
            "version": self.dialect.version if version is None else version,
            "code": self.wire_code(code),
            "payload_size": payload_size,
        }
        try:  # the compiled struct packs numbers only; a value that does not fit is named below
            return bytes(self._compiled_response_header.build(values))
        except (ConstructError, struct.error):
            return build_struct(self.response_header, values, "response header")

    def _payload_schema(self, code: RequestCode | ResponseCode) -> Any:
        self.wire_code(code)  # a role the dialect does not have is a LocalProtocolError
        return self.requests[code] if isinstance(code, RequestCode) else self.responses[code]

    def build_request_payload(self, code: RequestCode, fields: Mapping[str, Any]) -> bytes:
        """Build a request payload (for 1103, `content` included); names are checked."""
        return build_struct(self._payload_schema(code), fields, f"{code.name} payload")

    def build_response_payload(self, code: ResponseCode, fields: Mapping[str, Any]) -> bytes:
        """Build a response payload; names are checked."""
        return build_struct(self._payload_schema(code), fields, f"{code.name} payload")

    def build_send_file_start(
        self, client_id: bytes, fields: Mapping[str, Any], content_length: int | None = None
    ) -> bytes:
        """The start of a streamed send-file: header and prefix; the content follows as raw bytes.

        payload_size = prefix + `content_length` (default: content_size; in a packetised
        dialect, this packet's share). A payload client_id (2022C) defaults to `client_id`.
        Values are not range-checked (test tools send odd ones); names are.
        """
        values = {PAYLOAD_CLIENT_ID: client_id, **fields}
        prefix = build_struct(self.send_file_prefix, values, "SEND_FILE prefix")
        size = len(prefix) + (fields["content_size"] if content_length is None else content_length)
        return self.build_request_header(client_id, RequestCode.SEND_FILE, size) + prefix

    def build_request(
        self, code: RequestCode, client_id: bytes, fields: Mapping[str, Any], version: int | None = None
    ) -> bytes:
        """Build a whole request message with a payload_size that matches its payload."""
        payload = self.build_request_payload(code, {PAYLOAD_CLIENT_ID: client_id, **fields})
        return self.build_request_header(client_id, code, len(payload), version) + payload

    def build_response(
        self, code: ResponseCode, fields: Mapping[str, Any], version: int | None = None
    ) -> bytes:
        """Build a whole response message with a payload_size that matches its payload."""
        payload = self.build_response_payload(code, fields)
        return self.build_response_header(code, len(payload), version) + payload


def build_struct(schema: Any, values: Mapping[str, Any], what: str) -> bytes:
    """Build `schema` from `values`; a value that does not fit raises `LocalProtocolError` naming it."""
    fast = _compiled(schema)
    if fast is not None and fast.fits(values):
        try:
            return bytes(fast.compiled.build(values))
        except (ConstructError, struct.error, KeyError):
            pass  # the interpreted build below names the value that does not fit
    try:
        return bytes(schema.build(dict(values)))
    except ConstructError as error:
        field = str(error.path or "").rpartition("-> ")[2] or None
        reason = str(error).rpartition("\n")[2]
        raise LocalProtocolError(
            ErrorKind.INVALID_FIELD,
            f"cannot build the {what}: {reason}",
            field=field,
            expected="a value that fits the field",
        ) from None
    except KeyError as error:
        raise LocalProtocolError(
            ErrorKind.INVALID_FIELD,
            f"cannot build the {what}: no value for {error.args[0]!r}",
            field=str(error.args[0]),
            expected="a value for every field",
        ) from None


_COMPILABLE: Final = (NameField, PublicKeyField, FormatField)
"""Field types whose compiled code checks what the interpreted code checks (their own code runs)."""


@dataclass(frozen=True)
class _CompiledStruct:
    """A Struct's compiled code (construct's `compile()`: several times faster), used where it is
    exactly as strict as the interpreted Struct: parsing data of the checked size, and building
    values whose byte fields have the declared lengths (compiled code does not check those)."""

    compiled: Any
    byte_sizes: tuple[tuple[str, int | None], ...]
    """Byte fields: name and exact length (None: any length, GreedyBytes)."""

    def fits(self, values: Mapping[str, Any]) -> bool:
        """True if every byte field of `values` is bytes of its declared length."""
        for name, size in self.byte_sizes:
            value = values.get(name)
            if not isinstance(value, bytes) or (size is not None and len(value) != size):
                return False
        return True


@lru_cache(maxsize=256)
def _compiled(schema: Any) -> _CompiledStruct | None:
    """The compiled form of a Struct of fixed fields (once per schema), None if it has others."""
    if not isinstance(schema, Struct):
        return None
    byte_sizes: list[tuple[str, int | None]] = []
    for sub in schema.subcons:
        field = getattr(sub, "subcon", None)
        if sub.name is None or field is None:
            return None
        if field is GreedyBytes:
            byte_sizes.append((sub.name, None))
        elif type(field) is Bytes and isinstance(field.length, int):
            byte_sizes.append((sub.name, field.length))
        elif not isinstance(field, _COMPILABLE):
            return None
    try:
        compiled = schema.compile()
    except ConstructError:  # pragma: no cover - every field above compiles
        return None
    return _CompiledStruct(compiled, tuple(byte_sizes))


@lru_cache(maxsize=256)
def _fixed_size(schema: Any) -> int | None:
    """The size of a fixed-size schema, None if it varies (computed once per schema: sizeof is slow)."""
    try:
        size: int = schema.sizeof()
    except SizeofError:
        return None
    return size


def _fields(container: Any) -> Fields:
    return {key: value for key, value in container.items() if not key.startswith("_")}


def _round_down(value: int, multiple: int) -> int:
    return value - value % multiple


def _check_payload_size(size: int, rule: SizeRule, code: RequestCode | ResponseCode, offset: int) -> None:
    fits_layout = size >= rule.minimum and (size - rule.minimum) % rule.step == 0
    if fits_layout and size <= rule.maximum:
        return
    too_large = fits_layout and not rule.fixed
    kind = ErrorKind.PAYLOAD_TOO_LARGE if too_large else ErrorKind.PAYLOAD_SIZE_MISMATCH
    raise MalformedMessage(
        kind,
        f"payload_size {size} for {code.name} ({int(code)})",
        field="payload_size",
        offset=offset,
        expected=rule.describe(),
    )


def _exact_payload(data: bytes, header_size: int, payload_size: int) -> bytes:
    end = header_size + payload_size
    if len(data) < end:
        raise MalformedMessage(
            ErrorKind.TRUNCATED,
            f"message of {len(data)} bytes ends inside the payload",
            field="payload",
            offset=len(data),
            expected=f"{end} bytes (header + payload_size {payload_size})",
        )
    if len(data) > end:
        raise MalformedMessage(
            ErrorKind.TRAILING_BYTES,
            f"{len(data) - end} bytes after the payload",
            field="payload",
            offset=end,
            expected=f"exactly {end} bytes",
        )
    return bytes(data[header_size:])


def _field_offsets(schema: Any) -> dict[str, int]:
    """Offsets of the fixed-size fields at the start of a Struct, by name."""
    offsets: dict[str, int] = {}
    position = 0
    for sub in schema.subcons:
        offsets[sub.name] = position
        try:
            position += sub.sizeof()
        except SizeofError:
            break
    return offsets


V3_SCHEMAS: Final = Schemas(V3)


@lru_cache(maxsize=16)
def schemas_for(dialect: Dialect) -> Schemas:
    """The schemas of a dialect, built once per dialect."""
    return V3_SCHEMAS if dialect == V3 else Schemas(dialect)
