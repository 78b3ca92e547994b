"""Liveness after every case: does a fresh client still get an answer? And restarts (--bp-server-cmd).

When the server stops answering after a case, that case is the one that broke it: it fails
with "the server stopped answering after this case", naming what it sent. Then the suite
either restarts the server (``--bp-server-cmd``, each restart reported) or reports every
remaining case as not run because the server is down.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .case import Target
from .profile import fresh_client_answers

STOPPED_ANSWERING = "the server stopped answering after this case"
NOT_RUN = "not run: server down"
_START_WAIT_S = 30.0


@dataclass(frozen=True)
class Restart:
    """One restart of the server by the suite."""

    after_case: str
    reason: str
    succeeded: bool

    def line(self) -> str:
        done = "restarted" if self.succeeded else "restart FAILED"
        return f"server {done} after {self.after_case} ({self.reason})"


class ServerCommand:
    """The server under test, started (and restarted) by the suite: ``--bp-server-cmd CMD``."""

    def __init__(self, command: str, cwd: Path | None, target: Target, log_dir: Path) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("--bp-server-cmd is empty: give the command that starts the server")
        self.cwd = cwd
        self.target = target
        self.log_path = log_dir / "server-under-test.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the command; '' once the target accepts connections, else why not."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"the command exited with status {self.process.returncode} (log: {self.log_path})"
            try:
                socket.create_connection(self.target, timeout=1.0).close()
                return ""
            except OSError:
                time.sleep(0.1)
        return f"nothing listened on {self.target} within {_START_WAIT_S:g} s (log: {self.log_path})"

    def stop(self) -> None:
        """Stop the process group this suite started (terminate, then kill)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


class Liveness:
    """Checks after each case; remembers when the server went down and every restart."""

    def __init__(self, target: Target, bound_s: float, command: ServerCommand | None) -> None:
        self.target = target
        self.bound_s = bound_s
        self.command = command
        self.down_after: str | None = None
        self.restarts: list[Restart] = []

    def not_run_reason(self) -> str:
        """Why a case is skipped ('' while the server is up)."""
        if self.down_after is None:
            return ""
        return f"{NOT_RUN} (it stopped answering after {self.down_after})"

    def check_after(self, case_id: str, sent: list[str]) -> str:
        """'' when a fresh client still gets an answer; else the failure text for `case_id`."""
        problem = fresh_client_answers(self.target, self.bound_s)
        if not problem:
            return ""
        earlier = f"({len(sent) - 3} earlier messages) ... " if len(sent) > 3 else ""
        what = earlier + "; ".join(sent[-3:])
        text = (
            f"{STOPPED_ANSWERING} ({case_id}): {problem}.\n"
            f"last message sent: {sent[-1] if sent else '(nothing)'}\n"
            f"what this case sent: {what or '(nothing)'}"
        )
        if self.command is None:
            self.down_after = case_id
            return (
                text
                + f"\nthe remaining cases are reported as '{NOT_RUN}'"
                + " (--bp-server-cmd lets the suite restart it)"
            )
        self.command.stop()
        failure = self.command.start()
        self.restarts.append(Restart(case_id, problem, not failure))
        if failure:
            self.down_after = case_id
            return text + f"\nthe suite could not restart the server: {failure}"
        return text + "\nthe suite restarted the server (--bp-server-cmd) and carries on"
