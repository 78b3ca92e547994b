"""``--bp-dialect auto`` in client mode: which dialect the client speaks, from its first requests
(spec dialects 19.1). The client is run against a scripted server of each dialect its first
request code allows, in 19.1's order (2023A before 2022C, 2023C before 2024A: a 1025 client is
answered as 2023C first and as 2024A on its next run if it treats 2100 as an error); the dialect in
which it backs a file up cleanly is its dialect."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from backupproto import detect
from backupproto.dialect import (
    DIALECT_2022C,
    DIALECT_2023A,
    DIALECT_2023C,
    DIALECT_2024A,
    Dialect,
    RequestCode,
)

from .context import ClientCase, ClientMode, Outcome
from .server import Script

PROBE_FILES = {"probe.txt": b"which dialect does this client speak?\n"}
TRY_ORDER = (DIALECT_2023A, DIALECT_2022C, DIALECT_2023C, DIALECT_2024A)
"""Where one first request code fits two dialects, the one tried first (19.1); others follow."""


@dataclass
class Detection:
    """What `detect_client_dialect` found: the dialect (None: none), one line, the evidence."""

    dialect: Dialect | None
    summary: str
    evidence: list[str] = field(default_factory=list)


def _clean(outcome: Outcome) -> bool:
    """The run reached a CRC_OK on a connection the engine never refused."""
    return any(
        connection.error is None and RequestCode.CRC_OK in [request.code for request in connection.requests]
        for connection in outcome.connections
    )


def _reach(outcome: Outcome) -> int:
    return len(outcome.requests())


def detect_client_dialect(mode: ClientMode, announce: Callable[[str], None] = print) -> Detection:
    """Run the client (as a new client, one small file) until its dialect is known."""
    with tempfile.TemporaryDirectory(prefix="bp-client-dialect-") as folder:
        probe = ClientCase(None, replace(mode, dialect=DIALECT_2023A), Path(folder), announce)
        first = probe.run(Script(), PROBE_FILES)
        evidence = first.evidence()
        codes = [code for connection in first.connections for code in connection.wire_codes]
        if not codes:
            return Detection(None, "the client sent no request (see the evidence)", evidence)
        code = codes[0]
        candidates = detect.dialects_with_code(code, requests=True)
        if not candidates:
            return Detection(
                None,
                f"its first request code {code} belongs to no dialect (2022C, 2023A, 2023C, 2024A, 2024C)",
                evidence,
            )
        ordered = sorted(candidates, key=lambda d: TRY_ORDER.index(d) if d in TRY_ORDER else len(TRY_ORDER))
        tried: list[tuple[Dialect, Outcome]] = []
        for dialect in ordered:
            outcome = (
                first
                if dialect is DIALECT_2023A
                else ClientCase(
                    None, replace(mode, dialect=dialect), Path(folder) / dialect.name, announce
                ).run(Script(), PROBE_FILES)
            )
            tried.append((dialect, outcome))
            if _clean(outcome):
                how = (
                    "its first request"
                    if len(candidates) == 1
                    else "its first request and its first SEND_FILE"
                )
                shared = (
                    "" if len(candidates) == 1 else f" ({code} is {'/'.join(d.name for d in candidates)})"
                )
                return Detection(dialect, f"the client speaks {dialect.name}, detected from {how}{shared}")
        dialect, outcome = max(tried, key=lambda pair: _reach(pair[1]))
        names = "/".join(d.name for d in candidates)
        return Detection(
            dialect,
            f"the client's first request {code} is {names}; no run backed a file up cleanly, the cases "
            f"run in {dialect.name} (the dialect it got furthest in)",
            outcome.evidence(),
        )
