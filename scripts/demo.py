"""The main job on the embedded defaults: start `backup-server`, back up a file with `backup-client`.

    python scripts/demo.py [--workdir demo-run]

The server runs in WORKDIR/server (no port.info there, so it warns once and takes the
default port 1234); the client runs in WORKDIR/client with a transfer.info naming
127.0.0.1:1234, the client name `demo` and a sample file. The first run registers, later
runs reconnect with the saved me.info. At the end the stored copy is compared with the
original and both CRCs are printed as GNU `cksum` prints them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from backupproto.client_files import TRANSFER_INFO, format_transfer_info
from backupproto.io.server_process import ServerProcess

DEFAULT_PORT = 1234


def start_server(data_dir: Path) -> ServerProcess:
    try:
        server = ServerProcess.start(data_dir, port=None)
    except RuntimeError as error:
        raise SystemExit(f"demo: the server did not start; is port {DEFAULT_PORT} free?\n{error}") from None
    print(f"demo: server listening on {server.address}")
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("demo-run"), help="where everything is kept")
    workdir = parser.parse_args().workdir.resolve()
    server_dir, client_dir = workdir / "server", workdir / "client"
    server_dir.mkdir(parents=True, exist_ok=True)
    client_dir.mkdir(parents=True, exist_ok=True)
    sample = client_dir / "sample.txt"
    sample.write_bytes(b"backupproto demo: this line is backed up, encrypted on the wire.\n" * 2000)
    transfer_info = format_transfer_info(f"127.0.0.1:{DEFAULT_PORT}", "demo", [str(sample)])
    (client_dir / TRANSFER_INFO).write_text(transfer_info, encoding="ascii")

    server = start_server(server_dir)
    try:
        client = subprocess.run(
            [sys.executable, "-m", "reference_client", "--dir", str(client_dir)], check=False, timeout=120
        )
    finally:
        server.stop(timeout=30)
    if client.returncode != 0:
        print(f"demo: backup-client exited with {client.returncode}", file=sys.stderr)
        return client.returncode
    client_id = (client_dir / "me.info").read_text(encoding="ascii").splitlines()[1].strip().lower()
    stored = server_dir / client_id / sample.name
    same = stored.read_bytes() == sample.read_bytes()
    for path in (sample, stored):
        crc = subprocess.run(["cksum", str(path)], capture_output=True, text=True, check=True).stdout
        print(f"demo: cksum {crc.strip()}")
    verdict = "matches" if same else "DIFFERS FROM"
    print(f"demo: stored copy {verdict} the original: {os.path.relpath(stored)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
