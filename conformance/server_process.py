"""Start a server as a separate process and wait for its ``listening on HOST:PORT`` line."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .case import Target, parse_target

LISTENING = "listening on "


class ServerProcess:
    """A server subprocess (by default the reference server) with its stdout drained in a thread."""

    def __init__(
        self, data_dir: Path, *, command: Sequence[str] | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        argv = list(command or [sys.executable, "-m", "reference_server"])
        argv += ["--port", "0", "--data-dir", str(data_dir)]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=str(data_dir.parent),
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.target: Target | None = None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if not self._ready.wait(start_timeout_s) or self.target is None:
            self.stop()
            raise RuntimeError(
                f"{' '.join(argv)} did not print '{LISTENING}HOST:PORT' within {start_timeout_s:g} s; "
                f"stdout: {self.lines[-5:]!r}; stderr in {self.log_path}"
            )

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.target is None and LISTENING in line:
                with contextlib.suppress(ValueError):
                    self.target = parse_target(line.split(LISTENING, 1)[1].strip())
                self._ready.set()
        self._ready.set()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server (then kill it after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
