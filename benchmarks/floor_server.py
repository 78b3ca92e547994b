"""The floor of a small session: a server that does all of the protocol's work except storage.

`bench_sessions.py --floor` measures this server beside the reference server, in the same
run. It speaks 2023A through `backupproto.engine.ServerConnection` on one asyncio event
loop, like the reference server. It does the per-session cryptography a real server must do:
it imports the client's RSA key, wraps a fresh AES key with OAEP, decrypts the file and
computes its cksum. It stores nothing: no database, no file, no fsync, no thread.

Its sessions/s is the most any design of the reference server can reach on this machine
with the benchmark's clients. Its server CPU per session is what the wire, the engine and
the cryptography cost. The rest of the reference server's CPU per session is storage and
the threads that keep storage off the loop.

It is not a server to use: it forgets every client at once, it checks no client id, and
it answers everything else with 2107.

Run: python benchmarks/floor_server.py [--port 0] (prints 'listening on HOST:PORT'; other
options of `backupproto.io.server_process` are accepted and ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backupproto import events
from backupproto.cksum import Cksum
from backupproto.crypto import CbcDecryptor, import_public_key, new_aes_key, wrap_aes_key
from backupproto.engine import ServerConnection
from backupproto.errors import BackupProtoError


class FloorSession(asyncio.Protocol):
    """One connection: feed the engine, answer each request at once."""

    def __init__(self) -> None:
        self.engine = ServerConnection()
        self.transport: asyncio.Transport | None = None
        self.aes_key: bytes | None = None
        self.file: events.SendFile | None = None
        self.decryptor: CbcDecryptor | None = None
        self.cksum = Cksum()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.engine.receive_data(data)
        try:
            self._answer()
        except BackupProtoError:  # malformed or unexpected input: 2107, then close
            self._reply(events.ServerError())
            self._close()

    def eof_received(self) -> bool:
        self.data_received(b"")
        return False

    def _answer(self) -> None:
        while (event := self.engine.next_event()) is not events.NEED_DATA:
            if isinstance(event, events.ConnectionClosed):
                self._close()
                return
            if isinstance(event, events.Register):
                self._reply(events.Registered(uuid.uuid4().bytes))
            elif isinstance(event, events.SendPublicKey):
                self.aes_key = new_aes_key()
                wrapped = wrap_aes_key(import_public_key(event.public_key), self.aes_key)
                self._reply(events.AesKey(event.client_id, wrapped))
            elif isinstance(event, events.SendFile) and self.aes_key is not None:
                self.file, self.decryptor, self.cksum = event, CbcDecryptor(self.aes_key), Cksum()
            elif isinstance(event, events.FileChunk) and self.decryptor is not None:
                self.cksum.update(self.decryptor.update(event.data))
            elif isinstance(event, events.FileEnd) and self.file is not None and self.decryptor is not None:
                self.cksum.update(self.decryptor.finalize())
                file = self.file
                self._reply(
                    events.FileReceived(file.client_id, file.content_size, file.file_name, self.cksum.value)
                )
            elif isinstance(event, events.CrcOk):
                self._reply(events.Acknowledged(event.client_id))
            else:
                self._reply(events.ServerError())
                self._close()
                return

    def _reply(self, response: events.Response) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.engine.send(response))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(FloorSession, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    options, _ = parser.parse_known_args()  # --data-dir, --log-level: from the server-process helper
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options.host, options.port))


if __name__ == "__main__":
    main()
