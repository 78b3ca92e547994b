"""One place for each fact: the spec's tables (spec/protocol.md) and the schemas, events and
transition table agree on codes, names, field layouts, sizes and states."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from backupproto import client_timing
from backupproto.dialect import DIALECTS, Dialect, RequestCode, ResponseCode
from backupproto.engine import event_fields
from backupproto.events import REQUEST_EVENTS, RESPONSE_EVENTS
from backupproto.schemas import V3_SCHEMAS as S
from backupproto.schemas import Schemas
from backupproto.states import AFTER_RESPONSE, REQUESTS_ALLOWED, WITHOUT_RESPONSE, State

SPEC = (Path(__file__).resolve().parent.parent / "spec" / "protocol.md").read_text(encoding="utf-8")
INT_SIZES = {"u8": 1, "u16": 2, "u32": 4}


def table(header: str, section: str | None = None) -> list[list[str]]:
    """Rows of every Markdown table whose header line is `header` (optionally within a section)."""
    text = SPEC
    if section is not None:
        start = SPEC.index(f"\n### {section} ")
        end = SPEC.index("\n#", start + 1)
        text = SPEC[start:end]
    rows: list[list[str]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != header:
            continue
        for row in lines[index + 2 :]:
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
    assert rows, f"no table {header!r} in spec/protocol.md"
    return rows


def layout(cell: str) -> list[tuple[str, str]]:
    """`name[255], size:u32, rest[*]` -> [(name, '255'), (size, 'u32'), (rest, '*')]."""
    if cell == "—":
        return []
    fields = []
    for token in cell.split(","):
        match = re.fullmatch(r"(\w+)(?:\[(\w+|\*)\]|:(u8|u16|u32))", token.strip())
        assert match, f"bad layout token {token!r}"
        fields.append((match.group(1), match.group(2) or match.group(3)))
    return fields


def schema_layout(schema: object) -> list[tuple[str, str]]:
    fields = []
    for sub in schema.subcons:  # type: ignore[attr-defined]
        inner = getattr(sub, "subcon", sub)
        type_name = type(inner).__name__
        if type_name == "FormatField":
            fields.append((sub.name, f"u{inner.sizeof() * 8}"))
        elif type_name == "GreedyBytes":
            fields.append((sub.name, "*"))
        else:
            try:
                fields.append((sub.name, str(sub.sizeof())))
            except Exception:
                fields.append((sub.name, "content_size"))
    return fields


@pytest.mark.parametrize(
    ("section", "schema"),
    [("3.1", S.request_header), ("3.2", S.response_header)],
    ids=["request", "response"],
)
def test_header_tables(section: str, schema: object) -> None:
    rows = table("| field | offset | size | type |", section)
    offset = 0
    expected = []
    for name, kind in schema_layout(schema):
        size = INT_SIZES.get(kind) or int(kind)
        expected.append([name, str(offset), str(size), kind if kind in INT_SIZES else "bytes"])
        offset += size
    assert rows == expected


@pytest.mark.parametrize("kind", ["request", "response"])
def test_message_catalogues(kind: str) -> None:
    rows = table("| code | name | payload | payload_size |")
    enum = RequestCode if kind == "request" else ResponseCode
    schemas = S.requests if kind == "request" else S.responses
    mine = {int(row[0]): row for row in rows if int(row[0]) in {int(code) for code in enum}}
    assert sorted(mine) == sorted(int(code) for code in enum)
    for code in enum:
        _, name, payload, size = mine[int(code)]
        assert name == code.name
        assert layout(payload) == schema_layout(schemas[code]), code.name
        rule = S.request_size_rule(code) if kind == "request" else S.response_size_rule(code)  # type: ignore[arg-type]
        if rule.fixed:
            assert size == str(rule.minimum)
        else:
            assert re.fullmatch(r"\d+ \+ \w+", size), size
            assert int(size.split()[0]) in (S.send_file_prefix_size, 16)


ENGINE_OWNED = {"content", "packet_number", "total_packets", "payload_client_id"}
"""Payload fields the engines fill and check themselves: they are not event fields."""


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_request_events_carry_each_dialects_schema_fields(dialect: Dialect) -> None:
    schemas = Schemas(dialect)
    for code, schema in schemas.requests.items():
        cls = REQUEST_EVENTS[code]
        schema_names = [name for name, _ in schema_layout(schema) if name not in ENGINE_OWNED]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        optional = [f.name for f in dataclasses.fields(cls) if f.default is None]
        assert [name for name in required if name != "client_id"] == [
            name for name in schema_names if name not in optional
        ], code.name
        assert set(schema_names) <= set(required) | set(optional), code.name


def test_events_carry_exactly_the_schema_fields() -> None:
    for code, cls in REQUEST_EVENTS.items():
        names = [field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING]
        schema_names = [name for name, _ in schema_layout(S.requests[code]) if name != "content"]
        assert names == ["client_id", *schema_names], code.name
    for code, cls in RESPONSE_EVENTS.items():
        assert [field.name for field in dataclasses.fields(cls)] == [
            n for n, _ in schema_layout(S.responses[code])
        ]
    assert event_fields(REQUEST_EVENTS[RequestCode.REGISTER](bytes(16), "a")) == {"name": "a"}


def code_of(cell: str) -> int:
    return int(cell.split()[0])


def test_request_transition_table() -> None:
    rows = table("| state | request | next state |")
    spec = {(State(row[0]), code_of(row[1])): row[2] for row in rows}
    code_rows = {
        (state, int(code)): (
            str(WITHOUT_RESPONSE[code]) if code in WITHOUT_RESPONSE else f"awaiting {int(code)} {code.name}"
        )
        for state, codes in REQUESTS_ALLOWED.items()
        for code in codes
    }
    assert spec == code_rows


def test_response_transition_table() -> None:
    rows = table("| request | response | next state |")
    spec = {(code_of(row[0]), code_of(row[1])): State(row[2]) for row in rows}
    mine = {(int(req), int(resp)): state for (req, resp), state in AFTER_RESPONSE.items()}
    mine |= {(int(req), int(ResponseCode.SERVER_ERROR)): State.CLOSED for req in RequestCode}
    assert spec == mine


def test_client_timeout_table() -> None:
    """Spec 2.4's client timeouts are backupproto.client_timing's figures."""
    rows = {row[0]: row[1] for row in table("| client timeout | RECOMMENDED | runs from | then |", "2.4")}
    assert rows["connect"] == f"{client_timing.CONNECT_TIMEOUT_S:g} s"
    assert rows["response"] == f"{client_timing.RESPONSE_TIMEOUT_S:g} s"
    mib = client_timing.FLUSH_BYTES_PER_S >> 20
    assert rows["response to a 1103"] == (
        f"{client_timing.RESPONSE_TIMEOUT_S:g} s + ceil(`content_size` / {mib} MiB) s "
        f"({mib} MiB = {client_timing.FLUSH_BYTES_PER_S} bytes)"
    )
    largest = client_timing.response_timeout(S.max_content_size)
    assert f"(`content_size` {S.max_content_size};" in SPEC
    assert f"= {largest:g} s." in SPEC
