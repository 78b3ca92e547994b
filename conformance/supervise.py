"""The run's supervisor: profiling stage, adaptation, liveness, restarts, early stop, root causes.

The plugin holds one `Supervisor` and calls it at a few points (a narrow interface):
`begin` when the target is known (before the first case), `not_run_reason` before a case,
`after_case` after it, `repeated_finding` when a case fails, and `causes`/`summary_lines`/
`report` at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from backupproto.dialect import Dialect

from . import results, transport
from .case import CaseContext, CaseInfo, Target
from .causes import ALREADY_REPORTED, Cause, Row, root_causes, verdict_lines
from .dialect_probe import Detected
from .liveness import Liveness, ServerCommand
from .profile import (
    BYPASSING_TRANSPORT,
    TRANSPORT_FINDINGS,
    Finding,
    Profile,
    TargetUnusable,
    profile_target,
)

_LIVENESS_MIN_S = 2.0


class Supervisor:
    """One run's profiling, adaptation and liveness (see the module docstring)."""

    def __init__(self, *, adapt: bool, server_cmd: str | None, server_cwd: Path | None) -> None:
        self.adapt = adapt
        self.server_cmd = server_cmd
        self.server_cwd = server_cwd
        self.profile: Profile | None = None
        self.liveness: Liveness | None = None
        self.command: ServerCommand | None = None
        self.stopped = ""
        """The early-stop message (the run gives no verdict)."""
        self.stop_finding: Finding | None = None
        self.adaptation: transport.Adaptation | None = None

    # -- before the cases --------------------------------------------------------------------

    def begin(
        self,
        target: Target,
        timeout_s: float,
        log_dir: Path,
        dialect: Dialect | None = None,
        detected: Detected | None = None,
    ) -> None:
        """Start the server if --bp-server-cmd, profile the target, install the adaptation.

        Raises `TargetUnusable` when there is nothing to test (the plugin stops the run)."""
        if self.server_cmd is not None:
            self.command = ServerCommand(self.server_cmd, self.server_cwd, target, log_dir)
            failure = self.command.start()
            if failure:
                self._stop(TargetUnusable(f"--bp-server-cmd: {failure}", pytest.ExitCode.USAGE_ERROR))
        try:
            found = profile_target(target, timeout_s, dialect, detected)
        except TargetUnusable as unusable:
            self._stop(unusable)
        self.profile = found
        self.adaptation = transport.Adaptation(found, enabled=self.adapt)
        transport.install(self.adaptation)
        bound = max(_LIVENESS_MIN_S, min(timeout_s, 20 * found.answer_s))
        self.liveness = Liveness(target, bound, self.command)

    def _stop(self, unusable: TargetUnusable) -> NoReturn:
        self.stopped = str(unusable)
        self.stop_finding = unusable.finding
        self.end()
        raise unusable

    def end(self) -> None:
        """Stop a server the suite started; drop the adaptation."""
        if self.command is not None:
            self.command.stop()
        transport.uninstall()

    # -- around each case --------------------------------------------------------------------

    def not_run_reason(self, info: CaseInfo) -> str:
        """Why `info` does not run: the server is down, or the case bypasses the adaptation it needs."""
        down = self.liveness.not_run_reason() if self.liveness is not None else ""
        if down or self.adaptation is None or not self.adaptation.enabled:
            return down
        if info.id.startswith(BYPASSING_TRANSPORT):
            found = self.adaptation.findings()
            for key in TRANSPORT_FINDINGS:
                if key in found:
                    return (
                        f"{ALREADY_REPORTED} {key}: {found[key].title} [{found[key].level}, spec "
                        f"{found[key].section}]; this case reads the wire without the compensating transport "
                        "(--bp-no-adapt runs it as it is)"
                    )
        return ""

    def after_case(self, info: CaseInfo, context: CaseContext | None) -> str:
        """Close the case's connections, then check liveness: '' or the case's failure text."""
        if self.liveness is None or self.liveness.down_after is not None:
            return ""
        sent: list[str] = []
        if context is not None:
            sent = [line for wire in context.wires for line in wire.sent_lines()]
            context.close()
        return self.liveness.check_after(info.id, sent)

    def repeated_finding(self, info: CaseInfo, message: str) -> str:
        """A skip reason when a failure is only an already-reported finding again ('' otherwise).
        A failure that makes a finding (a dropped duplicate name) records it first."""
        adaptation = self.adaptation
        if adaptation is None or not adaptation.enabled:
            return ""
        said = verdict_lines(message)
        _learn_dropped_duplicate(info, said)
        for finding in adaptation.findings().values():
            if info.id in finding.case_ids:
                continue
            masked = info.id in finding.masks and info.id in adaptation.used
            if masked or (finding.signature and re.search(finding.signature, said, re.M)):
                return (
                    f"{ALREADY_REPORTED} {finding.key}: {finding.title} "
                    f"[{finding.level}, spec {finding.section}]; "
                    f"this case's only failure is that finding ({_failure_line(message)})"
                )
        return ""

    # -- at the end --------------------------------------------------------------------------

    def findings(self) -> dict[str, Finding]:
        adaptation = self.adaptation
        found = dict(adaptation.findings()) if adaptation is not None else {}
        if self.stop_finding is not None:
            found.setdefault(self.stop_finding.key, self.stop_finding)
        return found

    def causes(self, rows: Iterable[Row]) -> list[Cause]:
        adaptation = self.adaptation
        findings = self.findings()
        adapted = {key: adaptation.adapted_cases(key) for key in findings} if adaptation is not None else {}
        return root_causes(rows, findings, adapted)

    def restarts(self) -> list[str]:
        return [restart.line() for restart in self.liveness.restarts] if self.liveness is not None else []

    def result_causes(self, rows: Iterable[Row]) -> list[results.Cause] | None:
        """The root causes in the form the summary and the reports print (`results.Cause`);
        None when there are none (the summary then prints no root-cause block)."""
        found = [
            results.Cause(
                f"[{cause.level}, spec {cause.section}] {cause.title}", _explain(cause), tuple(cause.cases)
            )
            for cause in self.causes(rows)
        ]
        return found or None

    def summary_lines(self, rows: Iterable[Row]) -> list[str]:
        """Profile facts and restarts, for the terminal summary (before the verdict)."""
        lines = []
        if self.profile is not None:
            adapting = "on" if self.adapt else "off (--bp-no-adapt)"
            lines.append(f"dialect: {self.profile.dialect_line}")
            lines.append(f"profile: {self.profile.facts()}; adaptation {adapting}")
        restarts = self.restarts()
        if restarts:
            lines.append("restarts:")
            lines += [f"  {line}" for line in restarts]
        return lines

    def report(self, rows: Iterable[Row]) -> dict[str, Any]:
        """The JSON report's additions: findings, root causes, restarts, early stop."""
        return {
            "stopped": self.stopped or None,
            "findings": [finding.as_json() for finding in self.findings().values()],
            "cause_details": [cause.as_json() for cause in self.causes(rows)],
            "restarts": self.restarts(),
        }


SILENT_DUPLICATE = "silent-duplicate-name"
DUPLICATE_NAME_CASE = "4.1-register-duplicate-name"
"""The case that tests the answer to a taken name directly (it reports the finding itself)."""
_DROPPED_DUPLICATE = re.compile(
    r"^expected:\s+(?P<code>\d+) (REGISTRATION_FAILED|for the first 1100 \(its name is taken\)).*\n"
    r"actual:\s+no response: nothing arrived",
    re.M,
)


def _learn_dropped_duplicate(info: CaseInfo, said: str) -> None:
    """The first case that waited in vain for the refusal of a taken name makes the finding
    'silent-duplicate-name': later waits for that response are brief (`transport.response_wait_s`)
    and their failures are this finding again."""
    dropped = _DROPPED_DUPLICATE.search(said)
    found = transport.current()
    if dropped is None or found is None or SILENT_DUPLICATE in found.findings():
        return
    code = dropped.group("code")
    finding = Finding(
        SILENT_DUPLICATE,
        f"a 1100 REGISTER whose name is taken gets no response at all (expected {code} "
        "REGISTRATION_FAILED): the duplicate is silently dropped",
        "MUST",
        "4.1",
        tuple(dict.fromkeys((info.id, DUPLICATE_NAME_CASE))),
        said,
        adaptation=f"later waits for a {code} are brief",
        signature=rf'^expected:\s+(?:{code}\b|message .*"code": {code}\b).*\n'
        r"actual:\s+(?:no response|nothing$)",
    )
    transport.never_sends(finding, code)


def _failure_line(message: str) -> str:
    """The 'actual:' line of a failure message (or its first line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    picked = [line for line in lines if line.startswith("actual:")]
    text = picked[0] if picked else lines[0] if lines else ""
    return text if len(text) <= 160 else text[:157] + "..."


def _explain(cause: Cause) -> str:
    """What the summary says after a cause's title: adaptation and cases not run."""
    parts = []
    if cause.adapted:
        parts.append(f"{len(cause.adapted)} cases ran under adaptation")
    if cause.not_run:
        parts.append(f"{len(cause.not_run)} cases not run")
    return "; ".join(parts) or f"{len(cause.cases)} case(s)"
