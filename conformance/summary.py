"""The one-page certification summary (terminal) and the JSON report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .results import OUTCOMES, Results, headline

_COLUMNS = (
    ("passed", "passed"),
    ("failed", "failed"),
    ("error", "error"),
    ("warning", "warn"),
    ("info", "info"),
    ("expected-failure", "xfail"),
    ("unexpected-pass", "xpass"),
    ("skipped", "skipped"),
)
_NOTEWORTHY = (
    ("failed", "FAILED"),
    ("error", "ERROR (the case could not run)"),
    ("unexpected-pass", "LISTED AS EXPECTED FAILURE BUT PASSED"),
    ("expected-failure", "known deviations (--bp-expected-failures)"),
    ("warning", "SHOULD warnings"),
    ("info", "informational"),
    ("skipped", "skipped"),
)


def write_summary(
    reporter: Any, results: Results, facts: dict[str, Any], before_verdict: list[str] | None = None
) -> None:
    """Print the certification summary: per section counts, notable cases, the verdict."""
    line = reporter.write_line
    reporter.section("backupproto conformance: certification summary", sep="=")
    line(f"target: {facts['target']} ({facts['target_kind']})")
    line(f"data dir: {facts['data_dir'] or 'not given (storage checks skipped)'}")
    run = len(results.rows)
    partial = "" if run >= facts["cases_collected"] else " (partial run: the verdict covers these cases only)"
    line(f"cases: {run} run of {facts['cases_collected']} collected{partial}; seed {facts['seed']}")
    line("")
    header = f"{'section':<8}" + "".join(f"{label:>8}" for _, label in _COLUMNS)
    line(header)
    for section, counts in results.by_section().items():
        line(f"{section:<8}" + "".join(f"{counts[key]:>8}" for key, _ in _COLUMNS))
    if results.causes is not None:
        line("")
        line(f"root causes ({len(results.causes)}):")
        for cause in results.causes:
            line(f"  {cause.title} ({', '.join(cause.case_ids)}): {cause.explanation}")
    for outcome, title in _NOTEWORTHY:
        rows = [row for row in results.rows.values() if row.outcome == outcome]
        if not rows:
            continue
        line("")
        line(f"{title}:")
        for row in rows:
            line(f"  {row.id} [{row.level}]: {headline(row.message)}")
    for text in before_verdict or []:  # issue 10 (adapt): profile facts and restarts
        line(text)
    line("")
    if not results.rows:
        line("no case ran: no verdict")
        return
    line("verdict:")
    line(results.verdict(), bold=True, red=results.verdict() != "CONFORMANT")


def write_json_report(
    path: Path, results: Results, facts: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Every case with id, level, requirement, outcome and message, plus the run's facts and verdict."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for row in results.rows.values():
        counts[row.outcome] += 1
    document = {
        "format": 1,
        "verdict": results.verdict(),
        "run": facts,
        "counts": counts,
        "sections": results.by_section(),
        "causes": [asdict(cause) for cause in results.root_causes()],
        "cases": [row.as_json() for row in results.rows.values()],
    }
    document.update(extra or {})  # issue 10 (adapt): findings, cause details, restarts, early stop
    if document.get("stopped"):
        document["verdict"] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
