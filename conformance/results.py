"""The outcome of every case of a run, and the verdict drawn from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from .case import CaseInfo

SHOULD_NOTE = "failure, reported as a warning (--bp-strict makes it count)"

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
case listed in --bp-expected-failures failed as listed; unexpected-pass: a listed case passed."""

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
    conversation: list[str] = field(default_factory=list)
    """The decoded transcript of the case's connections (the HTML report shows it)."""

    def as_json(self) -> dict[str, Any]:
        row = asdict(self)
        del row["conversation"]
        return row


@dataclass(frozen=True)
class Cause:
    """One root cause of a run's failures: a title, what explains it, the cases it failed."""

    title: str
    explanation: str
    case_ids: tuple[str, ...]


def causes_by_case(results: Results) -> list[Cause]:
    """The fallback grouping: one cause per failed case (its headline), MUST cases first."""
    failed = [row for row in results.rows.values() if row.outcome in FATAL]
    failed.sort(key=lambda row: (row.level != "MUST", row.outcome != "failed"))
    return [Cause(f"{row.id} {row.outcome}", headline(row.message), (row.id,)) for row in failed]


def headline(message: str) -> str:
    """The most telling line of a failure message: 'actual:' and 'diagnosis:' if present."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    picked = [line for line in lines if line.startswith(("actual:", "diagnosis:"))]
    raised = [line[1:].strip() for line in lines if line.startswith("E ")]
    text = " | ".join(picked) if picked else raised[-1] if raised else (lines[0] if lines else "")
    return text if len(text) <= 300 else text[:297] + "..."


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext


class Results:
    """Case results in run order (one row per collected item, keyed by node id)."""

    def __init__(self) -> None:
        self.rows: dict[str, CaseResult] = {}
        self.causes: list[Cause] | None = None
        """Root causes found by a diagnosis stage, if any (else the reports group by case)."""

    def root_causes(self) -> list[Cause]:
        """`causes` if a diagnosis stage set them, else one per failed case."""
        return self.causes if self.causes is not None else causes_by_case(self)

    def teardown_failed(self, report: pytest.TestReport) -> None:
        """A case whose teardown failed is an error (pytest counts it so too)."""
        row = self.rows.get(report.nodeid)
        if row is not None and row.outcome not in FATAL:
            row.outcome = "error"
            row.message = f"the case's teardown failed: {report.longreprtext}"

    def record(
        self, info: CaseInfo, report: pytest.TestReport, conversation: list[str] | None = None
    ) -> None:
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
            conversation or [],
        )

    def verdict(self) -> str:
        """``CONFORMANT`` unless a MUST case (or, with --bp-strict, a SHOULD case) failed;
        ``NO VERDICT`` when no case ran."""
        if not self.rows:
            return "NO VERDICT"
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
