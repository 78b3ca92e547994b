"""The public API for writing conformance cases.

A case is a test function decorated with `case`: a stable id that begins with the spec
section it tests (``4.4-file-crc-block-boundary``), a level (MUST, SHOULD, INFO) and the
requirement quoted from spec/protocol.md::

    from conformance.case import MUST, case

    @case("4.1-register-new", level=MUST, requirement="... answer 2100 REGISTERED carrying the id.")
    def test_register_new(connect: Connector) -> None:
        wire = connect()
        wire.request(Register(bytes(16), unique_name()), Registered)

The plugin collects a decorated function under its case id (node id
``conformance/test_x.py::4.1-register-new``), marks it ``conformance``, its level
(``must``/``should``/``info``) and its section (``section_4``) once cases are collected, and
runs it with the
fixtures ``target`` (host, port), ``data_dir`` (Path or None), ``connect`` (opens a `Wire`
bound to the running case) and ``probe`` (a fresh client registers: the server still serves).

A failure is raised with `CaseContext.fail` or `Wire.fail`: the message quotes the
requirement, says what was expected and what was seen, and shows every conversation of
the case so far, decoded, with the raw bytes in hex.

A family of cases made from data (one per recorded session) is one test function whose
module parametrises it in ``pytest_generate_tests`` with a `CaseInfo` per case (made with
`declare`); the plugin reads each item's case from its parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from backupproto.address import Address, AddressError, parse_address
from backupproto.dialect import DIALECT_2023A, DIALECTS, Dialect

from .wire import Closed, Received, Wire

__all__ = [
    "CASES",
    "INFO",
    "MUST",
    "SHOULD",
    "CaseContext",
    "CaseInfo",
    "Closed",
    "Connector",
    "Level",
    "Received",
    "Target",
    "Wire",
    "case",
    "case_of",
    "declare",
    "hex_preview",
    "parse_target",
]


class Level(StrEnum):
    """Conformance level of a case (spec section 16)."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    INFO = "INFO"


MUST, SHOULD, INFO = Level.MUST, Level.SHOULD, Level.INFO

_ID_PATTERN = re.compile(r"^(\d+)(\.\d+)*-[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class CaseInfo:
    """What the suite knows about one case."""

    id: str
    level: Level
    requirement: str
    dialects: tuple[str, ...] = ()
    """The dialects the case applies to (empty: every dialect); it is deselected in the others."""

    def applies_to(self, dialect: Dialect) -> bool:
        """True when the case is part of a run in `dialect`."""
        return not self.dialects or dialect.name in self.dialects

    @property
    def section(self) -> str:
        """The spec section the id begins with: ``4.4`` for ``4.4-file-crc-block-boundary``."""
        return self.id.split("-", 1)[0]

    @property
    def top_section(self) -> str:
        """The top-level section number: ``4`` for ``4.4-...``."""
        return self.section.split(".", 1)[0]


CASES: dict[str, CaseInfo] = {}
"""Every case id defined so far (filled as the case modules are imported)."""

_F = TypeVar("_F", bound=Callable[..., Any])
CASE_ATTRIBUTE = "__conformance_case__"


def declare(
    case_id: str, *, level: Level, requirement: str, dialects: Iterable[str] | Callable[[Dialect], bool] = ()
) -> CaseInfo:
    """Register the case `case_id` (ids are unique and stable) and return its `CaseInfo`.

    `dialects`: the names of the dialects the case applies to, or a test on a dialect
    (``lambda d: d.has_reconnect``); by default every dialect."""
    if not _ID_PATTERN.match(case_id):
        raise ValueError(f"case id {case_id!r} must look like '4.4-lower-case-words'")
    if not requirement.strip():
        raise ValueError(f"case {case_id}: the requirement text is empty")
    names = tuple(d.name for d in DIALECTS.values() if dialects(d)) if callable(dialects) else tuple(dialects)
    unknown = set(names) - set(DIALECTS)
    if unknown:
        raise ValueError(f"case {case_id}: unknown dialects {sorted(unknown)}")
    info = CaseInfo(case_id, Level(level), " ".join(requirement.split()), names)
    known = CASES.get(case_id)
    if known is not None and known != info:
        raise ValueError(f"case id {case_id!r} is declared twice")
    CASES[case_id] = info
    return info


def case(
    case_id: str, *, level: Level, requirement: str, dialects: Iterable[str] | Callable[[Dialect], bool] = ()
) -> Callable[[_F], _F]:
    """Declare a test function as the conformance case `case_id` (in `dialects`, default every one)."""
    info = declare(case_id, level=level, requirement=requirement, dialects=dialects)

    def decorate(function: _F) -> _F:
        setattr(function, CASE_ATTRIBUTE, info)
        return function

    return decorate


def case_of(obj: object) -> CaseInfo | None:
    """The `CaseInfo` of a pytest item (from its parameters, else its function) or of a
    decorated function; None for anything else."""
    callspec = getattr(obj, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            if isinstance(value, CaseInfo):
                return value
    function = getattr(obj, "function", obj)
    info = getattr(function, CASE_ATTRIBUTE, None)
    return info if isinstance(info, CaseInfo) else None


Target = Address
"""Where the server under test listens."""


def parse_target(text: str) -> Target:
    """``host:port`` to a `Target` (ValueError with the expected form otherwise)."""
    try:
        return parse_address(text)
    except AddressError as error:
        raise ValueError(str(error)) from None


@dataclass
class CaseContext:
    """One running case: its metadata, the target, the socket timeout, the wires it opened."""

    info: CaseInfo | None
    target: Target
    timeout_s: float
    data_dir: Path | None = None
    wires: list[Wire] = field(default_factory=list)
    dialect: Dialect = DIALECT_2023A
    """The run's dialect (--bp-dialect, or the one the profiling stage detected): codes, layouts, key size."""

    def connect(self, label: str | None = None) -> Wire:
        """Open a new connection to the target, recorded for failure messages."""
        wire = Wire(self, label or f"connection {len(self.wires) + 1}")
        self.wires.append(wire)
        return wire

    def fail(self, expected: str, actual: str, *, hint: str = "") -> NoReturn:
        """Fail the case: requirement, expected, actual, then every conversation so far."""
        raise pytest.fail.Exception(self.failure_text(expected, actual, hint=hint), pytrace=False) from None

    def failure_text(self, expected: str, actual: str, *, hint: str = "", received: bytes = b"") -> str:
        """The text of a failure (see `fail`)."""
        lines = []
        if self.info is not None:
            lines.append(f"[{self.info.id}] {self.info.level}: {self.info.requirement}")
        lines.append(f"expected: {expected}")
        lines.append(f"actual:   {actual}")
        if hint:
            lines.append(f"diagnosis: {hint}")
        if received:
            lines.append(f"received bytes: {_hex_preview(received)}")
        for wire in self.wires:
            lines.extend(wire.transcript_lines())
        return "\n".join(lines)

    def close(self) -> None:
        """Close every wire of the case."""
        for wire in self.wires:
            wire.close()


Connector = Callable[..., "Wire"]
"""The type of the ``connect`` fixture: ``connect(label=None) -> Wire``."""


def _hex_preview(data: bytes, limit: int = 96) -> str:
    shown = data[:limit].hex(" ")
    more = f" ... ({len(data)} bytes in all)" if len(data) > limit else f" ({len(data)} bytes)"
    return shown + more


def hex_preview(data: bytes, limit: int = 96) -> str:
    """Hex of the first `limit` bytes, with the total length."""
    return _hex_preview(data, limit)

