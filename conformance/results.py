"""The outcome of every case of a run, and the verdict drawn from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pytest

from .case import CaseInfo

SHOULD_NOTE = "failure, reported as a warning (--strict makes it count)"

OUTCOMES = (
    "passed",
    "failed",
    "error",
    "skipped",
    "warning",
    "info",
    "expected-failure",
    "unexpected-pass",
)
"""warning: a SHOULD case failed; info: an INFO case noted a behaviour; expected-failure: a
case listed in --expected-failures failed as listed; unexpected-pass: a listed case passed."""

FATAL = frozenset({"failed", "error", "unexpected-pass"})


@dataclass
class CaseResult:
    """One case's row in the report."""

    id: str
    level: str
    section: str
    requirement: str
    outcome: str
    message: str
    duration_s: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext


class Results:
    """Case results in run order (one row per collected item, keyed by node id)."""

    def __init__(self) -> None:
        self.rows: dict[str, CaseResult] = {}

    def record(self, info: CaseInfo, report: pytest.TestReport) -> None:
        special = getattr(report, "conformance_outcome", None)
        if special is not None:
            outcome = special
        elif report.passed:
            outcome = "passed"
        elif report.failed:
            outcome = "failed" if report.when == "call" else "error"
        else:
            outcome = "skipped"
        if outcome == "skipped":
            message = _skip_reason(report)
        elif outcome == "passed":
            message = ""
        else:
            message = report.longreprtext
        self.rows[report.nodeid] = CaseResult(
            info.id,
            str(info.level),
            info.section,
            info.requirement,
            outcome,
            message,
            round(report.duration, 3),
        )

    def verdict(self) -> str:
        """``CONFORMANT`` unless a MUST case (or, with --strict, a SHOULD case) failed."""
        if not self.rows:
            return "NOT CONFORMANT"
        for row in self.rows.values():
            if row.outcome in ("failed", "error"):
                return "NOT CONFORMANT"
            if row.outcome == "expected-failure" and row.level == "MUST":
                return "NOT CONFORMANT"
        return "CONFORMANT"

    def by_section(self) -> dict[str, dict[str, int]]:
        """Counts of outcomes per top-level section, in section order."""
        table: dict[str, dict[str, int]] = {}
        for row in self.rows.values():
            top = row.section.split(".", 1)[0]
            counts = table.setdefault(top, dict.fromkeys(OUTCOMES, 0))
            counts[row.outcome] += 1
        return dict(sorted(table.items(), key=lambda item: int(item[0])))
