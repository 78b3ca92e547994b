"""For the benchmarks: start and stop `python -m reference_server`, read a process's memory figures."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""This checkout (the default version of the server to run)."""
SERVER_COMMAND = (sys.executable, "-m", "reference_server")


def start_server(
    data_dir: Path, *extra: str, checkout: Path = ROOT
) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """A server of `checkout` on `data_dir` (any free port, warnings only); (process, (host, port))."""
    process = subprocess.Popen(
        [*SERVER_COMMAND, "--port", "0", "--data-dir", str(data_dir), "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE,
        cwd=checkout,
        env=dict(os.environ, PYTHONPATH=str(checkout)),
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.fullmatch(r"listening on (\S+):(\d+)\n", line)
    if match is None:
        process.kill()
        raise SystemExit(f"server in {checkout} did not start: {line!r}")
    return process, (match[1], int(match[2]))


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait (the server stops cleanly)."""
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    if process.stdout is not None:
        process.stdout.close()


def status_kib(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status in KiB: "VmRSS" (now) or "VmHWM" (peak)."""
    found = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) if found else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
