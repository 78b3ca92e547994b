"""backupproto.io.server_process: start a server program, wait for its listening line, stop it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from backupproto.engine import ClientConnection
from backupproto.events import Register, Registered
from backupproto.io.channel import EngineChannel
from backupproto.io.server_process import ServerProcess

# A stand-in server: records its arguments, listens on a free port, prints the line, serves nothing.
FAKE = """
import socket, sys, pathlib
args = sys.argv[1:]
pathlib.Path(args[args.index("--data-dir") + 1], "argv.txt").write_text(" ".join(args))
with socket.create_server(("127.0.0.1", 0)) as listener:
    print("starting", flush=True)
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        listener.accept()[0].close()
"""


def test_reference_server_starts_listens_and_stops(tmp_path: Path) -> None:
    server = ServerProcess.start(tmp_path / "data")
    try:
        assert server.alive() and server.port > 0 and server.host == "127.0.0.1"
        engine = ClientConnection()
        with EngineChannel.connect(server.address, engine, connect_timeout=10, timeout=10) as channel:
            channel.send(Register(bytes(16), "process-helper"))
            assert isinstance(channel.next_event(), Registered)
    finally:
        code = server.stop()
    assert code == 0 and not server.alive()
    assert "Traceback" not in server.log()


def test_arguments_and_output(tmp_path: Path) -> None:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE)
    data = tmp_path / "data"
    server = ServerProcess.start(data, "--extra", "1", command=[sys.executable, str(script)])
    try:
        assert (data / "argv.txt").read_text() == f"--port 0 --data-dir {data} --extra 1"
        assert server.lines[0] == "starting"
        assert server.target == server.address
    finally:
        server.kill()
    assert not server.alive()


def test_a_program_that_exits_without_listening_is_reported(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('no port today'); sys.exit(3)"]
    with pytest.raises(RuntimeError) as caught:
        ServerProcess.start(tmp_path / "data", command=command)
    assert "did not print 'listening on HOST:PORT'" in str(caught.value)
    assert "no port today" in str(caught.value)


def test_a_program_that_never_listens_is_stopped(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('thinking', flush=True); time.sleep(60)"]
    with pytest.raises(RuntimeError, match=r"within 0\.5 s; stdout: \['thinking'\]"):
        ServerProcess.start(tmp_path / "data", command=command, timeout=0.5)
