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
_TOPICS = (("cksum", re.compile(r"\bcksum\b")),)
_SILENCE = re.compile(r"no answer|did not answer|nothing arrived|no response|\b0 bytes within")
_ONLY_DIFFERS = re.compile(
    r"^(the (response|request) differs|(field \w+|client_id) differs"
    r"|(response|request) code \d+ instead of \d+"
    r"|the server did not answer in time.*|no response within .*)$"
)
"""A diagnosis that only says what differs or that nothing came (a session replay's): it names no cause."""
_CODE_INSTEAD = re.compile(r"code (?P<got>\d{4}) instead of (?P<wanted>\d{4})")
_EXPECTED_CODE = re.compile(r"(?P<code>\d{4})\b")
_RECORDED_CODE = re.compile(r'as recorded .*?"code": (?P<code>\d{4})')
_ACTUAL_CODE = re.compile(r"(?:\d+ bytes arrived: )?(?P<named>(?P<code>\d{4}) [A-Z_]{4,})")
_NO_RESPONSE_DUE = re.compile(r"no (bytes|response)\b[^(]*(\((?P<why>.*)\))?$")
_NAMED_IN_ACTUAL = re.compile(r"^\d{4} [A-Z_]{4,}: (?P<why>.+)")
"""An 'actual:' line that says what the server did after the response it names."""
_PARENTHESISED = re.compile(r"\([^()]*\)")
_FIELD_SHOWN = (
    re.compile(r"^([a-z]+(?:_[a-z]+)*) (?:0x)?\d", re.M),  # actual: content_size 100
    re.compile(r"\bfield (\w+) differs"),  # a replay's diagnosis
    re.compile(r'"field": "(\w+)"'),  # a replay's actual: the response could not be parsed
)
_RULES = (
    (
        re.compile(r"expected:.*\b\w+\.db\b.*\nactual:\s+no such file", re.S),
        "storage:no-database",
        "no database in the data dir (--bp-data-dir): the storage checks (spec 11, dialects 18.5) found "
        "no server.db / defensive.db",
    ),
)
"""Failures that name one cause in many words: (pattern on the verdict lines, key, title)."""
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
    _group_failures([row for row in rows if row.id not in claimed and row.outcome in _REPORTED], causes)
    listed = [
        cause
        for cause in causes.values()
        if cause.cases or cause.adapted or cause.not_run or cause.key in findings
    ]
    return sorted(listed, key=lambda cause: _LEVEL_ORDER.get(cause.level, 3))


@dataclass
class _Said:
    """What one failure says: its cause key and title, whether it explains itself, its evidence."""

    key: str
    title: str
    explained: bool
    evidence: set[str]


def _group_failures(rows: list[Row], causes: dict[str, Cause]) -> None:
    """One cause per diagnosis (normalised to its conclusion); a failure that only shows a
    value (a raw 'actual:', a replay's 'the response differs') joins the one explained cause
    whose evidence it repeats, else it is a cause of its own."""
    said = {row.id: _what_it_says(row) for row in rows}
    evidence: dict[str, set[str]] = defaultdict(set)
    sections: dict[str, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: not said[row.id].explained):
        what = said[row.id]
        key = what.key
        if not what.explained:
            matches = [other for other, seen in evidence.items() if seen & what.evidence]
            key = matches[0] if len(matches) == 1 else key
        cause = causes.setdefault(key, Cause(key, what.title, row.level, row.section))
        if what.explained:
            evidence[key] |= what.evidence
        if _LEVEL_ORDER.get(row.level, 3) < _LEVEL_ORDER.get(cause.level, 3):
            cause.level = row.level
        cause.cases.append(row.id)
        sections[key].append(row.section)
    for key, seen in sections.items():
        causes[key].section = max(set(seen), key=seen.count)
    order = [row.id for row in rows]
    for cause in causes.values():
        cause.cases.sort(key=lambda case: order.index(case) if case in order else -1)


def _what_it_says(row: Row) -> _Said:
    """The cause a failure names (see `_group_failures`)."""
    lines = {
        prefix: _message_line(row.message, f"{prefix}:") for prefix in ("expected", "actual", "diagnosis")
    }
    expected, actual, diagnosis = lines["expected"], lines["actual"], lines["diagnosis"]
    evidence = _evidence(row.message, expected, actual, diagnosis)
    title = _headline(row)
    if row.outcome == "error":
        title = f"the suite itself failed: {title}"
        return _Said(_normalised(title), title, False, set())
    for pattern, key, rule_title in _RULES:
        if pattern.search(verdict_lines(row.message)):
            return _Said(key, rule_title, True, evidence)
    named = _NAMED_IN_ACTUAL.match(actual)
    if named and not (diagnosis and not _ONLY_DIFFERS.match(diagnosis)):
        diagnosis = named.group("why")  # actual: 2100 REGISTERED: the server accepted a duplicate name
    if diagnosis and not _ONLY_DIFFERS.match(diagnosis):
        conclusion = " ".join(_PARENTHESISED.sub("", diagnosis).rsplit(": ", 1)[-1].split())
        shown = {token for token in evidence if not token.startswith("got:")}  # a code alone: too loose
        return _Said(_normalised(conclusion), title, True, shown)
    unasked = _NO_RESPONSE_DUE.match(expected)
    sent = _ACTUAL_CODE.search(actual)
    if unasked and sent:
        key = f"unasked:{sent.group('code')}"
        why = f" ({unasked.group('why')})" if unasked.group("why") else ""
        return _Said(
            key,
            f"{sent.group('named')} sent where no response is due{why}",
            True,
            {f"got:{sent.group('code')}"},
        )
    pair = sorted(token for token in evidence if token.startswith("code:"))
    if pair and sent and _EXPECTED_CODE.match(expected):
        title = f"{sent.group('named')} instead of {expected}"  # not the raw fields (ids, keys)
    return _Said(pair[0] if pair else _normalised(title), title, False, evidence)


def _normalised(text: str) -> str:
    """A cause key: message names and numbers (ids, sizes, values) masked, lower case."""
    return _NUMBERS.sub("#", _NAMES.sub("NAME", text)).lower()


def _evidence(message: str, expected: str, actual: str, diagnosis: str) -> set[str]:
    """What a failure shows, as tokens two failures of one cause share: the response code
    received instead of the one expected, the response code received, the field that
    differs, a topic (cksum, silence)."""
    found: set[str] = set()
    instead = _CODE_INSTEAD.search(diagnosis)
    wanted = _EXPECTED_CODE.match(expected) or _RECORDED_CODE.search(expected)
    got = _ACTUAL_CODE.match(actual)
    codes = (
        (instead.group("wanted"), instead.group("got"))
        if instead
        else (wanted.group("code") if wanted else "", got.group("code") if got else "")
    )
    if codes[1]:
        found.add(f"got:{codes[1]}")
    if all(codes) and codes[0] != codes[1]:
        found.add(f"code:{codes[0]}>{codes[1]}")
    for pattern in _FIELD_SHOWN:
        found |= {f"field:{name}" for name in pattern.findall(f"{actual}\n{diagnosis}")}
    said = verdict_lines(message)
    found |= {f"topic:{name}" for name, pattern in _TOPICS if pattern.search(said)}
    if _SILENCE.search(actual) or _SILENCE.search(diagnosis):
        found.add(f"silence:{codes[0]}")  # no answer where this response was due
    return found
