"""Every case of spec/vectors/<DIALECT>/*.json, run against that dialect's schemas and engine.

Runs whatever dialect vector files exist (parametrised by file and case), plus a few
hand-written cases per dialect below, so that the test has teeth before the files land.
The files' formats: requests/responses as spec/vectors/requests.json with a top-level
"dialect"; packets.json: message sequences fed to a keyed server ("at": the index of the
failing message).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_engine import drain
from test_vectors import check_failure, expand, plain

from backupproto.dialect import DIALECTS, Dialect, RequestCode
from backupproto.engine import ServerConnection
from backupproto.errors import MalformedMessage, RemoteProtocolError
from backupproto.events import (
    AesKey,
    Event,
    FileChunk,
    FileEnd,
    ReconnectApproved,
    SendFile,
)
from backupproto.schemas import schemas_for

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"

CID = "3f2a9c1e7b4d4e8a9c610d5e8f7a2b14"
FOX = "666f782e747874 00*248"
# Written by hand from the dialect tables (shared/dialects.md, spec dialects 17-18).
BUILT_IN: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("2022C", "requests"): [
        {
            "id": "2022C-crc-ok",
            "hex": f"{CID} 03 5004 0f010000 {CID} {FOX}",
            "expect": "valid",
            "decoded": {
                "client_id": CID,
                "version": 3,
                "code": 1104,
                "payload_size": 271,
                "file_name": "fox.txt",
            },
        },
        {
            "id": "2022C-reconnect-unknown",
            "hex": f"{CID} 03 4e04 ff000000 61 00*254",
            "expect": "unknown_code",
            "field": "code",
            "offset": 17,
        },
        {
            "id": "2022C-client-id-mismatch",
            "hex": f"{CID} 03 5204 0f010000 00*16 {FOX}",
            "expect": "client_id_mismatch",
            "field": "client_id",
            "offset": 23,
        },
        {
            "id": "2022C-crc-ok-2023a-size",
            "hex": f"{CID} 03 5004 ff000000 {FOX}",
            "expect": "payload_size_mismatch",
            "field": "payload_size",
            "offset": 19,
        },
    ],
    ("2022C", "responses"): [
        {
            "id": "2022C-ack",
            "hex": f"03 3808 10000000 {CID}",
            "expect": "valid",
            "decoded": {"version": 3, "code": 2104, "payload_size": 16, "client_id": CID},
        },
        {
            "id": "2022C-no-2107",
            "hex": "03 3b08 00000000",
            "expect": "unknown_code",
            "field": "code",
            "offset": 1,
        },
        {
            "id": "2022C-no-2105",
            "hex": f"03 3908 11000000 {CID} 00",
            "expect": "unknown_code",
            "field": "code",
            "offset": 1,
        },
    ],
    ("2023C", "requests"): [
        {
            "id": "2023C-register",
            "hex": f"{CID} 03 0104 ff000000 616c696365 00*250",
            "expect": "valid",
            "decoded": {"client_id": CID, "version": 3, "code": 1025, "payload_size": 255, "name": "alice"},
        },
        {
            "id": "2023C-give-up",
            "hex": f"{CID} 03 0704 ff000000 {FOX}",
            "expect": "valid",
            "decoded": {
                "client_id": CID,
                "version": 3,
                "code": 1031,
                "payload_size": 255,
                "file_name": "fox.txt",
            },
        },
        {
            "id": "2023C-send-file",
            "hex": f"{CID} 03 0404 13010000 10000000 {FOX} 00*16",
            "expect": "valid",
            "decoded": {
                "client_id": CID,
                "version": 3,
                "code": 1028,
                "payload_size": 275,
                "content_size": 16,
                "file_name": "fox.txt",
                "content": "00" * 16,
            },
        },
        {
            "id": "2023C-1100-unknown",
            "hex": f"{CID} 03 4c04 ff000000 61 00*254",
            "expect": "unknown_code",
            "field": "code",
            "offset": 17,
        },
    ],
    ("2023C", "responses"): [
        {
            "id": "2023C-error",
            "hex": "03 3b08 00000000",
            "expect": "valid",
            "decoded": {"version": 3, "code": 2107, "payload_size": 0},
        },
        {
            "id": "2023C-no-1600",
            "hex": f"03 4006 10000000 {CID}",
            "expect": "unknown_code",
            "field": "code",
            "offset": 1,
        },
    ],
    ("2024A", "requests"): [
        {
            "id": "2024A-packet-2-of-2",
            "hex": f"{CID} 03 0404 1b010000 20000000 13000000 0200 0200 {FOX} 11*16",
            "expect": "valid",
            "decoded": {
                "client_id": CID,
                "version": 3,
                "code": 1028,
                "payload_size": 283,
                "content_size": 32,
                "orig_file_size": 19,
                "packet_number": 2,
                "total_packets": 2,
                "file_name": "fox.txt",
                "content": "11" * 16,
            },
        },
        {
            "id": "2024A-packet-0",
            "hex": f"{CID} 03 0404 1b010000 20000000 13000000 0000 0200 {FOX} 11*16",
            "expect": "bad_packet_number",
            "field": "packet_number",
            "offset": 31,
        },
        {
            "id": "2024A-orig-too-big",
            "hex": f"{CID} 03 0404 1b010000 10000000 10000000 0100 0100 {FOX} 11*16",
            "expect": "bad_orig_file_size",
            "field": "orig_file_size",
            "offset": 27,
        },
        {
            "id": "2024A-no-content",
            "hex": f"{CID} 03 0404 0b010000 10000000 01000000 0100 0100 {FOX}",
            "expect": "payload_size_mismatch",
            "field": "payload_size",
            "offset": 19,
        },
    ],
    ("2024A", "responses"): [
        {
            "id": "2024A-file-received",
            "hex": f"03 4306 17010000 {CID} 20000000 {FOX} 78563412",
            "expect": "valid",
            "decoded": {
                "version": 3,
                "code": 1603,
                "payload_size": 279,
                "client_id": CID,
                "content_size": 32,
                "file_name": "fox.txt",
                "cksum": 0x12345678,
            },
        },
        {
            "id": "2024A-no-2100",
            "hex": f"03 3408 10000000 {CID}",
            "expect": "unknown_code",
            "field": "code",
            "offset": 1,
        },
    ],
    ("2024C", "requests"): [
        {
            "id": "2024C-register",
            "hex": f"{CID} 03 3903 ff000000 616c696365 00*250",
            "expect": "valid",
            "decoded": {"client_id": CID, "version": 3, "code": 825, "payload_size": 255, "name": "alice"},
        },
        {
            "id": "2024C-crc-ok",
            "hex": f"{CID} 03 8403 ff000000 {FOX}",
            "expect": "valid",
            "decoded": {
                "client_id": CID,
                "version": 3,
                "code": 900,
                "payload_size": 255,
                "file_name": "fox.txt",
            },
        },
        {
            "id": "2024C-total-0",
            "hex": f"{CID} 03 3c03 1b010000 10000000 01000000 0100 0000 {FOX} 11*16",
            "expect": "bad_total_packets",
            "field": "total_packets",
            "offset": 33,
        },
        {
            "id": "2024C-829-unknown",
            "hex": f"{CID} 03 3d03 ff000000 {FOX}",
            "expect": "unknown_code",
            "field": "code",
            "offset": 17,
        },
    ],
    ("2024C", "responses"): [
        {
            "id": "2024C-ack",
            "hex": f"03 4406 10000000 {CID}",
            "expect": "valid",
            "decoded": {"version": 3, "code": 1604, "payload_size": 16, "client_id": CID},
        },
        {
            "id": "2024C-error",
            "hex": "03 4706 00000000",
            "expect": "valid",
            "decoded": {"version": 3, "code": 1607, "payload_size": 0},
        },
    ],
    ("2024A", "packets"): [
        {
            "id": "2024A-two-packets",
            "messages": [
                f"{CID} 03 0404 0c010000 20000000 13000000 0100 0200 {FOX} 22",
                f"{CID} 03 0404 2a010000 20000000 13000000 0200 0200 {FOX} 33*31",
            ],
            "expect": "valid",
            "file_name": "fox.txt",
            "content": "22" + "33" * 31,
        },
        {
            "id": "2024A-second-packet-numbered-1",
            "messages": [
                f"{CID} 03 0404 0c010000 20000000 13000000 0100 0200 {FOX} 22",
                f"{CID} 03 0404 2a010000 20000000 13000000 0100 0200 {FOX} 33*31",
            ],
            "expect": "packet_duplicate",
            "at": 1,
            "field": "packet_number",
            "offset": 31,
        },
    ],
}


def vector_files() -> list[Path]:
    return sorted(path for path in VECTORS.glob("*/*.json") if path.parent.name in DIALECTS)


def params(kind: str) -> list[Any]:
    """(dialect, case) for every case of every `kind` file, then the built-in cases."""
    out = []
    for path in vector_files():
        if path.stem != kind:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["dialect"] == path.parent.name and data["format"] == 1
        for case in data["cases"]:
            out.append(
                pytest.param(
                    DIALECTS[data["dialect"]], case, id=f"{path.parent.name}/{path.name}:{case['id']}"
                )
            )
    for (name, what), cases in BUILT_IN.items():
        if what == kind:
            out += [pytest.param(DIALECTS[name], case, id=f"built-in:{case['id']}") for case in cases]
    return out


def check_decoded(dialect: Dialect, header: Any, fields: dict[str, Any], case: dict[str, Any]) -> None:
    decoded = {name: plain(getattr(header, name)) for name in vars(header)}
    decoded["code"] = schemas_for(dialect).wire_code(header.code)
    decoded |= {name: plain(value) for name, value in fields.items()}
    assert decoded == case["decoded"]


def keyed_server(dialect: Dialect, client_id: bytes, max_content_size: int | None = None) -> ServerConnection:
    """A server engine of `dialect` with an AES key on this connection (reconnect, or 2022C's key)."""
    server = ServerConnection(dialect, max_content_size=max_content_size)
    schemas = schemas_for(dialect)
    if dialect.has_reconnect:
        server.receive_data(schemas.build_request(RequestCode.RECONNECT, client_id, {"name": "vectors"}))
        server.next_event()
        server.send(ReconnectApproved(client_id, b"k" * 128))
    else:
        der = bytes.fromhex("3003020101")
        server.receive_data(
            schemas.build_request(RequestCode.SEND_PUBLIC_KEY, client_id, {"name": "v", "public_key": der})
        )
        server.next_event()
        server.send(AesKey(client_id, b"k" * 128))
    return server


@pytest.mark.parametrize(("dialect", "case"), params("requests"))
def test_dialect_request_vector(dialect: Dialect, case: dict[str, Any]) -> None:
    schemas = schemas_for(dialect)
    data = expand(case["hex"])
    limit = case.get("parameters", {}).get("max_content_size")
    if limit is not None:
        server = keyed_server(dialect, data[:16], limit)
        server.receive_data(data)
        with pytest.raises(RemoteProtocolError) as engine_info:
            drain(server)
        check_failure(engine_info.value, case)
        return
    if case["expect"] != "valid":
        with pytest.raises(MalformedMessage) as info:
            schemas.parse_request(data)
        check_failure(info.value, case)
        return
    header, fields = schemas.parse_request(data)
    check_decoded(dialect, header, fields, case)
    assert schemas.build_request(header.code, header.client_id, fields) == data


@pytest.mark.parametrize(("dialect", "case"), params("responses"))
def test_dialect_response_vector(dialect: Dialect, case: dict[str, Any]) -> None:
    schemas = schemas_for(dialect)
    data = expand(case["hex"])
    if case["expect"] != "valid":
        with pytest.raises(MalformedMessage) as info:
            schemas.parse_response(data)
        check_failure(info.value, case)
        return
    header, fields = schemas.parse_response(data)
    check_decoded(dialect, header, fields, case)
    assert schemas.build_response(header.code, fields) == data


AFTER_DECRYPTION = {"bad_padding", "bad_orig_file_size"}
"""Checks 9 and 10 of 18.2: made by the receiver after decrypting, not by the engine."""


@pytest.mark.parametrize(("dialect", "case"), params("packets"))
def test_dialect_packet_sequence(dialect: Dialect, case: dict[str, Any]) -> None:
    messages = [expand(message) for message in case["messages"]]
    server = keyed_server(dialect, messages[0][:16])
    events: list[Event] = []
    failing = case.get("at")
    for index, message in enumerate(messages):
        server.receive_data(message)
        if index == failing and case["expect"] not in AFTER_DECRYPTION:
            with pytest.raises(RemoteProtocolError) as info:
                drain(server)
            check_failure(info.value, case)
            return
        try:
            events += drain(server)
        except RemoteProtocolError as error:  # a check the engine can make before decryption
            assert index == failing and case["expect"] in AFTER_DECRYPTION
            check_failure(error, case)
            return
    # valid, or a fault only decryption shows: the engine hands on the whole file, once
    assert case["expect"] == "valid" or case["expect"] in AFTER_DECRYPTION
    files = [event for event in events if isinstance(event, SendFile)]
    assert len(files) == 1 and isinstance(events[-1], FileEnd)
    content = b"".join(event.data for event in events if isinstance(event, FileChunk))
    if case["expect"] == "valid":
        assert files[0].file_name == case["file_name"]
        assert content.hex() == case["content"]
    assert len(content) == files[0].content_size
