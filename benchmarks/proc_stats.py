"""For the benchmarks: start the reference server of a checkout, and read a process's CPU and memory."""

from __future__ import annotations

import compileall
import os
import re
import sys
from pathlib import Path

from backupproto.io.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
"""This checkout."""


def start_server(data_dir: Path, *extra: str, checkout: Path = ROOT) -> ServerProcess:
    """The reference server of `checkout` (default: this one) on `data_dir`, logging warnings only."""
    command = None
    if checkout != ROOT:  # run another version: its own packages first on the path
        boot = f"import sys, runpy; sys.path.insert(0, {str(checkout)!r}); "
        command = [sys.executable, "-c", boot + "runpy.run_module('reference_server', run_name='__main__')"]
    return ServerProcess.start(data_dir, "--log-level", "WARNING", *extra, command=command, timeout=60)


def start_floor_server(data_dir: Path) -> ServerProcess:
    """The storage-free floor server (`floor_server.py`), for the small-session benchmark."""
    command = [sys.executable, str(Path(__file__).resolve().parent / "floor_server.py")]
    return ServerProcess.start(data_dir, command=command, timeout=60)


PACKAGES = ("backupproto", "reference_client", "reference_server")


def byte_compile(checkout: Path = ROOT) -> None:
    """Write the bytecode of a checkout's packages, as `pip install` does: a timed program then
    starts as installed, also where PYTHONDONTWRITEBYTECODE keeps Python from caching it (30 ms
    of a client's start-up otherwise)."""
    for package in PACKAGES:
        if not compileall.compile_dir(checkout / package, quiet=1):
            raise SystemExit(f"cannot byte-compile {checkout / package}")


def status_kib(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status in KiB: "VmRSS" (now) or "VmHWM" (peak)."""
    found = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found[1]) if found else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
