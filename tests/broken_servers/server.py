"""A small protocol-v3 server with deliberate faults, to prove the conformance suite catches them.

    python tests/broken_servers/server.py --fault zlib-crc --port 0 --data-dir DIR
    python tests/broken_servers/server.py --fault zero-padded,md5-crc --port 0 --data-dir DIR

prints ``listening on HOST:PORT`` like the reference server. ``--fault none`` is a correct
(if minimal: memory only, no server.db) server. Several faults at once are given comma-separated.
Built on backupproto.engine, schemas, crypto and cksum; the faults are byte surgery or wrong
logic on top, each named in FAULTS.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import socket
import sqlite3
import threading
import time
import uuid
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from construct import Int32ul, Struct
from Crypto.Cipher import AES

from backupproto.cksum import Cksum
from backupproto.crypto import CbcDecryptor, import_public_key, new_aes_key, wrap_aes_key
from backupproto.dialect import DIALECT_2023A, DIALECTS, Dialect, RequestCode, ResponseCode, dialect_named
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
from backupproto.schemas import V3_SCHEMAS, NameField, Schemas
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
    "md5-crc": "2103 carries the first 4 bytes of md5(plaintext), big-endian, instead of the cksum",
    "hang-on-1104": "an out-of-turn 1104 (no file being verified) locks the whole server up for good",
    "one-at-a-time": "the listening socket is closed while a connection is served (re-bound after it)",
    "stop-listening": "the listening socket is closed after the first connection (never re-bound)",
    "open-after-2107": "the connection stays open after 2107 (the server reads and discards)",
    "verified-text": "server.db stores Verified as TEXT 'TRUE'/'FALSE'",
    "mute": "connections are accepted and never answered",
    "aes-128": "a 16-byte AES key whatever the dialect (2024A/C: reading aes-128-in-2024)",
    "total-first": "2024: packets read with total_packets before packet_number (reading total-first)",
    "reconnect-in-2022C": "2022C: 1102 (not a 2022C code) is answered 2106 (reading reconnect-in-2022C)",
}
_SESSION_FIELDS = ("state", "client_id", "file")
"""Conversation fields a one-request-per-connection server keeps per client between connections."""


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
        self.key, self.pending, self.first_chunk = key, bytearray(), True

    def update(self, data: bytes) -> bytes:
        self.pending += data
        done = b""
        while len(self.pending) > 4096:
            done += AES.new(self.key, AES.MODE_CBC, iv=bytes(16)).decrypt(bytes(self.pending[:4096]))
            del self.pending[:4096]
            self.first_chunk = False
        return done

    def finalize(self) -> bytes:
        """The last chunk (from IV 0, like every chunk). Bad padding is refused (not this fault),
        unless the chunking garbled it (a last chunk of one block): that is kept unpadded."""
        last = CbcDecryptor(self.key)
        try:
            return last.update(bytes(self.pending)) + last.finalize()
        except BackupProtoError:
            if self.first_chunk:
                raise
            return AES.new(self.key, AES.MODE_CBC, iv=bytes(16)).decrypt(bytes(self.pending))


def _out_of_turn_1104(error: RemoteProtocolError) -> bool:
    """hang-on-1104: the engine refused a 1104 because no file is being verified."""
    return f"{RequestCode.CRC_OK.name} ({int(RequestCode.CRC_OK)}) is not allowed" in str(error)


class Registry:
    """Clients in memory: id -> [name, public key or None]."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[bytes, list[Any]] = {}
        self.names: set[str] = set()


class Session:
    """One connection of the broken server."""

    def __init__(self, sock: socket.socket, server: BrokenServer) -> None:
        self.sock, self.server, self.faults = sock, server, server.faults
        self.conn = ServerConnection(server.dialect)
        if "path-as-given" in self.faults:
            self.conn.schemas = _lenient_schemas()
        self.aes_key: bytes | None = None
        self.file: Any = None
        self.first_bytes: bytearray | None = bytearray()
        """close-after-each: the first bytes of the connection, until its header names the client."""

    def run(self) -> None:
        try:
            if "mute" in self.faults:
                while self.sock.recv(65536):
                    pass
                return
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
            self._restore_session(data)
            self.conn.receive_data(data)
            while True:
                try:
                    event = self.conn.next_event()
                except RemoteProtocolError as error:
                    if "die-on-malformed" in self.faults:
                        os._exit(3)
                    if "hang-on-1104" in self.faults and _out_of_turn_1104(error):
                        self.server.hung.set()
                        while True:
                            time.sleep(3600)
                    if "reconnect-in-2022C" in self.faults and "1102" in str(error):
                        denied = {"client_id": bytes(16)}
                        self.sock.sendall(V3_SCHEMAS.build_response(ResponseCode.RECONNECT_DENIED, denied))
                        return
                    self._send(ServerError())
                    return
                if event is NEED_DATA or event is PAUSED:  # PAUSED: a request left unanswered on purpose
                    break
                if isinstance(event, ConnectionClosed):
                    return
                if self.server.hung.is_set():  # hang-on-1104: every connection is stuck for good
                    while True:
                        time.sleep(3600)
                if not self._handle(event):
                    return
            if not data:
                return

    def _send(self, event: Response, *, wrong: dict[str, Any] | None = None) -> bool:
        """Send a response (with the fault's byte surgery); False when the connection must end."""
        data = self.conn.send(event)
        faults = self.faults
        if wrong is not None:
            data = self.conn.schemas.build_response(event.code, {**event_fields(event), **wrong})
        if "big-endian" in faults:
            data = data[:1] + data[1:3][::-1] + data[3:7][::-1] + data[7:]
        if "version-2" in faults:
            data = b"\x02" + data[1:]
        if "missing-client-id" in faults and event.code in (
            ResponseCode.ACKNOWLEDGED,
            ResponseCode.RECONNECT_DENIED,
        ):
            data = self.conn.schemas.build_response_header(event.code, 0)
        if "payload-size-zero" in faults and event.code is ResponseCode.REGISTERED:
            data = self.conn.schemas.build_response_header(event.code, 0) + data[7:]
        if "zero-padded" in faults:
            data = data.ljust(1024, b"\x00")
        self._save_session()  # before the bytes leave: the client may reconnect at once
        self.sock.sendall(data)
        if isinstance(event, ServerError) and "open-after-2107" in faults:
            while self.sock.recv(65536):  # never closes: waits for the client to
                pass
        return not isinstance(event, ServerError) and "close-after-each" not in faults

    def _save_session(self) -> None:
        """close-after-each: the client's conversation state outlives the connection."""
        client_id = self.conn.conversation.client_id
        if "close-after-each" in self.faults and client_id is not None:
            saved = {name: getattr(self.conn.conversation, name) for name in _SESSION_FIELDS}
            self.server.sessions[client_id] = (saved, self.aes_key, self.file)

    def _restore_session(self, data: bytes) -> None:
        """close-after-each: a new connection continues the conversation of the client it names."""
        if "close-after-each" not in self.faults or self.first_bytes is None:
            return
        self.first_bytes += data
        size = self.conn.schemas.request_header_size
        if len(self.first_bytes) < size:
            return
        header = self.conn.schemas.request_header.parse(bytes(self.first_bytes[:size]))
        self.first_bytes = None
        kept = self.server.sessions.get(bytes(header.client_id))
        if kept is None or header.code in (RequestCode.REGISTER, RequestCode.RECONNECT):
            return
        saved, self.aes_key, self.file = kept
        for name, value in saved.items():
            setattr(self.conn.conversation, name, value)

    def _handle(self, event: Any) -> bool:
        registry = self.server.registry
        if isinstance(event, Register):
            with registry.lock:
                taken = event.name in registry.names
                if taken and "silent-duplicate" in self.faults:
                    return True
                if taken and "taken-name-2100" not in self.faults:
                    return self._send(RegistrationFailed())
                client_id = uuid.uuid4().bytes
                registry.by_id[client_id] = [event.name, None, None]
                registry.names.add(event.name)
            self.server.store_client(client_id, event.name)
            return self._send(Registered(client_id))
        if isinstance(event, SendPublicKey):
            record = registry.by_id.get(event.client_id)
            has_key = record is not None and record[1] is not None and "replace-key" not in self.faults
            returning = has_key and record is not None and self._returning_2022c(record, event)
            if returning and record is not None:  # 2022C: a returning client re-sends its key (17.4)
                wrapped = self._new_key(record[1])
                self.server.store_key(event.client_id, None, self.aes_key)
                return self._send(AesKey(event.client_id, wrapped))
            if record is None or record[0] != event.name or has_key:
                return self._send(ServerError())
            try:
                key = import_public_key(
                    event.public_key, bits=None if "accept-small-key" in self.faults else 1024
                )
            except BackupProtoError:
                return self._send(ServerError())
            record[1], record[2] = key, bytes(event.public_key)
            wrapped = self._new_key(key)
            self.server.store_key(event.client_id, event.public_key, self.aes_key)
            return self._send(AesKey(event.client_id, wrapped))
        if isinstance(event, Reconnect):
            record = registry.by_id.get(event.client_id)
            if record is None or record[0] != event.name or record[1] is None:
                return self._send(ReconnectDenied(event.client_id))
            wrapped = self._new_key(record[1])
            self.server.store_key(event.client_id, None, self.aes_key)
            return self._send(ReconnectApproved(event.client_id, wrapped))
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
            if "answer-1105" in self.faults:
                self.sock.sendall(
                    self.conn.schemas.build_response(
                        ResponseCode.ACKNOWLEDGED, {"client_id": event.client_id}
                    )
                )
            return True
        if isinstance(event, CrcOk | CrcGiveUp):
            self.server.store_file(event.client_id, event.file_name, verified=isinstance(event, CrcOk))
            return self._send(Acknowledged(event.client_id))
        return self._send(ServerError())

    def _returning_2022c(self, record: list[Any], event: SendPublicKey) -> bool:
        """2022C has no reconnect: a keyed client re-sending its name and key opens a session (17.4)."""
        same = record[0] == event.name and record[2] == bytes(event.public_key)
        return not self.server.dialect.has_reconnect and same

    def _new_key(self, public_key: Any) -> bytes:
        size = 16 if "aes-128" in self.faults else self.server.dialect.aes_key_size
        self.aes_key = new_aes_key(size)
        return wrap_aes_key(public_key, self.aes_key, "sha256" if "oaep-sha256" in self.faults else "sha1")

    def _begin_file(self, event: SendFile) -> bool:
        assert self.aes_key is not None
        folder = self.server.data_dir / event.client_id.hex()
        folder.mkdir(parents=True, exist_ok=True)
        path = os.path.join(folder, event.file_name)
        decryptor: Any = (
            _ChunkedDecryptor(self.aes_key) if "chunked-cbc" in self.faults else CbcDecryptor(self.aes_key)
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
        self.server.store_file(event.client_id, event.file_name, verified=False)
        crc = file["zlib"] if "zlib-crc" in self.faults else file["crc"].value
        if "md5-crc" in self.faults:
            with open(file["path"], "rb") as stored:
                crc = int.from_bytes(hashlib.md5(stored.read()).digest()[:4], "big")
        reply = FileReceived(event.client_id, event.content_size, event.file_name, crc)
        if "path-as-given" in self.faults:  # the name cannot pass the strict encoder: raw field bytes
            self.conn.conversation.response_sent(reply, State.VERIFYING)
            raw = event.file_name.encode("latin-1").ljust(255, b"\x00")
            fields = {**event_fields(reply), "file_name": raw}
            self.sock.sendall(self.conn.schemas.build_response(reply.code, fields))
            return True
        wrong = {"content_size": file["crc"].length} if "plaintext-size" in self.faults else None
        return self._send(reply, wrong=wrong)


class BrokenServer:
    """Accept loop: one thread per connection."""

    def __init__(self, faults: set[str], data_dir: Path, dialect: Dialect = DIALECT_2023A) -> None:
        self.faults, self.data_dir, self.registry = faults, data_dir, Registry()
        if "total-first" in faults:
            fields = list(dialect.send_file_fields)
            first, second = fields.index("packet_number"), fields.index("total_packets")
            fields[first], fields[second] = fields[second], fields[first]
            dialect = replace(dialect, send_file_fields=tuple(fields))
        self.dialect = dialect
        self.hung = threading.Event()
        self.sessions: dict[bytes, tuple[dict[str, Any], bytes | None, Any]] = {}
        self.db: sqlite3.Connection | None = None
        if "verified-text" in faults:
            self.db = sqlite3.connect(data_dir / "server.db", check_same_thread=False, isolation_level=None)
            self.db.executescript(_SCHEMA)

    def store_client(self, client_id: bytes, name: str) -> None:
        if self.db is not None:
            with self.registry.lock:
                self.db.execute(
                    "INSERT INTO clients (ID, Name, LastSeen) VALUES (?, ?, datetime('now'))",
                    (client_id, name),
                )

    def store_key(self, client_id: bytes, public_key: bytes | None, aes_key: bytes | None) -> None:
        if self.db is not None:
            with self.registry.lock:
                self.db.execute(
                    "UPDATE clients SET PublicKey = coalesce(?, PublicKey), AESKey = ? WHERE ID = ?",
                    (public_key, aes_key, client_id),
                )

    def store_file(self, client_id: bytes, file_name: str, *, verified: bool) -> None:
        """verified-text: Verified is written as the text 'TRUE' or 'FALSE'."""
        if self.db is not None:
            with self.registry.lock:
                self.db.execute(
                    "INSERT OR REPLACE INTO files (ID, FileName, PathName, Verified) VALUES (?, ?, ?, ?)",
                    (client_id, file_name, f"{client_id.hex()}/{file_name}", "TRUE" if verified else "FALSE"),
                )

    def serve(self, port: int) -> None:
        listener = socket.create_server(("127.0.0.1", port))
        host, bound = listener.getsockname()[:2]
        print(f"listening on {host}:{bound}", flush=True)
        while True:
            sock, _ = listener.accept()
            if self.faults & {"one-at-a-time", "stop-listening"}:  # a server that re-binds per accept
                listener.close()
                Session(sock, self).run()
                if "stop-listening" in self.faults:
                    while True:
                        time.sleep(3600)
                listener = socket.create_server(("127.0.0.1", bound))
                continue
            threading.Thread(target=Session(sock, self).run, daemon=True).start()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    ID BLOB(16) PRIMARY KEY, Name VARCHAR(255) NOT NULL UNIQUE, PublicKey BLOB(160),
    LastSeen TEXT NOT NULL, AESKey BLOB(16));
CREATE TABLE IF NOT EXISTS files (
    ID BLOB(16) NOT NULL REFERENCES clients(ID), FileName VARCHAR(255) NOT NULL,
    PathName VARCHAR(255) NOT NULL, Verified TEXT NOT NULL DEFAULT 'FALSE', PRIMARY KEY (ID, FileName));
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", default="none", help=f"comma-separated, of: {', '.join(sorted(FAULTS))}")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dialect", default="2023A", help=f"one of {', '.join(DIALECTS)} (default 2023A)")
    options = parser.parse_args()
    try:
        dialect = dialect_named(options.dialect)
    except ValueError as error:
        parser.error(str(error))
    faults = set(options.fault.split(","))
    unknown = faults - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(sorted(FAULTS))}")
    options.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        BrokenServer(faults, options.data_dir, dialect).serve(options.port)


if __name__ == "__main__":
    main()
