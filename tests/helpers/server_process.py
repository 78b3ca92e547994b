"""Start `python -m reference_server` as a subprocess and wait (bounded) for its listening line."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)\n?$")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class ServerProcess:
    """A running reference server: `.host`, `.port`, `.data_dir`, `.process`; logs in `.log_path`."""

    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: tuple[str, ...] = ()

    @classmethod
    def start(
        cls, data_dir: Path, *extra: str, port: int | None = 0, timeout: float = START_TIMEOUT
    ) -> ServerProcess:
        """Start a server on `data_dir` (created if needed); `port=None` leaves out --port."""
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["--data-dir", str(data_dir), *extra]
        if port is not None:
            args = ["--port", str(port), *args]
        log_path = data_dir.parent / f"{data_dir.name}.server-{time.monotonic_ns()}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "reference_server", *args],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            line = _first_line(process, timeout)
        except BaseException:
            _terminate(process)
            raise
        match = LISTENING.match(line)
        if match is None:
            _terminate(process)
            log_text = log_path.read_text(errors="replace")
            raise RuntimeError(f"server did not start: stdout {line!r}; log:\n{log_text}")
        return cls(match["host"], int(match["port"]), data_dir, process, log_path, extra)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        return _terminate(self.process, timeout)

    def kill(self) -> int:
        """SIGKILL at once (a crash)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        code = self.process.wait(STOP_TIMEOUT)
        _close_pipes(self.process)
        return code

    def restart(self) -> ServerProcess:
        """Stop (if running) and start again on the same data folder with the same options."""
        if self.process.poll() is None:
            self.stop()
        return ServerProcess.start(self.data_dir, *self.extra)


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no listening line within {timeout} s (got {buffer!r})")
            if not selector.select(left):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
    return buffer.decode(errors="replace")


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    if process.stdout is not None:
        process.stdout.close()


def _terminate(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    _close_pipes(process)
    assert process.returncode is not None
    return process.returncode
