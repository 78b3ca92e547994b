"""The ``--bp-expected-failures`` file: known deviations, each a case id and a pattern its failure must match.

Text format, one entry per line, ``#`` starts a comment::

    # our server pads responses to 1024 bytes (ticket 12)
    3-response-exact-length      zero-padded
    4.4-file-crc-block-boundary  equals zlib\\.crc32

The pattern (the rest of the line) is a Python regular expression searched in the failure
message; a plain substring works as long as it has no regex metacharacters. A ``.json`` file
may hold ``{"CASE-ID": "PATTERN", ...}`` instead. A listed case that fails with a message the
pattern does not match stays a failure; a listed case that passes fails the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Expected:
    """One known deviation."""

    case_id: str
    pattern: str

    def matches(self, message: str) -> bool:
        return re.search(self.pattern, message) is not None


@dataclass
class ExpectedFailures:
    """All entries of the file, by case id."""

    source: str | None = None
    entries: dict[str, Expected] = field(default_factory=dict)


def load_expected_failures(path: str) -> ExpectedFailures:
    """Read the file; a malformed line or a bad regex is a usage error naming the line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise pytest.UsageError(f"--bp-expected-failures {path}: {error}") from None
    pairs: list[tuple[int, str, str]] = []
    if file.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise pytest.UsageError(f"--bp-expected-failures {path}: not JSON: {error}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise pytest.UsageError(f'--bp-expected-failures {path}: expected {{"CASE-ID": "PATTERN", ...}}')
        pairs = [(0, key, value) for key, value in data.items()]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            parts = stripped.split(None, 1)
            if len(parts) != 2:
                raise pytest.UsageError(
                    f"--bp-expected-failures {path}, line {number}: "
                    f"expected 'CASE-ID PATTERN', got {stripped!r}"
                )
            pairs.append((number, parts[0], parts[1].strip()))
    result = ExpectedFailures(str(file))
    for number, case_id, pattern in pairs:
        try:
            re.compile(pattern)
        except re.error as error:
            raise pytest.UsageError(
                f"--bp-expected-failures {path}, line {number}: bad pattern {pattern!r}: {error}"
            ) from None
        if case_id in result.entries:
            raise pytest.UsageError(f"--bp-expected-failures {path}: {case_id} is listed twice")
        result.entries[case_id] = Expected(case_id, pattern)
    return result
