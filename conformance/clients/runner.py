"""Running the client under test: its command in the working folder with a time limit (the
process group is killed when it runs over), or, with ``--bp-client-listen``, waiting for a
client started by hand."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .server import ScriptedServer

TAIL_LINES = 15
SHELL_SIGNALS = {134: "SIGABRT", 139: "SIGSEGV"}
WINDOWS_CRASHES = {
    0xC0000005: "access violation",
    0xC00000FD: "stack overflow",
    0xC0000409: "stack buffer overrun",
}
LISTEN_GRACE_S = 10.0
"""In listen mode: the run is over when no connection is open and none came for this long."""


@dataclass
class ClientRun:
    """What one run of the client did."""

    command: str
    returncode: int | None
    """None when the client was started by hand (listen mode) or killed."""
    stdout: str = ""
    stderr: str = ""
    hung: bool = False
    seconds: float = 0.0
    by_hand: bool = False
    limit_s: float = 0.0
    """How long the run was allowed to take."""

    @property
    def crashed(self) -> str:
        """Why the client looks crashed ("" if it does not): a signal or an uncaught exception."""
        code = self.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}"
        if code in SHELL_SIGNALS:
            return f"exit status {code} ({SHELL_SIGNALS[code]} through a shell)"
        if code in WINDOWS_CRASHES:
            return f"exit status {code:#x} ({WINDOWS_CRASHES[code]})"
        if "Traceback (most recent call last)" in self.stderr:
            return "an uncaught exception (Python traceback on stderr)"
        return ""

    def output(self) -> str:
        """stdout and stderr together (for message checks)."""
        return self.stdout + "\n" + self.stderr

    def tail(self) -> list[str]:
        """The last lines of stdout and stderr."""
        if self.by_hand:
            return ["(started by hand: output and exit status not seen by the suite)"]
        lines = [f"exit status: {self.describe_exit()} after {self.seconds:.1f} s"]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            shown = text.rstrip().splitlines()[-TAIL_LINES:]
            lines.append(f"{label} (last {len(shown)} lines):" if shown else f"{label}: (empty)")
            lines += [f"    {line}" for line in shown]
        return lines

    def describe_exit(self) -> str:
        if self.hung:
            return "did not exit in time (killed)"
        return "unknown" if self.returncode is None else str(self.returncode)


def run_command(command: str, folder: Path, timeout_s: float) -> ClientRun:
    """Run `command` (a shell-style command line) in `folder`; kill its process group after `timeout_s`."""
    argv = shlex.split(command, posix=os.name != "nt")
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    hung = False
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        hung = True
        _kill_group(process)
        stdout, stderr = process.communicate()
    return ClientRun(
        command,
        None if hung else process.returncode,
        stdout,
        stderr,
        hung=hung,
        seconds=time.monotonic() - started,
        limit_s=timeout_s,
    )


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()


def wait_by_hand(
    server: ScriptedServer, prompt: str, timeout_s: float, announce: Callable[[str], None]
) -> ClientRun:
    """Show what to run, then wait for the client's connections to come and end."""
    announce(prompt)
    started = time.monotonic()
    deadline = started + timeout_s

    def left() -> float:
        return max(deadline - time.monotonic(), 0.0)

    hung = False
    note = ""
    with server.activity:
        if not server.activity.wait_for(lambda: bool(server.connections), timeout=timeout_s):
            hung, note = True, f"no client connected within {timeout_s:g} s"
        while not hung:
            if not server.activity.wait_for(server.idle.is_set, timeout=left()):
                hung = True
                break
            if not server.activity.wait_for(
                _more_than(server, len(server.connections)), timeout=min(LISTEN_GRACE_S, left())
            ):
                break
    run = ClientRun("(started by hand)", None, stderr=note, hung=hung, by_hand=True, limit_s=timeout_s)
    run.seconds = time.monotonic() - started
    return run


def _more_than(server: ScriptedServer, seen: int) -> Callable[[], bool]:
    """A predicate: the client opened another connection."""
    return lambda: len(server.connections) > seen
