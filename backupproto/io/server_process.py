"""Start a server program as a subprocess on a free loopback port, wait until it listens, stop it.

The program is given ``--port 0 --data-dir DIR`` (then any extra arguments) and must print
``listening on HOST:PORT`` on its standard output once it accepts connections; the reference
server and the test doubles do. Standard error goes to a log file beside the data folder.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from backupproto.address import Address, AddressError, parse_address

LISTENING: Final = "listening on "
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
KEPT_LINES: Final = 200
"""Lines of standard output kept for error messages."""


def reference_server_command() -> list[str]:
    """The command that runs the reference server with this interpreter."""
    return [sys.executable, "-m", "reference_server"]


@dataclass
class ServerProcess:
    """A running server: `address` (`host`, `port`), `data_dir`, `process`; its stderr in `log_path`."""

    address: Address
    data_dir: Path
    process: subprocess.Popen[str]
    log_path: Path
    command: tuple[str, ...]
    extra: tuple[str, ...] = ()
    port_option: int | None = 0
    lines: list[str] = field(default_factory=list)
    """Standard output so far (the last `KEPT_LINES` lines)."""

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *extra: str,
        command: Sequence[str] | None = None,
        port: int | None = 0,
        timeout: float = START_TIMEOUT,
    ) -> ServerProcess:
        """Start `command` (default: the reference server) on `data_dir` (created if needed) and
        wait for its listening line; `port=None` leaves out ``--port``. RuntimeError if it does
        not listen within `timeout` (the process is stopped then)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        program = tuple(command or reference_server_command())
        argv = [
            *program,
            *(["--port", str(port)] if port is not None else []),
            "--data-dir",
            str(data_dir),
            *extra,
        ]
        log_path = data_dir.parent / f"{data_dir.name}.server-{time.monotonic_ns()}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=data_dir.parent,
            )
        lines: list[str] = []
        found: list[Address] = []
        ready = threading.Event()
        threading.Thread(target=_read_stdout, args=(process, lines, found, ready), daemon=True).start()
        if not ready.wait(timeout) or not found:
            _terminate(process)
            raise RuntimeError(
                f"{' '.join(argv)} did not print '{LISTENING}HOST:PORT' within {timeout:g} s; "
                f"stdout: {lines[-5:]!r}; stderr:\n{log_path.read_text(errors='replace')}"
            )
        return cls(found[0], data_dir, process, log_path, program, extra, port, lines)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def target(self) -> Address:
        """Where the server listens (the suite's name for `address`)."""
        return self.address

    def log(self) -> str:
        """Everything the server wrote to standard error so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        return _terminate(self.process, timeout)

    def kill(self) -> int:
        """SIGKILL at once (a crash); the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return _terminate(self.process)

    def restart(self) -> ServerProcess:
        """Stop (if running) and start again on the same data folder with the same options."""
        self.stop()
        return ServerProcess.start(self.data_dir, *self.extra, command=self.command, port=self.port_option)


def _read_stdout(
    process: subprocess.Popen[str], lines: list[str], found: list[Address], ready: threading.Event
) -> None:
    """Keep the last lines of standard output; note the first listening address (and drain the pipe)."""
    assert process.stdout is not None
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            del lines[:-KEPT_LINES]
            if not found and LISTENING in line:
                with contextlib.suppress(AddressError):
                    found.append(parse_address(line.split(LISTENING, 1)[1]))
                ready.set()
    finally:
        ready.set()


def _terminate(process: subprocess.Popen[str], timeout: float = STOP_TIMEOUT) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    assert process.returncode is not None
    return process.returncode
