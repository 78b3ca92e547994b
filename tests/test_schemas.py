"""Wire schemas (spec sections 3-5): hand-written bytes, parse/build/sizeof together, strictness."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupproto.dialect import RequestCode, ResponseCode
from backupproto.engine import event_fields
from backupproto.errors import ErrorKind, LocalProtocolError, MalformedMessage
from backupproto.events import REQUEST_EVENTS, RESPONSE_EVENTS, Request, Response, SendFile
from backupproto.schemas import V3_SCHEMAS as S

CLIENT_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
# Written by hand from spec 3.1: client_id, version 3, code 1100 = 0x044c LE, payload_size 255 = 0xff LE.
REGISTER_ALICE = bytes.fromhex("00112233445566778899aabbccddeeff034c04ff000000") + b"alice" + b"\x00" * 250


def name_field(text: bytes) -> bytes:
    return text + b"\x00" * (255 - len(text))


def test_register_bytes_by_hand() -> None:
    header, fields = S.parse_request(REGISTER_ALICE)
    assert (header.client_id, header.version, header.code, header.payload_size) == (
        CLIENT_ID,
        3,
        RequestCode.REGISTER,
        255,
    )
    assert fields == {"name": "alice"}
    assert S.build_request(RequestCode.REGISTER, CLIENT_ID, {"name": "alice"}) == REGISTER_ALICE


def test_response_header_bytes_by_hand() -> None:
    # 2100 = 0x0834, payload 16 bytes
    data = bytes.fromhex("03340810000000") + CLIENT_ID
    header, fields = S.parse_response(data)
    assert (header.version, header.code, header.payload_size) == (3, ResponseCode.REGISTERED, 16)
    assert fields == {"client_id": CLIENT_ID}
    assert S.build_response(ResponseCode.REGISTERED, {"client_id": CLIENT_ID}) == data


def test_file_received_bytes_by_hand() -> None:
    # 2103 = 0x0837, payload 279 = 0x117: client_id, content_size 32, file_name, cksum 0x01020304
    payload = CLIENT_ID + bytes.fromhex("20000000") + name_field(b"a.txt") + bytes.fromhex("04030201")
    data = bytes.fromhex("03370817010000") + payload
    _, fields = S.parse_response(data)
    assert fields == {"client_id": CLIENT_ID, "content_size": 32, "file_name": "a.txt", "cksum": 0x01020304}
    assert S.build_response(ResponseCode.FILE_RECEIVED, fields) == data


def test_send_file_bytes_by_hand() -> None:
    content = bytes(range(32))
    # 1103 = 0x044f, payload_size = 4 + 255 + 32 = 291 = 0x123
    data = CLIENT_ID + bytes.fromhex("034f042301000020000000") + name_field(b"notes.txt") + content
    header, fields = S.parse_request(data)
    assert header.payload_size == 291
    assert fields == {"content_size": 32, "file_name": "notes.txt", "content": content}
    assert S.build_request(RequestCode.SEND_FILE, CLIENT_ID, fields) == data


@pytest.mark.parametrize(
    ("code", "size"),
    [
        (RequestCode.REGISTER, 255),
        (RequestCode.SEND_PUBLIC_KEY, 415),
        (RequestCode.RECONNECT, 255),
        (RequestCode.CRC_OK, 255),
        (RequestCode.CRC_RETRY, 255),
        (RequestCode.CRC_GIVE_UP, 255),
    ],
)
def test_fixed_request_sizes(code: RequestCode, size: int) -> None:
    assert S.requests[code].sizeof() == size
    assert S.request_size_rule(code).fixed


@pytest.mark.parametrize(
    ("code", "size"),
    [
        (ResponseCode.REGISTERED, 16),
        (ResponseCode.REGISTRATION_FAILED, 0),
        (ResponseCode.FILE_RECEIVED, 279),
        (ResponseCode.ACKNOWLEDGED, 16),
        (ResponseCode.RECONNECT_DENIED, 16),
        (ResponseCode.SERVER_ERROR, 0),
    ],
)
def test_fixed_response_sizes(code: ResponseCode, size: int) -> None:
    assert S.responses[code].sizeof() == size


def test_header_sizes_and_largest_content() -> None:
    assert S.request_header_size == 23
    assert S.response_header_size == 7
    assert S.send_file_prefix_size == 259
    assert S.max_content_size == 4294967024  # spec 10: (2**32 - 1 - 259) rounded down to 16
    assert S.request_size_rule(RequestCode.SEND_FILE).maximum == 259 + 4294967024


def malformed(data: bytes) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as info:
        S.parse_request(data)
    return info.value


def patched(data: bytes, offset: int, replacement: bytes) -> bytes:
    return data[:offset] + replacement + data[offset + len(replacement) :]


@pytest.mark.parametrize(
    ("data", "kind", "field", "offset"),
    [
        (REGISTER_ALICE[:22], ErrorKind.TRUNCATED, "header", 22),
        (REGISTER_ALICE[:100], ErrorKind.TRUNCATED, "payload", 100),
        (REGISTER_ALICE + b"\x00", ErrorKind.TRAILING_BYTES, "payload", 278),
        (patched(REGISTER_ALICE, 16, b"\x02"), ErrorKind.UNSUPPORTED_VERSION, "version", 16),
        (patched(REGISTER_ALICE, 17, bytes.fromhex("5304")), ErrorKind.UNKNOWN_CODE, "code", 17),
        (
            patched(REGISTER_ALICE, 19, bytes.fromhex("fe000000")),
            ErrorKind.PAYLOAD_SIZE_MISMATCH,
            "payload_size",
            19,
        ),
        (patched(REGISTER_ALICE, 19, bytes(4)), ErrorKind.PAYLOAD_SIZE_MISMATCH, "payload_size", 19),
        (patched(REGISTER_ALICE, 23, b"x" * 255), ErrorKind.MISSING_NUL, "name", 23 + 254),
        (patched(REGISTER_ALICE, 23 + 200, b"\x01"), ErrorKind.NONZERO_PADDING, "name", 223),
        (patched(REGISTER_ALICE, 23, b"\x00"), ErrorKind.NONZERO_PADDING, "name", 24),
        (patched(REGISTER_ALICE, 23, b"\x00" * 5), ErrorKind.INVALID_NAME, "name", 23),
        (patched(REGISTER_ALICE, 25, b"\x07"), ErrorKind.INVALID_NAME, "name", 25),
        (patched(REGISTER_ALICE, 25, b"\xc3"), ErrorKind.INVALID_NAME, "name", 25),
    ],
)
def test_strict_request_parsing(data: bytes, kind: ErrorKind, field: str, offset: int) -> None:
    error = malformed(data)
    assert (error.kind, error.field, error.offset) == (kind, field, offset)
    assert field in str(error) and str(offset) in str(error)


def crc_ok(file_name: bytes) -> bytes:
    return CLIENT_ID + bytes.fromhex("035004ff000000") + name_field(file_name)


@pytest.mark.parametrize(
    ("file_name", "offset"),
    [
        (b"../etc/passwd", 23 + 2),
        (b"/abs", 23),
        (b"a\\b", 24),
        (b"..", 23),
        (b".", 23),
        (b"C:x", 24),
        (b" lead", 23),
        (b"trail ", 28),
    ],
)
def test_unsafe_file_names(file_name: bytes, offset: int) -> None:
    error = malformed(crc_ok(file_name))
    assert (error.kind, error.field, error.offset) == (ErrorKind.INVALID_FILE_NAME, "file_name", offset)


def test_file_name_grammar_accepts_plain_names() -> None:
    for name in (b"a", b"report 2024.pdf", b"..hidden", b"x" * 254, b"-dash"):
        assert S.parse_request(crc_ok(name))[1]["file_name"] == name.decode()


@pytest.mark.parametrize(
    ("content_size", "payload_size", "kind", "field"),
    [
        (0, 259, ErrorKind.PAYLOAD_SIZE_MISMATCH, "payload_size"),  # below the minimum of 275
        (17, 259 + 17, ErrorKind.PAYLOAD_SIZE_MISMATCH, "payload_size"),  # not 259 + 16k (spec 3.6 step 4)
        (17, 259 + 32, ErrorKind.BAD_CONTENT_SIZE, "content_size"),
        (0, 259 + 32, ErrorKind.BAD_CONTENT_SIZE, "content_size"),
        (32, 259 + 16, ErrorKind.PAYLOAD_SIZE_MISMATCH, "payload_size"),
        (16, 0xFFFFFFFF, ErrorKind.PAYLOAD_SIZE_MISMATCH, "payload_size"),  # not 259 + 16k
    ],
)
def test_send_file_sizes(content_size: int, payload_size: int, kind: ErrorKind, field: str) -> None:
    header = CLIENT_ID + bytes([3]) + (1103).to_bytes(2, "little") + payload_size.to_bytes(4, "little")
    prefix = content_size.to_bytes(4, "little") + name_field(b"f")
    data = header + prefix + bytes(min(payload_size, 4096) - 259)
    error = malformed(data)
    assert (error.kind, error.field) == (kind, field)


def test_largest_send_file_header_is_accepted() -> None:
    # spec 10: the largest content_size is 4294967024, so payload_size 4294967283 (u32 max is 4294967295)
    header = CLIENT_ID + bytes.fromhex("034f04") + (259 + 4294967024).to_bytes(4, "little")
    assert S.parse_request_header(header).payload_size == 4294967283


def test_public_key_field_padding() -> None:
    der = bytes.fromhex("3003020101")  # a tiny DER SEQUENCE, 5 bytes
    payload = name_field(b"bob") + der + bytes(155)
    data = CLIENT_ID + bytes.fromhex("034d049f010000") + payload
    _, fields = S.parse_request(data)
    assert fields == {"name": "bob", "public_key": der}
    assert S.build_request(RequestCode.SEND_PUBLIC_KEY, CLIENT_ID, fields) == data
    error = malformed(patched(data, 23 + 255 + 10, b"\x01"))
    assert (error.kind, error.field, error.offset) == (ErrorKind.NONZERO_PADDING, "public_key", 23 + 265)
    error = malformed(patched(data, 23 + 255, b"\x04"))
    assert (error.kind, error.field) == (ErrorKind.BAD_PUBLIC_KEY, "public_key")
    long_der = bytes.fromhex("3081a0") + bytes(157)  # says 163 bytes in all
    error = malformed(patched(data, 23 + 255, long_der))
    assert error.kind is ErrorKind.BAD_PUBLIC_KEY


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (bytes.fromhex("0335080100000000"), ErrorKind.PAYLOAD_SIZE_MISMATCH),  # 2101 with payload
        (bytes.fromhex("03360810000000") + CLIENT_ID, ErrorKind.PAYLOAD_SIZE_MISMATCH),  # 2102, no key
        (bytes.fromhex("02340810000000") + CLIENT_ID, ErrorKind.UNSUPPORTED_VERSION),
        (bytes.fromhex("033c0800000000"), ErrorKind.UNKNOWN_CODE),  # 2108
        (bytes.fromhex("03340810000000") + CLIENT_ID[:15], ErrorKind.TRUNCATED),
        (bytes.fromhex("033308"), ErrorKind.TRUNCATED),
    ],
)
def test_strict_response_parsing(data: bytes, kind: ErrorKind) -> None:
    with pytest.raises(MalformedMessage) as info:
        S.parse_response(data)
    assert info.value.kind is kind


@pytest.mark.parametrize("name", ["", "x" * 255, "caf\u00e9", "tab\there"])
def test_build_refuses_invalid_names(name: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        S.build_request(RequestCode.REGISTER, CLIENT_ID, {"name": name})
    assert info.value.kind is ErrorKind.INVALID_NAME


def test_raw_field_escape_hatch_for_test_tools() -> None:
    raw = b"y" * 255
    data = S.build_request(RequestCode.REGISTER, CLIENT_ID, {"name": raw})
    assert data[23:] == raw
    assert malformed(data).kind is ErrorKind.MISSING_NUL


names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=254)
file_names = names.filter(lambda n: not set(n) & set("/\\:") and n not in (".", ".."))
ids = st.binary(min_size=16, max_size=16)


@given(ids, file_names, st.integers(1, 8).map(lambda blocks: blocks * 16))
def test_round_trip_send_file(client_id: bytes, file_name: str, size: int) -> None:
    fields = {"content_size": size, "file_name": file_name, "content": bytes(size)}
    header, parsed = S.parse_request(S.build_request(RequestCode.SEND_FILE, client_id, fields))
    assert parsed == fields and header.payload_size == 259 + size


@given(st.binary(max_size=400))
def test_parse_request_raises_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        S.parse_request(data)


@given(st.binary(max_size=300))
def test_parse_response_raises_only_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        S.parse_response(data)


def der_sequences(max_size: int = 160) -> st.SearchStrategy[bytes]:
    """DER SEQUENCE headers with arbitrary bodies, short and long length forms."""

    def encode(body: bytes) -> bytes:
        length = len(body)
        prefix = bytes([length]) if length < 0x80 else bytes([0x81, length])
        return b"\x30" + prefix + body

    return st.binary(max_size=max_size - 3).map(encode)


FIELD_STRATEGIES: dict[str, st.SearchStrategy[object]] = {
    "client_id": ids,
    "name": names,
    "file_name": file_names,
    "public_key": der_sequences(),
    "content_size": st.integers(1, 4294967024 // 16).map(lambda blocks: blocks * 16),
    "cksum": st.integers(0, 2**32 - 1),
    "encrypted_aes_key": st.binary(min_size=1, max_size=512),
}


def event_strategy(cls: type) -> st.SearchStrategy[object]:
    # fields with a default belong to other dialects (SendFile.orig_file_size: 2024 only)
    fields = [field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING]
    return st.fixed_dictionaries({name: FIELD_STRATEGIES[name] for name in fields}).map(lambda kw: cls(**kw))


@settings(max_examples=60)
@given(st.sampled_from(sorted(REQUEST_EVENTS.items())).flatmap(lambda item: event_strategy(item[1])))
def test_every_request_round_trips(event: Request) -> None:
    fields = event_fields(event)
    if isinstance(event, SendFile):
        data = S.build_send_file_start(event.client_id, fields)  # content is streamed: not compared
        header = S.parse_request_header(data[:23])
        parsed = S.parse_send_file_prefix(data[23:], header.payload_size, 23)
    else:
        data = S.build_request(event.code, event.client_id, fields)
        assert len(data) == 23 + S.request_size_rule(event.code).minimum
        header, parsed = S.parse_request(data)
    assert (header.code, header.client_id) == (event.code, event.client_id)
    assert REQUEST_EVENTS[header.code](client_id=header.client_id, **parsed) == event


@settings(max_examples=60)
@given(st.sampled_from(sorted(RESPONSE_EVENTS.items())).flatmap(lambda item: event_strategy(item[1])))
def test_every_response_round_trips(event: Response) -> None:
    data = S.build_response(event.code, event_fields(event))
    header, parsed = S.parse_response(data)
    assert header.payload_size == len(data) - 7
    assert RESPONSE_EVENTS[header.code](**parsed) == event


# -- field positions derived from the declarations -------------------------------------------


@pytest.mark.parametrize(
    ("code", "field", "offset"),
    [  # spec 3.2, 4 and 5, counted by hand
        (RequestCode.REGISTER, "client_id", 0),
        (RequestCode.REGISTER, "version", 16),
        (RequestCode.REGISTER, "code", 17),
        (RequestCode.REGISTER, "payload_size", 19),
        (RequestCode.REGISTER, "name", 23),
        (RequestCode.SEND_PUBLIC_KEY, "public_key", 278),
        (RequestCode.SEND_FILE, "content_size", 23),
        (RequestCode.SEND_FILE, "file_name", 27),
        (RequestCode.SEND_FILE, "content", 282),
        (RequestCode.CRC_GIVE_UP, "file_name", 23),
        (ResponseCode.REGISTERED, "version", 0),
        (ResponseCode.REGISTERED, "code", 1),
        (ResponseCode.REGISTERED, "payload_size", 3),
        (ResponseCode.AES_KEY, "client_id", 7),
        (ResponseCode.AES_KEY, "encrypted_aes_key", 23),
        (ResponseCode.FILE_RECEIVED, "content_size", 23),
        (ResponseCode.FILE_RECEIVED, "file_name", 27),
        (ResponseCode.FILE_RECEIVED, "cksum", 282),
    ],
)
def test_offsets_come_from_the_declarations(
    code: RequestCode | ResponseCode, field: str, offset: int
) -> None:
    assert S.offset(code, field) == offset


def test_offset_of_a_missing_field_names_it() -> None:
    with pytest.raises(KeyError, match="cksum"):
        S.offset(RequestCode.REGISTER, "cksum")


def test_build_errors_name_the_field() -> None:
    with pytest.raises(LocalProtocolError) as info:
        S.build_response(
            ResponseCode.FILE_RECEIVED,
            {"client_id": bytes(16), "content_size": -1, "file_name": "a", "cksum": 0},
        )
    assert info.value.field == "content_size" and info.value.kind is ErrorKind.INVALID_FIELD
    with pytest.raises(LocalProtocolError) as info:
        S.build_request(RequestCode.REGISTER, bytes(16), {})
    assert info.value.field == "name"
