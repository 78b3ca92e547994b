"""Root causes: the failures of a run grouped by what caused them, one line per cause.

A cause is a finding of the profiling stage (or one made during a case), a server that
stopped answering after a case, or a diagnosis shared by several failures (the same wrong
CRC algorithm, the same refused request). Each cause lists the cases that report it and
the cases that ran under its adaptation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from .liveness import NOT_RUN, STOPPED_ANSWERING
from .profile import Finding

ALREADY_REPORTED = "already reported:"
_REPORTED = frozenset({"failed", "error", "warning", "info", "expected-failure"})
_SHOWN = 6
_TOPICS = (
    ("cksum", re.compile(r"\bcksum\b")),
    ("silence", re.compile(r"no answer|did not answer|nothing arrived|no response")),
)
_EXPLAINED = re.compile(r"\bequals\b|silently dropped")
"""A cause title that names what the server did (not only that a value or an answer was wrong)."""
_LEVEL_ORDER = {"MUST": 0, "SHOULD": 1, "INFO": 2}
_NAMES = re.compile(r"\b[A-Z]{2,}(_[A-Z]+)*\b")
"""Message names (ACKNOWLEDGED, RECONNECT_DENIED): one deviation in several responses is one cause."""
_NUMBERS = re.compile(r"0x[0-9a-f]+|[0-9a-f]{8,}|\d+(\.\d+)?")


class Row(Protocol):
    """What the causes need of a case result (`conformance.results.CaseResult`)."""

    id: str
    level: str
    section: str
    outcome: str
    message: str


@dataclass
class Cause:
    """One root cause and the cases under it."""

    key: str
    title: str
    level: str
    section: str
    cases: list[str] = field(default_factory=list)
    """The cases that report this cause (failed, warned, or noted)."""
    adapted: list[str] = field(default_factory=list)
    """The cases that ran under this cause's adaptation (they did not fail again)."""
    not_run: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"[{self.level}, spec {self.section}] {self.title}"]
        if self.cases:
            shown = ", ".join(self.cases[:_SHOWN])
            more = f" (+{len(self.cases) - _SHOWN} more)" if len(self.cases) > _SHOWN else ""
            parts.append(f"{len(self.cases)} case(s): {shown}{more}")
        if self.adapted:
            parts.append(f"{len(self.adapted)} cases ran under adaptation")
        if self.not_run:
            parts.append(f"{len(self.not_run)} cases not run")
        return " — ".join(parts)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def verdict_lines(message: str) -> str:
    """The expected/actual/diagnosis lines of a failure message (not its transcripts)."""
    return "\n".join(
        line.strip()
        for line in message.splitlines()
        if line.strip().startswith(("expected:", "actual:", "diagnosis:"))
    )


def _message_line(message: str, prefix: str) -> str:
    for line in message.splitlines():
        if line.strip().startswith(prefix):
            return line.strip()[len(prefix) :].strip()
    return ""


def _headline(row: Row) -> str:
    """The line that names a failure's cause: its diagnosis, else what was seen."""
    message = row.message
    text = _message_line(message, "diagnosis:") or _message_line(message, "actual:")
    if not text:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        text = lines[0] if lines else row.outcome
    return text if len(text) <= 200 else text[:197] + "..."


def root_causes(
    rows: Iterable[Row], findings: dict[str, Finding], adapted: dict[str, list[str]]
) -> list[Cause]:
    """Group the rows of a run into causes (findings first, then hangs, then diagnoses)."""
    rows = list(rows)
    causes: dict[str, Cause] = {}
    claimed: set[str] = set()
    for finding in findings.values():
        cause = Cause(finding.key, finding.title, finding.level, finding.section)
        cause.adapted = sorted(adapted.get(finding.key, []))
        for row in rows:
            own = row.id in finding.case_ids and row.outcome in _REPORTED
            again = row.outcome == "skipped" and row.message.startswith(f"{ALREADY_REPORTED} {finding.key}")
            if own or again:
                cause.cases.append(row.id)
                claimed.add(row.id)
        causes[finding.key] = cause
    for row in rows:
        if row.id in claimed:
            continue
        if STOPPED_ANSWERING in row.message and row.outcome in _REPORTED:
            sent = _message_line(row.message, "last message sent:")
            title = f"the server stopped answering after {row.id} (its last message: {sent[:160]})"
            cause = causes.setdefault(
                f"down:{row.id}", Cause(f"down:{row.id}", title, row.level, row.section)
            )
            cause.cases.append(row.id)
            down_key = f"down:{row.id}"
            claimed.add(row.id)
            for later in rows:
                if (
                    later.outcome == "skipped"
                    and later.message.startswith(NOT_RUN)
                    and row.id in later.message
                ):
                    causes[down_key].not_run.append(later.id)
                    claimed.add(later.id)
    sections: dict[str, list[str]] = defaultdict(list)
    topics: dict[str, set[str]] = {}
    for row in rows:
        if row.id in claimed or row.outcome not in _REPORTED:
            continue
        title = _headline(row)
        if row.outcome == "error":
            title = f"the suite itself failed: {title}"
        key = _NUMBERS.sub("#", _NAMES.sub("NAME", title)).lower()
        cause = causes.setdefault(key, Cause(key, title, row.level, row.section))
        if _LEVEL_ORDER.get(row.level, 3) < _LEVEL_ORDER.get(cause.level, 3):
            cause.level = row.level
        cause.cases.append(row.id)
        sections[key].append(row.section)
        said = verdict_lines(row.message)
        topics.setdefault(key, set()).update(name for name, pattern in _TOPICS if pattern.search(said))
    for key, seen in sections.items():
        causes[key].section = max(set(seen), key=seen.count)
    _merge_unexplained(causes, topics)
    listed = [
        cause
        for cause in causes.values()
        if cause.cases or cause.adapted or cause.not_run or cause.key in findings
    ]
    return sorted(listed, key=lambda cause: _LEVEL_ORDER.get(cause.level, 3))


def _merge_unexplained(causes: dict[str, Cause], topics: dict[str, set[str]]) -> None:
    """A failure that only says a value differs (a replayed cksum, say) joins the one cause that
    explains a deviation of the same topic, when there is exactly one."""
    explained = [key for key in topics if _EXPLAINED.search(causes[key].title)]
    for key, names in topics.items():
        if key in explained or not names:
            continue
        matches = [other for other in explained if topics[other] & names]
        if len(matches) == 1:
            causes[matches[0]].cases += causes.pop(key).cases
