"""The HTML report (``--bp-html FILE``): one self-contained page per run.

On top the verdict and the root causes (`Results.root_causes`: a diagnosis stage's causes, or
one per failed case), then a table of outcomes per section, then every case the way
Autobahn|Testsuite reports one: its id, level and requirement, its verdict, the diagnosis
(expected / actual / why) and the decoded conversation. No external asset (CSS inline, no
script, no font, no image); every text from the run is HTML-escaped, since conversations
carry file names and bytes chosen by the server or the fuzzer. Readable from 360 px (a phone)
to wide screens: one column, long lines wrap, tables scroll sideways.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .results import FATAL, OUTCOMES, CaseResult, Cause, Results

_CSS = """
:root { --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1f2328; background: #f6f8fa; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
section, details { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: .75rem 1rem; margin: .5rem 0; }
.verdict { font-size: 1.6rem; font-weight: 700; }
.verdict.ok { color: var(--ok); } .verdict.bad { color: var(--bad); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: .5rem 0 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.cause { border-left: 4px solid var(--bad); }
.cause h3 { font-size: 1rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .2rem .6rem; text-align: right; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; }
summary { cursor: pointer; overflow-wrap: anywhere; }
.badge { display: inline-block; min-width: 5.5rem; padding: 0 .4rem; border-radius: 1rem; font-size: .8rem;
  font-weight: 600; text-align: center; color: #fff; background: var(--muted); margin-right: .4rem; }
.badge.passed { background: var(--ok); } .badge.failed, .badge.error, .badge.unexpected-pass {
  background: var(--bad); } .badge.warning, .badge.expected-failure { background: var(--warn); }
.level { color: var(--muted); font-size: .85rem; }
.requirement { font-style: italic; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font: 13px/1.4 ui-monospace, Menlo, Consolas,
  monospace; background: #f6f8fa; border: 1px solid var(--line); border-radius: 4px; padding: .5rem;
  margin: .4rem 0; }
a { color: #0969da; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(case_id: str) -> str:
    return "case-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in case_id)


def _split_message(row: CaseResult) -> str:
    """The failure message without the transcript (shown separately from `row.conversation`)."""
    if not row.conversation:
        return row.message
    lines = row.message.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("conversation "):
            return "\n".join(lines[:index])
    return row.message


def _facts(results: Results, facts: dict[str, Any]) -> str:
    verdict = results.verdict()
    run = len(results.rows)
    collected = facts.get("cases_collected", run)
    partial = "" if run >= collected else " (partial run: the verdict covers these cases only)"
    items = [
        ("target", f"{facts.get('target')} ({facts.get('target_kind')})"),
        ("data dir", facts.get("data_dir") or "not given (storage checks skipped)"),
        ("cases", f"{run} run of {collected} collected{partial}"),
        ("seed", facts.get("seed")),
        ("duration", f"{facts.get('duration_s')} s"),
    ]
    rows = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in items)
    tone = {"CONFORMANT": "ok", "NOT CONFORMANT": "bad"}.get(verdict, "none")
    return (
        f'<section><h1>backupproto conformance report</h1><div class="verdict {tone}">{_e(verdict)}</div>'
        f'<dl class="facts">{rows}</dl></section>'
    )


def _causes(causes: list[Cause]) -> str:
    if not causes:
        return "<h2>Root causes</h2><section>No failure: nothing to fix.</section>"
    parts = [f"<h2>Root causes ({len(causes)})</h2>"]
    for cause in causes:
        links = ", ".join(f'<a href="#{_anchor(case_id)}">{_e(case_id)}</a>' for case_id in cause.case_ids)
        parts.append(
            f'<section class="cause"><h3>{_e(cause.title)}</h3><div>{_e(cause.explanation)}</div>'
            f"<div>cases: {links}</div></section>"
        )
    return "".join(parts)


def _sections(results: Results) -> str:
    shown = [outcome for outcome in OUTCOMES if any(row.outcome == outcome for row in results.rows.values())]
    head = "".join(f"<th>{_e(outcome)}</th>" for outcome in shown)
    body = "".join(
        f"<tr><td>{_e(section)}</td>" + "".join(f"<td>{counts[outcome]}</td>" for outcome in shown) + "</tr>"
        for section, counts in results.by_section().items()
    )
    return (
        f'<h2>Outcomes by spec section</h2><section class="scroll"><table><thead><tr><th>section</th>'
        f"{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _case(row: CaseResult) -> str:
    failing = row.outcome in FATAL
    message = _split_message(row).strip()
    diagnosis = f"<div>diagnosis</div><pre>{_e(message)}</pre>" if message else ""
    transcript = "\n".join(row.conversation)
    conversation = (
        f"<div>conversation ({len(row.conversation)} lines)</div><pre>{_e(transcript)}</pre>"
        if row.conversation
        else "<div class=level>no conversation recorded</div>"
    )
    return (
        f'<details id="{_anchor(row.id)}"{" open" if failing else ""}><summary>'
        f'<span class="badge {_e(row.outcome)}">{_e(row.outcome)}</span>{_e(row.id)} '
        f'<span class="level">{_e(row.level)} · {row.duration_s:.2f} s</span></summary>'
        f'<p class="requirement">{_e(row.requirement)}</p>{diagnosis}{conversation}</details>'
    )


def render_html(results: Results, facts: dict[str, Any]) -> str:
    """The whole page as a string."""
    rows = sorted(results.rows.values(), key=lambda row: row.outcome not in FATAL)
    cases = "".join(_case(row) for row in rows)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>backupproto conformance: {_e(results.verdict())}</title><style>{_CSS}</style></head>"
        f"<body><main>{_facts(results, facts)}{_causes(results.root_causes())}{_sections(results)}"
        f"<h2>Cases ({len(rows)})</h2>{cases}</main></body></html>\n"
    )


def write_html_report(path: Path, results: Results, facts: dict[str, Any]) -> None:
    """Write `render_html` to `path` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results, facts), encoding="utf-8")
