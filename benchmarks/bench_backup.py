"""End to end: `backup-client` backing up one big file to `backup-server` over loopback, vs
`openssl enc -aes-128-cbc` encrypting the same file to /dev/null, in the same run.

Run: python benchmarks/bench_backup.py [--size-mib 1024] [--repeat 3] [--dir DIR] [--baseline DIR]

The client's time is its whole process, started as installed (its packages byte-compiled
first, as pip does): start, reconnect, read, encrypt, send, the server's
decrypt/cksum/write/fsync/rename, 2103, 1104, exit; the first run also registers. openssl's
time is its whole process too. Best of --repeat each, alternating, so that load from other
processes hits both alike. Also printed: peak RSS of the client (getrusage of the child) and
of the server (VmHWM). Goals: ratio <= 1.4; RSS < 64 MiB each.
`--baseline DIR` (a checkout, e.g. `git archive main | tar -x -C DIR`) also runs that checkout's
client against that checkout's server in each round, so both pairs meet the same load; the
CPU seconds of both servers and clients are printed side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proc_stats import ROOT, byte_compile, cpu_seconds, start_server, status_kib

MIB = 1 << 20


def timed(command: list[str], **options: object) -> tuple[float, float, float]:
    """Run a command to completion: (seconds, peak RSS MiB, CPU seconds); exits if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, **options)  # type: ignore[call-overload]
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} ... failed with exit status {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def client_command(folder: Path, address: str, name: str, source: Path) -> list[str]:
    folder.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "reference_client", "--dir", str(folder), "--server", address]
    return [*command, "--name", name, str(source)]


def parallel_backups(
    root: Path, address: str, source: Path, count: int, server_pid: int
) -> tuple[float, float]:
    """`count` clients backing up `source` at once: (wall seconds, server CPU seconds)."""
    cpu_before = cpu_seconds(server_pid)
    started = time.perf_counter()
    clients = [
        subprocess.Popen(
            client_command(root / f"parallel-{number}", address, f"parallel {number}", source),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        for number in range(count)
    ]
    if any(client.wait() != 0 for client in clients):
        raise SystemExit("a parallel backup failed")
    return time.perf_counter() - started, cpu_seconds(server_pid) - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; best (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp files (default TMPDIR)")
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout whose client also runs")
    parser.add_argument(
        "--parallel", type=int, default=2, help="clients at once for the last figure (default 2)"
    )
    options = parser.parse_args()
    byte_compile()
    if options.baseline is not None:
        byte_compile(options.baseline.resolve())
    with tempfile.TemporaryDirectory(prefix="bench-backup-", dir=options.dir) as temp:
        root = Path(temp)
        source = root / "big.bin"
        block = os.urandom(MIB)
        with source.open("wb") as stream:
            for _ in range(options.size_mib):
                stream.write(block)
        client_dir = root / "client"
        client_dir.mkdir()
        server = start_server(root / "server")
        address = f"{server.host}:{server.port}"
        baseline_server = None
        if options.baseline is not None:
            baseline_server = start_server(root / "baseline-server", checkout=options.baseline.resolve())
        client_runs: list[tuple[float, float, float]] = []
        openssl_runs: list[tuple[float, float, float]] = []
        server_cpu_runs: list[float] = []
        baseline_runs: list[tuple[float, float, float]] = []
        baseline_server_cpu_runs: list[float] = []
        try:
            for _ in range(options.repeat):
                openssl_runs.append(
                    timed(
                        [
                            "openssl",
                            "enc",
                            "-aes-128-cbc",
                            "-K",
                            "00" * 16,
                            "-iv",
                            "00" * 16,
                            "-in",
                            str(source),
                            "-out",
                            "/dev/null",
                        ]
                    )
                )
                server_before = cpu_seconds(server.process.pid)
                client_runs.append(timed(client_command(client_dir, address, "bench", source), cwd=ROOT))
                server_cpu_runs.append(cpu_seconds(server.process.pid) - server_before)
                if baseline_server is not None:
                    baseline_address = f"{baseline_server.host}:{baseline_server.port}"
                    command = client_command(root / "baseline", baseline_address, "baseline", source)
                    baseline_pid = baseline_server.process.pid
                    baseline_before = cpu_seconds(baseline_pid)
                    baseline_runs.append(timed(command, cwd=options.baseline))
                    baseline_server_cpu_runs.append(cpu_seconds(baseline_pid) - baseline_before)
            server_rss = status_kib(server.process.pid, "VmHWM") / 1024
            parallel = parallel_backups(root, address, source, options.parallel, server.process.pid)
        finally:
            server.stop(timeout=60)
            if baseline_server is not None:
                baseline_server.stop(timeout=60)
    client_seconds = min(run[0] for run in client_runs)
    openssl_seconds = min(run[0] for run in openssl_runs)
    size = options.size_mib * MIB
    print(f"{options.size_mib} MiB, best of {options.repeat}; {os.cpu_count()} CPUs")
    print(
        f"backup-client -> backup-server: {client_seconds:.2f} s = {size / client_seconds / 1e6:.0f} MB/s "
        f"(runs {', '.join(f'{run[0]:.2f}' for run in client_runs)})"
    )
    print(
        f"openssl enc -aes-128-cbc > /dev/null: {openssl_seconds:.2f} s = "
        f"{size / openssl_seconds / 1e6:.0f} MB/s "
        f"(runs {', '.join(f'{run[0]:.2f}' for run in openssl_runs)})"
    )
    print(f"ratio backup / openssl time: {client_seconds / openssl_seconds:.2f}x (goal <= 1.4x)")
    print(
        f"peak RSS: client {max(run[1] for run in client_runs):.1f} MiB, server {server_rss:.1f} MiB "
        "(goal < 64 MiB each)"
    )
    print(
        f"CPU seconds per run (least of {options.repeat}): client {min(run[2] for run in client_runs):.2f}, "
        f"server {min(server_cpu_runs):.2f}, openssl {min(run[2] for run in openssl_runs):.2f} "
        "(the backup's wall time is at least (client + server) / cores)"
    )
    if baseline_runs:
        best = min(run[0] for run in baseline_runs)
        runs = ", ".join(f"{run[0]:.2f}" for run in baseline_runs)
        print(
            f"baseline client -> baseline server ({options.baseline}): {best:.2f} s = "
            f"{best / openssl_seconds:.2f}x openssl (runs {runs}); "
            f"CPU seconds least: client {min(run[2] for run in baseline_runs):.2f}, "
            f"server {min(baseline_server_cpu_runs):.2f}; "
            f"peak RSS client {max(run[1] for run in baseline_runs):.1f} MiB"
        )
    wall, server_cpu = parallel
    print(
        f"{options.parallel} clients at once: {wall:.2f} s = "
        f"{options.parallel * size / wall / 1e6:.0f} MB/s in all "
        f"({options.parallel * client_seconds / wall:.2f}x one client's best rate); server used "
        f"{server_cpu / wall:.2f} cores on average"
    )


if __name__ == "__main__":
    main()
