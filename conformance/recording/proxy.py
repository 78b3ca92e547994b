"""The recording proxy: a transparent TCP relay that writes one session file per connection.

Every byte is forwarded exactly as received (recording happens beside the relay, never in its
path); each connection is recorded by a `ConnectionRecorder` and written with `files.save`.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from backupproto.address import Address
from backupproto.dialect import V3, Dialect
from backupproto.errors import BackupProtoError
from backupproto.io.channel import BYTES_ONLY, Channel, ChannelTimeout, ConnectionLost
from backupproto.io.listener import ThreadedListener
from backupproto.sessions import Direction

from .connection import ConnectionRecorder
from .files import save

RELAY = Channel[Any]


class Recorder:
    """The recording proxy: accepts on `listen`, relays to `target`, writes sessions into `out_dir`."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        out_dir: Path,
        *,
        client_dir: Path | None = None,
        name_prefix: str = "session-",
        connect_timeout: float = 10.0,
        dialect: Dialect = V3,
    ) -> None:
        self.dialect = dialect
        self.target = Address(*target)
        self.out_dir = Path(out_dir)
        self.client_dir = None if client_dir is None else Path(client_dir)
        self.name_prefix = name_prefix
        self.connect_timeout = connect_timeout
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._listener = ThreadedListener(listen, self._relay)
        self.address = self._listener.address
        self._written_changed = threading.Condition()
        self.written: list[Path] = []
        """Session files written so far, in the order their connections ended."""
        self.failures: list[str] = []

    def serve_forever(self) -> None:
        """Accept and relay connections until `stop()`."""
        self._listener.serve_forever()

    def start(self) -> Recorder:
        """Serve in a background thread."""
        self._listener.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting and wait for the open connections to end and be written."""
        self._listener.close(timeout)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Wait (at most `timeout`) until `count` session files were written; the files so far."""
        with self._written_changed:
            self._written_changed.wait_for(lambda: len(self.written) >= count, timeout)
            return list(self.written)

    def _relay(self, client_socket: socket.socket, number: int) -> None:
        name = f"{self.name_prefix}{number:04d}"
        client: RELAY = Channel(client_socket, BYTES_ONLY, timeout=None)
        try:
            server: RELAY = Channel.connect(
                self.target, BYTES_ONLY, connect_timeout=self.connect_timeout, timeout=None
            )
        except (ChannelTimeout, ConnectionLost) as error:
            self.failures.append(f"connection {number}: {error}")
            client.close()
            return
        with tempfile.TemporaryDirectory(prefix="bp-record-") as spool:
            recorder = ConnectionRecorder(name, Path(spool), dialect=self.dialect)
            pumps = [
                threading.Thread(
                    target=_pump, args=(client, server, recorder, Direction.REQUEST), daemon=True
                ),
                threading.Thread(
                    target=_pump, args=(server, client, recorder, Direction.RESPONSE), daemon=True
                ),
            ]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join()
            client.close()
            server.close()
            self._write(recorder, name)

    def _write(self, recorder: ConnectionRecorder, name: str) -> None:
        recorded = {
            "tool": "python -m conformance record",
            "target": str(self.target),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "client_dir": self.client_dir is not None,
        }
        if recorder.failure is not None:
            recorded["failure"] = recorder.failure
        try:
            session = recorder.finish(self.out_dir, self.client_dir, recorded)
            path = self.out_dir / f"{name}.json"
            save(session, path)
            with self._written_changed:
                self.written.append(path)
                self._written_changed.notify_all()
        except (OSError, BackupProtoError) as error:
            self.failures.append(f"{name}: cannot write the session: {error}")
        finally:
            recorder.discard_spools()


def _pump(source: RELAY, sink: RELAY, recorder: ConnectionRecorder, direction: Direction) -> None:
    """Forward `source` to `sink` unchanged, recording what passes; half-close at the end.

    Bytes are noted before they are forwarded, so a response is never recorded ahead of the
    request it answers; a failure of the recording never stops the relay.
    """
    recording = True
    while True:
        try:
            data = source.receive_bytes()
        except ConnectionLost:
            data = b""
        if not data:
            break
        if recording:
            recording = _note(recorder, direction, data)
        try:
            sink.send_bytes(data)
        except (ChannelTimeout, ConnectionLost):
            break
    if recording:
        _note(recorder, direction, None)
    with contextlib.suppress(ConnectionLost):
        sink.shutdown_write()


def _note(recorder: ConnectionRecorder, direction: Direction, data: bytes | None) -> bool:
    """Record bytes (None: end of stream); False if recording failed (the relay goes on)."""
    try:
        if data is None:
            recorder.closed(direction)
        else:
            recorder.data(direction, data)
    except (OSError, BackupProtoError) as error:
        recorder.failure = f"recording of the {direction.value}s stopped: {error}"
        return False
    return True
