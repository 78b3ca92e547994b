"""A small batch client of the protocol with one deliberate fault (``--fault NAME``), for the
client-mode self-test (tests/test_conformance_clients.py). Without a fault it behaves as spec 8.4
says. Built on backupproto's ClientConnection, schemas and crypto; a fault alters what they make.

Run in a working folder holding transfer.info (and me.info, priv.key for a returning client).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

from backupproto import crypto
from backupproto.cksum import Cksum
from backupproto.client_files import (
    ME_INFO,
    PRIV_KEY,
    Identity,
    format_me_info,
    format_private_key,
    parse_me_info,
)
from backupproto.dialect import DIALECT_2023A, DIALECTS, Dialect, dialect_named
from backupproto.engine import ClientConnection
from backupproto.errors import BackupProtoError
from backupproto.events import (
    NEED_DATA,
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
    Request,
    Response,
    SendFile,
    SendPublicKey,
    ServerError,
)
from backupproto.schemas import V3_SCHEMAS, schemas_for

FAULTS = {
    "none": "no fault: follows spec 8.4",
    "never-retry-crc": "gives up (1106) on the first CRC mismatch",
    "retry-forever": "answers every CRC mismatch with 1105 and a resend, never 1106",
    "four-sends": "one send too many: 1106 only after the 4th mismatching send",
    "no-1106": "stops after the third mismatch without sending 1106",
    "chunked-cbc": "encrypts each 64 KiB chunk as a separate, padded CBC stream",
    "no-padding": "adds no padding block when the size is a multiple of 16",
    "re-register": "ignores me.info and registers (1100) on every run",
    "ignore-2106": "takes 2106 for an approval and sends the file",
    "big-endian": "writes payload_size big-endian",
    "wrong-content-size": "puts the plaintext size in content_size",
    "no-retry-2107": "gives up on the first 2107 (no retry)",
    "retry-timeouts": "retries after a response timeout like after a 2107",
    "version-2": "puts version 2 in every request header",
    "hang": "never exits after the backup",
    "crash-on-binary": "crashes in its CRC code on a byte >= 0x80",
    "total-first": "2024: writes total_packets before packet_number",
    "from-0": "2024: numbers its packets from 0",
    "per-packet-encryption": "2024: encrypts and pads each packet's chunk on its own",
    "per-packet-iv": "2024: starts a new CBC chain (zero IV) in each packet, padding only the last",
    "per-packet-content-size": "2024: puts the packet's own length in content_size",
    "aes-128": "2024: encrypts with only the first 16 bytes of the 32-byte key",
    "reconnect-in-2022C": "2022C: a returning client sends 1102, a reconnect 2022C does not have",
    "2023-responses": "a mixed dialect: the dialect's request codes, 2023A's response codes",
}
PACKET_FAULTS = ("total-first", "from-0", "per-packet-encryption", "per-packet-iv", "per-packet-content-size")
CHUNK = 1 << 16
MAX_SENDS = 3
SCHEMAS = V3_SCHEMAS


class Failed(Exception):
    """A retryable error (2107, closed connection, timeout)."""


def speaks(dialect: Dialect, fault: str) -> Dialect:
    """The dialect the client's engine uses: `dialect`, or a mix for the 2023-responses fault."""
    if fault == "2023-responses":
        return replace(dialect, name=f"{dialect.name}+2023A-responses", responses=DIALECT_2023A.responses)
    return dialect


class Client:
    def __init__(self, fault: str, timeout: float, dialect: Dialect) -> None:
        self.fault, self.timeout, self.dialect = fault, timeout, speaks(dialect, fault)
        global SCHEMAS
        SCHEMAS = schemas_for(self.dialect)
        lines = [line.strip() for line in Path("transfer.info").read_text().splitlines() if line.strip()]
        host, _, port = lines[0].rpartition(":")
        self.address = (host, int(port))
        self.name = lines[1]
        self.files = [Path(line) for line in lines[2:]]
        self.identity: Identity | None = None
        me_info = Path(ME_INFO)
        if me_info.exists() and fault != "re-register":
            self.identity = parse_me_info(me_info.read_text())

    # --- wire ---------------------------------------------------------------------------------

    def connect(self) -> None:
        self.engine = ClientConnection(self.dialect)
        self.sock = socket.create_connection(self.address, timeout=self.timeout)

    def send(self, event: Request | FileChunk | FileEnd) -> None:
        data = self.engine.send(event)
        if isinstance(event, Request):
            data = self.alter(event, data)
        self.sock.sendall(data)

    def alter(self, event: Request, data: bytes) -> bytes:
        size = SCHEMAS.request_header_size
        header = SCHEMAS.parse_request_header(data[:size])
        payload_size, rest, version = header.payload_size, data[size:], None
        if self.fault == "big-endian":
            payload_size = int.from_bytes(payload_size.to_bytes(4, "little"), "big")
        if self.fault == "version-2":
            version = 2
        if self.fault == "wrong-content-size" and isinstance(event, SendFile):
            plain = self.plain_size
            fields = {
                "content_size": plain,
                "file_name": event.file_name,
                "payload_client_id": event.client_id,
            }
            rest = bytes(SCHEMAS.send_file_prefix.build(fields))
            payload_size = SCHEMAS.send_file_prefix_size + plain
        return SCHEMAS.build_request_header(event.client_id, header.code, payload_size, version) + rest

    def receive(self) -> Response:
        while True:
            event = self.engine.next_event()
            if isinstance(event, ServerError):
                raise Failed("server responded with an error")
            if isinstance(event, Response):
                return event
            if isinstance(event, ConnectionClosed):
                raise Failed("connection closed")
            assert event is NEED_DATA
            self.engine.receive_data(self.sock.recv(1 << 16))

    def request(self, event: Request) -> Response:
        self.send(event)
        return self.receive()

    # --- flow ---------------------------------------------------------------------------------

    def session(self) -> tuple[bytes, bytes]:
        """(client id, AES key) after registering or reconnecting."""
        if self.identity is not None and self.fault == "reconnect-in-2022C":
            name, client_id, key = self.identity
            self.sock.sendall(V3_SCHEMAS.build_request(Reconnect.code, client_id, {"name": name}))
            self.receive()  # 2022C has no 1102: the server closes
        if self.identity is not None and not self.dialect.has_reconnect:
            name, client_id, key = self.identity
            keyed = self.request(SendPublicKey(client_id, name, crypto.public_key_der(key)))
            assert isinstance(keyed, AesKey)
            return client_id, self.unwrap(key, keyed.encrypted_aes_key)
        if self.identity is not None:
            name, client_id, key = self.identity
            answer = self.request(Reconnect(client_id, name))
            if isinstance(answer, ReconnectApproved):
                return client_id, self.unwrap(key, answer.encrypted_aes_key)
            assert isinstance(answer, ReconnectDenied)
            if self.fault == "ignore-2106":
                file = self.files[0]
                size = crypto.encrypted_size(file.stat().st_size)
                prefix = SCHEMAS.send_file_prefix.build({"content_size": size, "file_name": file.name})
                header = SCHEMAS.build_request_header(client_id, SendFile.code, len(prefix) + size)
                self.sock.sendall(header + bytes(prefix) + bytes(size))
                self.receive()  # the server's 2107 to a 1103 out of turn
        answer = self.request(Register(bytes(16), self.name))
        if not isinstance(answer, Registered):
            print("Fatal: the name is taken (2101)", file=sys.stderr)
            raise SystemExit(3)
        key = crypto.generate_private_key()
        self.identity = Identity(self.name, answer.client_id, key)
        Path(PRIV_KEY).write_text(format_private_key(key))
        Path(ME_INFO).write_text(format_me_info(self.identity))
        keyed = self.request(SendPublicKey(answer.client_id, self.name, crypto.public_key_der(key)))
        assert isinstance(keyed, AesKey)
        return answer.client_id, self.unwrap(key, keyed.encrypted_aes_key)

    def unwrap(self, key: crypto.RsaKey, wrapped: bytes) -> bytes:
        aes_key = crypto.unwrap_aes_key(key, wrapped, self.dialect.aes_key_size)
        return aes_key[:16] if self.fault == "aes-128" else aes_key

    def send_file(self, client_id: bytes, aes_key: bytes, path: Path) -> bool:
        limit = {"four-sends": 4}.get(self.fault, MAX_SENDS)
        send = 0
        while True:
            send += 1
            ours = self.stream(client_id, aes_key, path)
            answer = self.receive()
            assert isinstance(answer, FileReceived)
            if self.fault == "crash-on-binary" and max(path.read_bytes(), default=0) >= 0x80:
                raise RuntimeError("cksum table index out of range")  # the planted crash
            if answer.cksum == ours:
                self.request(CrcOk(client_id, path.name))
                return True
            if self.fault == "no-1106" and send == MAX_SENDS:
                return False
            if self.fault == "never-retry-crc" or (send >= limit and self.fault != "retry-forever"):
                self.request(CrcGiveUp(client_id, path.name))
                return False
            self.send(CrcRetry(client_id, path.name))

    def stream(self, client_id: bytes, aes_key: bytes, path: Path) -> int:
        plain = path.read_bytes()
        self.plain_size = len(plain)
        pieces = [plain[start : start + CHUNK] for start in range(0, len(plain), CHUNK)] or [b""]
        if self.fault == "chunked-cbc":
            parts = [crypto.CbcEncryptor(aes_key) for _ in pieces]
            cipher = [part.update(piece) + part.finalize() for part, piece in zip(parts, pieces, strict=True)]
        elif self.fault == "no-padding" and len(plain) % 16 == 0 and plain:
            encryptor = crypto.CbcEncryptor(aes_key)
            cipher = [encryptor.update(piece) for piece in pieces]
            cipher[-1] += encryptor.update(b"")  # whole blocks only: no padding block
        else:
            encryptor = crypto.CbcEncryptor(aes_key)
            cipher = [encryptor.update(piece) for piece in pieces] + [encryptor.finalize()]
        orig = len(plain) if self.dialect.packetised else None
        if self.fault in PACKET_FAULTS:
            self.send_packets(client_id, aes_key, path.name, pieces)
            return Cksum(plain).value
        self.send(SendFile(client_id, sum(map(len, cipher)), path.name, orig))
        for part in cipher:
            self.send(FileChunk(part))
        self.send(FileEnd())
        return Cksum(plain).value

    def send_packets(self, client_id: bytes, aes_key: bytes, file_name: str, pieces: list[bytes]) -> None:
        """2024 packets with a planted fault (the engine is fed the honest stream, its bytes dropped)."""
        honest = crypto.CbcEncryptor(aes_key)
        stream = b"".join(honest.update(piece) for piece in pieces) + honest.finalize()
        plain_size = sum(map(len, pieces))
        if self.fault in ("per-packet-encryption", "per-packet-iv"):
            parts = []
            for number, piece in enumerate(pieces, start=1):
                alone = crypto.CbcEncryptor(aes_key)
                padded = self.fault == "per-packet-encryption" or number == len(pieces)
                parts.append(alone.update(piece) + (alone.finalize() if padded else b""))
        else:
            parts = [stream[start : start + CHUNK] for start in range(0, len(stream), CHUNK)]
        self.engine.send(SendFile(client_id, len(stream), file_name, plain_size))
        self.engine.send(FileChunk(stream))
        self.engine.send(FileEnd())
        total, size = len(parts), sum(map(len, parts))
        for index, part in enumerate(parts):
            number = index if self.fault == "from-0" else index + 1
            first, second = (total, number) if self.fault == "total-first" else (number, total)
            values = {
                "content_size": len(part) if self.fault == "per-packet-content-size" else size,
                "orig_file_size": plain_size,
                "packet_number": first,
                "total_packets": second,
                "file_name": file_name,
            }
            self.sock.sendall(SCHEMAS.build_send_file_start(client_id, values, len(part)) + part)

    def run(self, retries: int, delay: float) -> int:
        if self.fault == "no-retry-2107":
            retries = 0
        failures = 0
        ok = True
        pending = list(self.files)
        self.sock = socket.socket()
        while pending:
            try:
                self.connect()
                client_id, aes_key = self.session()
                while pending:
                    ok = self.send_file(client_id, aes_key, pending[0]) and ok
                    pending.pop(0)
            except TimeoutError as error:
                print(f"server responded with an error: no response: {error}", file=sys.stderr)
                if self.fault != "retry-timeouts":  # spec 8.4: a response timeout is not retried
                    print("Fatal: the server did not answer within the response timeout", file=sys.stderr)
                    return 3
                failures += 1
                if failures > retries:
                    print(f"Fatal: giving up after {failures} attempts: {error}", file=sys.stderr)
                    return 3
            except (Failed, OSError, BackupProtoError) as error:
                failures += 1
                print(f"server responded with an error: {error}", file=sys.stderr)
                if failures > retries:
                    print(f"Fatal: giving up after {failures} attempts: {error}", file=sys.stderr)
                    return 3
                time.sleep(delay * 2 ** (failures - 1))
            finally:
                self.sock.close()
        while self.fault == "hang":
            time.sleep(3600)
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fault", choices=sorted(FAULTS), default="none")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--retry-delay", type=float, default=0.05)
    parser.add_argument("--dialect", choices=sorted(DIALECTS), default=DIALECT_2023A.name)
    args = parser.parse_args()
    return Client(args.fault, args.timeout, dialect_named(args.dialect)).run(args.retries, args.retry_delay)


if __name__ == "__main__":
    sys.exit(main())
