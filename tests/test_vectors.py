"""Every case of spec/vectors/*.json: hand-written bytes with the outcome each must have (spec 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backupproto import crypto
from backupproto.cksum import Cksum, cksum
from backupproto.dialect import RequestCode, ResponseCode
from backupproto.engine import ServerConnection
from backupproto.errors import BackupProtoError, MalformedMessage, RemoteProtocolError
from backupproto.events import (
    NEED_DATA,
    PAUSED,
    REQUEST_EVENTS,
    FileChunk,
    FileEnd,
    ReconnectApproved,
    SendFile,
)
from backupproto.schemas import V3_SCHEMAS as S

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    assert data["format"] == 1 and data["protocol_version"] == 3
    return data


def cases(name: str) -> list[Any]:
    return [pytest.param(case, id=case["id"]) for case in load(name)["cases"]]


def expand(notation: str) -> bytes:
    """The token notation of spec 14: plain hex, or `HH*N` for byte HH repeated N times."""
    out = bytearray()
    for token in notation.split():
        if "*" in token:
            byte, count = token.split("*")
            out += bytes.fromhex(byte) * int(count)
        else:
            out += bytes.fromhex(token)
    return bytes(out)


def plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else int(value) if isinstance(value, int) else value


def check_failure(error: BackupProtoError, case: dict[str, Any]) -> None:
    assert error.kind.value == case["expect"], str(error)
    if "field" in case and case.get("type") != "public-key-field":
        assert error.field == case["field"], str(error)
    if "offset" in case and case.get("type") != "public-key-field":
        assert error.offset == case["offset"], str(error)


def check_decoded(header: Any, fields: dict[str, Any], case: dict[str, Any]) -> None:
    decoded = {name: plain(getattr(header, name)) for name in vars(header)}
    decoded |= {name: plain(value) for name, value in fields.items()}
    assert decoded == case["decoded"]


@pytest.mark.parametrize("case", cases("requests"))
def test_request_vector(case: dict[str, Any]) -> None:
    data = expand(case["hex"])
    limit = case.get("parameters", {}).get("max_content_size")
    if limit is not None:
        server = ServerConnection(max_content_size=limit)
        server.receive_data(data)
        with pytest.raises(RemoteProtocolError) as engine_info:
            server.next_event()
        check_failure(engine_info.value, case)
        return
    if case["expect"] != "valid":
        with pytest.raises(MalformedMessage) as info:
            S.parse_request(data)
        check_failure(info.value, case)
        return
    header, fields = S.parse_request(data)
    check_decoded(header, fields, case)
    assert S.build_request(header.code, header.client_id, fields) == data


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(
    "case",
    [
        param
        for param in cases("requests")
        if param.values[0]["expect"] == "valid" and param.values[0]["decoded"]["code"] in (1100, 1101, 1102)
    ],
)
def test_request_vector_through_the_engine(case: dict[str, Any], byte_by_byte: bool) -> None:
    data = expand(case["hex"])
    server = ServerConnection()
    pieces = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    events = []
    for piece in pieces:
        server.receive_data(piece)
        while (event := server.next_event()) not in (NEED_DATA, PAUSED):
            events.append(event)
    header, fields = S.parse_request(data)
    assert events == [REQUEST_EVENTS[header.code](client_id=header.client_id, **fields)]


def test_send_file_vectors_stream_through_the_engine() -> None:
    """Valid 1103 vectors, fed one byte at a time to a server that has a key on this connection."""
    streamed = 0
    for param in cases("requests"):
        case = param.values[0]
        if case["expect"] != "valid" or case["decoded"]["code"] != 1103:
            continue
        data = expand(case["hex"])
        header, fields = S.parse_request(data)
        server = ServerConnection()
        reconnect = S.build_request(RequestCode.RECONNECT, header.client_id, {"name": "vectors"})
        server.receive_data(reconnect)
        server.next_event()
        server.send(ReconnectApproved(header.client_id, b"k" * 128))
        events = []
        for index in range(len(data)):
            server.receive_data(data[index : index + 1])
            while (event := server.next_event()) not in (NEED_DATA, PAUSED):
                events.append(event)
        assert events[0] == SendFile(header.client_id, fields["content_size"], fields["file_name"])
        assert b"".join(e.data for e in events if isinstance(e, FileChunk)) == fields["content"]
        assert isinstance(events[-1], FileEnd)
        streamed += 1
    assert streamed >= 2


@pytest.mark.parametrize("case", cases("responses"))
def test_response_vector(case: dict[str, Any]) -> None:
    data = expand(case["hex"])
    if case["expect"] != "valid":
        with pytest.raises(MalformedMessage) as info:
            S.parse_response(data)
        check_failure(info.value, case)
        return
    header, fields = S.parse_response(data)
    check_decoded(header, fields, case)
    assert S.build_response(header.code, fields) == data


def test_vectors_cover_every_message_and_failure_kind() -> None:
    requests = load("requests")["cases"]
    responses = load("responses")["cases"]
    valid_requests = {case["decoded"]["code"] for case in requests if case["expect"] == "valid"}
    valid_responses = {case["decoded"]["code"] for case in responses if case["expect"] == "valid"}
    assert valid_requests == {int(code) for code in RequestCode}
    assert valid_responses == {int(code) for code in ResponseCode}
    kinds = {case["expect"] for case in requests + responses + load("crypto")["cases"]}
    assert kinds >= {
        "truncated", "trailing_bytes", "unsupported_version", "unknown_code", "payload_size_mismatch",
        "payload_too_large", "missing_nul", "nonzero_padding", "invalid_name", "invalid_file_name",
        "bad_content_size", "bad_public_key", "bad_ciphertext", "bad_padding",
    }  # fmt: skip


def cksum_input(case: dict[str, Any]) -> bytes:
    if "pattern" in case:
        pattern = bytes.fromhex(case["pattern"])
        return (pattern * (case["length"] // len(pattern) + 1))[: case["length"]]
    return expand(case["hex"])


@pytest.mark.parametrize("case", cases("cksum"))
def test_cksum_vector(case: dict[str, Any]) -> None:
    data = cksum_input(case)
    assert len(data) == case["length"]
    assert cksum(data) == case["cksum"]
    running = Cksum()
    for start in range(0, len(data), 65521):
        running.update(data[start : start + 65521])
    assert (running.value, running.length) == (case["cksum"], case["length"])


CRYPTO = load("crypto")


@pytest.mark.parametrize("case", cases("crypto"))
def test_crypto_vector(case: dict[str, Any]) -> None:
    kind = case["type"]
    if kind == "aes-cbc":
        key, ciphertext = bytes.fromhex(case["key"]), expand(case["ciphertext"])
        decryptor = crypto.CbcDecryptor(key)
        if case["expect"] == "valid":
            plaintext = expand(case["plaintext"])
            encryptor = crypto.CbcEncryptor(key)
            assert encryptor.update(plaintext) + encryptor.finalize() == ciphertext
            assert decryptor.update(ciphertext) + decryptor.finalize() == plaintext
        else:
            with pytest.raises(BackupProtoError) as info:
                decryptor.update(ciphertext)
                decryptor.finalize()
            assert info.value.kind.value == case["expect"]
    elif kind == "public-key-field":
        check_public_key_field(case)
    elif kind == "oaep":
        private_key = crypto.import_private_key(bytes.fromhex(CRYPTO["private_key_pkcs8"]))
        wrapped = expand(case["wrapped"])
        if case["expect"] == "valid":
            assert crypto.unwrap_aes_key(private_key, wrapped) == bytes.fromhex(case["aes_key"])
        else:
            with pytest.raises(BackupProtoError) as info:
                crypto.unwrap_aes_key(private_key, wrapped)
            assert info.value.kind.value == case["expect"]
    else:
        pytest.fail(f"unknown vector type {kind}")


def check_public_key_field(case: dict[str, Any]) -> None:
    field = expand(case["field"])
    assert len(field) == 160
    payload = b"k" + bytes(254) + field  # a 1101 payload: name "k", then the field
    try:
        der = S.parse_payload(S.requests[RequestCode.SEND_PUBLIC_KEY], payload, 0)["public_key"]
        key = crypto.import_public_key(der)
    except BackupProtoError as error:
        assert error.kind.value == case["expect"], str(error)
        if "offset" in case and isinstance(error, MalformedMessage):
            assert error.offset == 255 + case["offset"]
        return
    assert case["expect"] == "valid", f"accepted: {case['comment']}"
    assert der == expand(case["der"])
    assert (key.size_in_bits(), key.e) == (case["bits"], case["exponent"])
