"""A small protocol-v3 server with one deliberate fault, to prove the conformance suite catches it.

    python tests/broken_servers/server.py --fault zlib-crc --port 0 --data-dir DIR

prints ``listening on HOST:PORT`` like the reference server. ``--fault none`` is a correct
(if minimal: memory only, no server.db) server. Built on backupproto.engine, schemas, crypto
and cksum; the faults are byte surgery or wrong logic on top, each named in FAULTS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

from construct import Int32ul, Struct
from Crypto.Cipher import AES

from backupproto.cksum import Cksum
from backupproto.crypto import CbcDecryptor, import_public_key, new_aes_key, wrap_aes_key
from backupproto.dialect import RequestCode, ResponseCode
from backupproto.engine import ServerConnection, event_fields
from backupproto.errors import BackupProtoError, RemoteProtocolError
from backupproto.events import (
    NEED_DATA,
    PAUSED,
    Acknowledged,
    AesKey,
    ConnectionClosed,
    CrcGiveUp,
    CrcOk,
    CrcRetry,
    FileChunk,
    FileEnd,
    FileReceived,
    Reconnect,
    ReconnectApproved,
    ReconnectDenied,
    Register,
    Registered,
    RegistrationFailed,
    Response,
    SendFile,
    SendPublicKey,
    ServerError,
)
from backupproto.schemas import NameField, Schemas
from backupproto.states import State

FAULTS = {
    "none": "a correct server",
    "zlib-crc": "2103 carries zlib.crc32 of the plaintext instead of the POSIX cksum",
    "big-endian": "response code and payload_size written big-endian",
    "version-2": "responses carry version 2",
    "taken-name-2100": "a taken name is registered again (2100 with a new id)",
    "silent-duplicate": "a taken name gets no response at all",
    "oaep-sha256": "the AES key is wrapped with OAEP SHA-256 instead of SHA-1",
    "accept-small-key": "public keys of any size are accepted (512-bit too)",
    "answer-1105": "1105 CRC_RETRY is answered with 2104",
    "path-as-given": "file names are not checked and written as given (paths, '..')",
    "die-on-malformed": "the process exits on a malformed request",
    "close-after-each": "the connection is closed after every response",
    "zero-padded": "every response is zero-padded to 1024 bytes",
    "plaintext-size": "2103 content_size is the plaintext size",
    "missing-client-id": "2104 and 2106 are sent without their client_id",
    "payload-size-zero": "2100 says payload_size 0 and sends the 16-byte id anyway",
    "chunked-cbc": "content decrypted in independent 4096-byte CBC chunks (IV 0 each)",
    "replace-key": "a second 1101 replaces the client's public key (a SHOULD violation)",
}


class _LenientFileName(NameField):
    """Fault path-as-given: a file name field that accepts anything up to the first NUL."""

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        return obj.split(b"\x00", 1)[0].decode("latin-1")


def _lenient_schemas() -> Schemas:
    schemas = Schemas()
    file_name = _LenientFileName(255, file_name=True)
    schemas.send_file_prefix = Struct("content_size" / Int32ul, "file_name" / file_name)  # type: ignore[misc]
    for code in (RequestCode.CRC_OK, RequestCode.CRC_RETRY, RequestCode.CRC_GIVE_UP):
        schemas.requests[code] = Struct("file_name" / file_name)
    return schemas


class _ChunkedDecryptor:
    """Fault chunked-cbc: every 4096 bytes decrypted as a separate CBC stream from IV 0."""

    def __init__(self, key: bytes) -> None:
        self.key, self.pending, self.out = key, bytearray(), bytearray()

    def update(self, data: bytes) -> bytes:
        self.pending += data
        done = b""
        while len(self.pending) > 4096:
            done += AES.new(self.key, AES.MODE_CBC, iv=bytes(16)).decrypt(bytes(self.pending[:4096]))
            del self.pending[:4096]
        return done

    def finalize(self) -> bytes:
        last = AES.new(self.key, AES.MODE_CBC, iv=bytes(16)).decrypt(bytes(self.pending))
        return last[: -last[-1]] if last and 1 <= last[-1] <= 16 else last


class Registry:
    """Clients in memory: id -> [name, public key or None]."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[bytes, list[Any]] = {}
        self.names: set[str] = set()


class Session:
    """One connection of the broken server."""

    def __init__(self, sock: socket.socket, server: BrokenServer) -> None:
        self.sock, self.server, self.fault = sock, server, server.fault
        self.conn = ServerConnection()
        if self.fault == "path-as-given":
            self.conn.schemas = _lenient_schemas()
        self.aes_key: bytes | None = None
        self.file: Any = None

    def run(self) -> None:
        try:
            self._loop()
            self.sock.shutdown(socket.SHUT_WR)  # then drain briefly, so that the close sends no reset
            self.sock.settimeout(0.5)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()

    def _loop(self) -> None:
        while True:
            data = self.sock.recv(65536)
            self.conn.receive_data(data)
            while True:
                try:
                    event = self.conn.next_event()
                except RemoteProtocolError:
                    if self.fault == "die-on-malformed":
                        os._exit(3)
                    self._send(ServerError())
                    return
                if event is NEED_DATA or event is PAUSED:  # PAUSED: a request left unanswered on purpose
                    break
                if isinstance(event, ConnectionClosed):
                    return
                if not self._handle(event):
                    return
            if not data:
                return

    def _send(self, event: Response, *, wrong: dict[str, Any] | None = None) -> bool:
        """Send a response (with the fault's byte surgery); False when the connection must end."""
        data = self.conn.send(event)
        fault = self.fault
        if wrong is not None:
            data = self.conn.schemas.build_response(event.code, {**event_fields(event), **wrong})
        if fault == "big-endian":
            data = data[:1] + data[1:3][::-1] + data[3:7][::-1] + data[7:]
        elif fault == "version-2":
            data = b"\x02" + data[1:]
        elif fault == "zero-padded":
            data = data.ljust(1024, b"\x00")
        elif fault == "missing-client-id" and event.code in (
            ResponseCode.ACKNOWLEDGED,
            ResponseCode.RECONNECT_DENIED,
        ):
            data = self.conn.schemas.build_response_header(event.code, 0)
        elif fault == "payload-size-zero" and event.code is ResponseCode.REGISTERED:
            data = self.conn.schemas.build_response_header(event.code, 0) + data[7:]
        self.sock.sendall(data)
        return not isinstance(event, ServerError) and fault != "close-after-each"

    def _handle(self, event: Any) -> bool:
        registry = self.server.registry
        if isinstance(event, Register):
            with registry.lock:
                taken = event.name in registry.names
                if taken and self.fault == "silent-duplicate":
                    return True
                if taken and self.fault != "taken-name-2100":
                    return self._send(RegistrationFailed())
                client_id = uuid.uuid4().bytes
                registry.by_id[client_id] = [event.name, None]
                registry.names.add(event.name)
            return self._send(Registered(client_id))
        if isinstance(event, SendPublicKey):
            record = registry.by_id.get(event.client_id)
            has_key = record is not None and record[1] is not None and self.fault != "replace-key"
            if record is None or record[0] != event.name or has_key:
                return self._send(ServerError())
            try:
                key = import_public_key(
                    event.public_key, bits=None if self.fault == "accept-small-key" else 1024
                )
            except BackupProtoError:
                return self._send(ServerError())
            record[1] = key
            return self._send(AesKey(event.client_id, self._new_key(key)))
        if isinstance(event, Reconnect):
            record = registry.by_id.get(event.client_id)
            if record is None or record[0] != event.name or record[1] is None:
                return self._send(ReconnectDenied(event.client_id))
            return self._send(ReconnectApproved(event.client_id, self._new_key(record[1])))
        if isinstance(event, SendFile):
            return self._begin_file(event)
        if isinstance(event, FileChunk):
            plain = self.file["decryptor"].update(event.data)
            self.file["crc"].update(plain)
            self.file["zlib"] = zlib.crc32(plain, self.file["zlib"])
            self.file["out"].write(plain)
            return True
        if isinstance(event, FileEnd):
            return self._end_file()
        if isinstance(event, CrcRetry):
            if self.fault == "answer-1105":
                self.sock.sendall(
                    self.conn.schemas.build_response(
                        ResponseCode.ACKNOWLEDGED, {"client_id": event.client_id}
                    )
                )
            return True
        if isinstance(event, CrcOk | CrcGiveUp):
            return self._send(Acknowledged(event.client_id))
        return self._send(ServerError())

    def _new_key(self, public_key: Any) -> bytes:
        self.aes_key = new_aes_key()
        return wrap_aes_key(public_key, self.aes_key, "sha256" if self.fault == "oaep-sha256" else "sha1")

    def _begin_file(self, event: SendFile) -> bool:
        assert self.aes_key is not None
        folder = self.server.data_dir / event.client_id.hex()
        folder.mkdir(parents=True, exist_ok=True)
        path = os.path.join(folder, event.file_name)
        decryptor: Any = (
            _ChunkedDecryptor(self.aes_key) if self.fault == "chunked-cbc" else CbcDecryptor(self.aes_key)
        )
        self.file = {
            "event": event,
            "path": path,
            "decryptor": decryptor,
            "crc": Cksum(),
            "zlib": 0,
            "size": 0,
        }
        self.file["out"] = open(path + ".part", "wb")  # noqa: SIM115 - closed in _end_file
        return True

    def _end_file(self) -> bool:
        file, event = self.file, self.file["event"]
        try:
            last = file["decryptor"].finalize()
        except BackupProtoError:
            file["out"].close()
            os.unlink(file["path"] + ".part")
            return self._send(ServerError())
        file["crc"].update(last)
        file["zlib"] = zlib.crc32(last, file["zlib"])
        file["out"].write(last)
        file["out"].close()
        os.replace(file["path"] + ".part", file["path"])
        crc = file["zlib"] if self.fault == "zlib-crc" else file["crc"].value
        reply = FileReceived(event.client_id, event.content_size, event.file_name, crc)
        if self.fault == "path-as-given":  # the name cannot pass the strict encoder: raw field bytes
            self.conn.conversation.response_sent(reply, State.VERIFYING)
            raw = event.file_name.encode("latin-1").ljust(255, b"\x00")
            fields = {**event_fields(reply), "file_name": raw}
            self.sock.sendall(self.conn.schemas.build_response(reply.code, fields))
            return True
        wrong = {"content_size": file["crc"].length} if self.fault == "plaintext-size" else None
        return self._send(reply, wrong=wrong)


class BrokenServer:
    """Accept loop: one thread per connection."""

    def __init__(self, fault: str, data_dir: Path) -> None:
        self.fault, self.data_dir, self.registry = fault, data_dir, Registry()

    def serve(self, port: int) -> None:
        listener = socket.create_server(("127.0.0.1", port))
        host, bound = listener.getsockname()[:2]
        print(f"listening on {host}:{bound}", flush=True)
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=Session(sock, self).run, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=sorted(FAULTS), default="none")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    options = parser.parse_args()
    options.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        BrokenServer(options.fault, options.data_dir).serve(options.port)


if __name__ == "__main__":
    main()
