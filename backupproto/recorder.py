"""The recording proxy: a transparent TCP relay that writes one session file per connection.

Every byte is forwarded exactly as received (recording happens beside the relay, never in
its path). Each direction is cut into messages by `sessions.Splitter`; a 1103's ciphertext
is hashed and spooled to a temporary file while it passes (constant memory), and decrypted
into the session's plaintext when the connection ends, with the AES key unwrapped from the
2102/2105 by the client's private key read from `--client-dir` (spec/sessions.md 5).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import crypto
from .cksum import Cksum
from .errors import BackupProtoError, CryptoError
from .sessions import (
    INLINE_LIMIT,
    Body,
    ClientKey,
    Content,
    Direction,
    End,
    Message,
    Plaintext,
    Session,
    Splitter,
    Start,
    save,
)

CHUNK = 64 * 1024
KEY_WAIT_SECONDS = 3.0
"""How long to wait for a first-time client to write its priv.key after the connection ended."""


@dataclass
class _OpenBody:
    """The body of the message being received in one direction."""

    message: Message
    hasher: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    spool: IO[bytes] | None = None
    inline: bytearray = field(default_factory=bytearray)


class ConnectionRecorder:
    """Records one connection: bytes of both directions in, a `Session` out (thread-safe)."""

    def __init__(self, name: str, spool_dir: Path, *, connection: int = 0) -> None:
        self.name = name
        self.spool_dir = spool_dir
        self.connection = connection
        self.messages: list[Message] = []
        self._splitters = {d: Splitter(d) for d in Direction}
        self._open: dict[Direction, _OpenBody | None] = dict.fromkeys(Direction)
        self._spools: dict[int, Path] = {}
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.failure: str | None = None

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def data(self, direction: Direction, data: bytes) -> None:
        """Bytes that passed in `direction`."""
        with self._lock:
            self._apply(direction, self._splitters[direction].feed(data))

    def closed(self, direction: Direction) -> None:
        """The sender of `direction` closed its side."""
        with self._lock:
            self._apply(direction, self._splitters[direction].end())
            self.messages.append(
                Message(len(self.messages), direction, self._now(), self.connection, close=True)
            )

    def _apply(self, direction: Direction, pieces: list[Start | Body | End]) -> None:
        for piece in pieces:
            if isinstance(piece, Start):
                message = Message(
                    len(self.messages),
                    direction,
                    self._now(),
                    self.connection,
                    raw=piece.raw,
                    decoded=piece.decoded,
                    error=piece.error,
                )
                self.messages.append(message)
                if piece.body_size:
                    self._open[direction] = _OpenBody(message)
            elif isinstance(piece, Body):
                self._body(direction, piece.data)
            else:
                self._end(direction, piece)

    def _body(self, direction: Direction, data: bytes) -> None:
        body = self._open[direction]
        assert body is not None
        body.hasher.update(data)
        body.size += len(data)
        if body.spool is None and len(body.inline) + len(data) <= INLINE_LIMIT:
            body.inline += data
            return
        if body.spool is None:
            path = self.spool_dir / f"{self.name}-{body.message.index}.wire"
            body.spool = path.open("wb")
            self._spools[body.message.index] = path
            body.spool.write(body.inline)
            body.inline = bytearray()
        body.spool.write(data)

    def _end(self, direction: Direction, end: End) -> None:
        body = self._open[direction]
        if body is None:
            return
        self._open[direction] = None
        message = body.message
        content = Content(size=body.size, sha256=body.hasher.hexdigest())
        if body.spool is None:
            content.ciphertext = bytes(body.inline)
        else:
            body.spool.close()
        if end.error is not None and message.error is None:
            message.error = end.error
        message.content = content

    def _wire_chunks(self, message: Message) -> Any:
        content = message.content
        assert content is not None
        if content.ciphertext is not None:
            yield content.ciphertext
            return
        with self._spools[message.index].open("rb") as handle:
            while piece := handle.read(CHUNK):
                yield piece

    def finish(self, out_dir: Path, client_dir: Path | None, recorded: dict[str, Any]) -> Session:
        """Close open bodies, decrypt file content if the client's key is known, build the session."""
        with self._lock:
            for direction in Direction:
                if self._open[direction] is not None:
                    self._end(direction, End())
            session = Session(name=self.name, messages=self.messages, recorded=recorded)
            _Decryption(self, session, out_dir, client_dir).run()
            for message in self.messages:
                content = message.content
                plain = None if content is None else content.plaintext
                if content is not None and plain is not None and plain.padded:
                    content.ciphertext = None  # the plaintext and the hash say it all
            return session

    def discard_spools(self) -> None:
        """Remove the temporary ciphertext files."""
        for path in self._spools.values():
            path.unlink(missing_ok=True)


class _Decryption:
    """Turns the spooled ciphertexts of one connection into plaintexts (spec/sessions.md 5.3)."""

    def __init__(
        self, recorder: ConnectionRecorder, session: Session, out_dir: Path, client_dir: Path | None
    ) -> None:
        self.recorder = recorder
        self.session = session
        self.out_dir = out_dir
        self.client_dir = client_dir
        self._keys: list[crypto.RsaKey] | None = None
        self._key_error: str | None = None
        self._public_keys: list[bytes] = []

    def run(self) -> None:
        aes_key: bytes | None = None
        key_error = "no AES key on this connection (no 2102/2105 before the 1103)"
        for message in self.session.messages:
            decoded = message.decoded
            if message.direction is Direction.REQUEST and decoded is not None and decoded["code"] == 1101:
                self._public_keys.append(bytes.fromhex(decoded["fields"]["public_key"]))
            if (
                message.direction is Direction.RESPONSE
                and decoded is not None
                and decoded["code"] in (2102, 2105)
            ):
                aes_key, key_error = self._unwrap(decoded["fields"])
            content = message.content
            if message.direction is Direction.REQUEST and content is not None and decoded is not None:
                if aes_key is None:
                    content.plaintext_error = key_error
                else:
                    self._decrypt(message, aes_key)

    def _private_keys(self) -> list[crypto.RsaKey]:
        if self._keys is not None:
            return self._keys
        if self.client_dir is None:
            self._key_error = "recorded without --client-dir: the client's private key is unknown"
            self._keys = []
            return self._keys
        deadline = time.monotonic() + KEY_WAIT_SECONDS
        while True:
            keys, error = _read_client_keys(self.client_dir, self._public_keys)
            if keys or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self._keys, self._key_error = keys, error
        return keys

    def _unwrap(self, fields: dict[str, Any]) -> tuple[bytes | None, str]:
        keys = self._private_keys()
        if not keys:
            return None, self._key_error or "no private key"
        wrapped = bytes.fromhex(fields["encrypted_aes_key"])
        errors = []
        for key in keys:
            try:
                aes_key = crypto.unwrap_aes_key(key, wrapped)
            except CryptoError as error:
                errors.append(str(error))
                continue
            der = base64.b64encode(crypto.export_private_key(key)).decode("ascii")
            client_id = fields["client_id"]
            if all(c.client_id != client_id for c in self.session.clients):
                self.session.clients.append(ClientKey(client_id, der, _name_of(self.session, client_id)))
            return aes_key, ""
        return None, "no private key in --client-dir unwraps the AES key: " + "; ".join(errors)

    def _decrypt(self, message: Message, aes_key: bytes) -> None:
        content = message.content
        assert content is not None
        decryptor = crypto.CbcDecryptor(aes_key)
        hasher, crc, size = hashlib.sha256(), Cksum(), 0
        with tempfile.NamedTemporaryFile("w+b", dir=self.recorder.spool_dir, delete=False) as plain:
            try:
                for piece in self.recorder._wire_chunks(message):
                    out = decryptor.update(piece)
                    plain.write(out)
                    hasher.update(out)
                    crc.update(out)
                    size += len(out)
                out = decryptor.finalize()
            except (CryptoError, ValueError) as error:
                Path(plain.name).unlink(missing_ok=True)
                content.plaintext_error = f"the content does not decrypt with the session's AES key: {error}"
                return
            plain.write(out)
            hasher.update(out)
            crc.update(out)
            size += len(out)
        plaintext = Plaintext(size=size, sha256=hasher.hexdigest(), cksum=crc.value)
        path = Path(plain.name)
        if size <= INLINE_LIMIT:
            plaintext.data = path.read_bytes()
            path.unlink()
        else:
            side = self.out_dir / f"{self.session.name}.files"
            side.mkdir(exist_ok=True)
            target = side / f"{message.index}.plain"
            shutil.move(str(path), target)
            plaintext.file = f"{side.name}/{target.name}"
            plaintext.base_dir = self.out_dir
        content.plaintext = plaintext


def _name_of(session: Session, client_id: str) -> str | None:
    for message in session.messages:
        decoded = message.decoded
        if decoded is not None and decoded.get("client_id") == client_id and "name" in decoded["fields"]:
            return str(decoded["fields"]["name"])
    return None


def _read_client_keys(folder: Path, public_keys: list[bytes]) -> tuple[list[crypto.RsaKey], str | None]:
    """The private keys in priv.key / me.info of `folder` and of its direct sub-folders (one client
    folder each); if a 1101 passed, only the key that belongs to its public key."""
    keys: list[crypto.RsaKey] = []
    errors: list[str] = []
    folders = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else [folder]
    for place in folders:
        for text, origin in _key_texts(place, errors):
            try:
                key = crypto.import_private_key(text)
            except BackupProtoError as error:
                errors.append(f"{origin}: {error}")
                continue
            if public_keys and crypto.public_key_der(key) not in public_keys:
                errors.append(f"{origin}: not the key of the public key sent in 1101")
                continue
            if all(key != known for known in keys):
                keys.append(key)
    return keys, None if keys else "no usable private key in --client-dir: " + "; ".join(errors)


def _key_texts(place: Path, errors: list[str]) -> list[tuple[str, Path]]:
    """The base64 private key texts of one client folder: priv.key, and me.info from line 3."""
    texts: list[tuple[str, Path]] = []
    priv, me = place / "priv.key", place / "me.info"
    if priv.exists():
        try:
            texts.append((priv.read_text(encoding="ascii"), priv))
        except (OSError, UnicodeDecodeError) as error:
            errors.append(f"{priv}: {error}")
    if me.exists():
        try:
            lines = me.read_text(encoding="ascii").splitlines()
            if len(lines) >= 3:
                texts.append(("".join(lines[2:]), me))
        except (OSError, UnicodeDecodeError) as error:
            errors.append(f"{me}: {error}")
    if not texts:
        errors.append(f"{place}: no priv.key or me.info")
    return texts


# --- the proxy -----------------------------------------------------------------------------


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
    ) -> None:
        self.target = target
        self.out_dir = Path(out_dir)
        self.client_dir = None if client_dir is None else Path(client_dir)
        self.name_prefix = name_prefix
        self.connect_timeout = connect_timeout
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._listener = socket.create_server(listen)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._count = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.written: list[Path] = []
        """Session files written so far, in the order their connections ended."""
        self.failures: list[str] = []

    def serve_forever(self) -> None:
        """Accept and relay connections until `stop()`."""
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                break
            with self._lock:
                self._count += 1
                number = self._count
            thread = threading.Thread(target=self._relay, args=(client, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def start(self) -> Recorder:
        """Serve in a background thread."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting and wait for the open connections to end and be written."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Wait until `count` session files were written; the files."""
        deadline = time.monotonic() + timeout
        while len(self.written) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.written)

    def _relay(self, client: socket.socket, number: int) -> None:
        name = f"{self.name_prefix}{number:04d}"
        try:
            server = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError as error:
            self.failures.append(f"connection {number}: cannot reach {self.target}: {error}")
            client.close()
            return
        server.settimeout(None)
        with tempfile.TemporaryDirectory(prefix="bp-record-") as spool:
            recorder = ConnectionRecorder(name, Path(spool))
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
            recorded = {
                "tool": "python -m backupproto record",
                "target": f"{self.target[0]}:{self.target[1]}",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "client_dir": self.client_dir is not None,
            }
            if recorder.failure is not None:
                recorded["failure"] = recorder.failure
            try:
                session = recorder.finish(self.out_dir, self.client_dir, recorded)
                path = self.out_dir / f"{name}.json"
                save(session, path)
                self.written.append(path)
            except (OSError, BackupProtoError) as error:
                self.failures.append(f"{name}: cannot write the session: {error}")
            finally:
                recorder.discard_spools()


def _pump(
    source: socket.socket, sink: socket.socket, recorder: ConnectionRecorder, direction: Direction
) -> None:
    """Forward `source` to `sink` unchanged, recording what passes; half-close at the end.

    Bytes are noted before they are forwarded, so a response is never recorded ahead of the
    request it answers; a failure of the recording never stops the relay.
    """
    recording = True
    while True:
        try:
            data = source.recv(CHUNK)
        except OSError:
            data = b""
        if not data:
            break
        if recording:
            recording = _note(recorder, direction, data)
        try:
            sink.sendall(data)
        except OSError:
            break
    if recording:
        _note(recorder, direction, None)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


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


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)
