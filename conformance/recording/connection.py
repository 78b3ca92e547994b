"""Recording one connection: bytes of both directions in, a `Session` out.

Each direction is cut into messages by the session `Splitter`; a 1103's ciphertext is hashed
and spooled to a temporary file while it passes (constant memory), then decrypted into the
session's plaintext when the connection ends (`decryption`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from backupproto.dialect import V3, Dialect
from backupproto.schemas import schemas_for
from backupproto.sessions import (
    INLINE_LIMIT,
    Body,
    Content,
    Direction,
    End,
    Message,
    Session,
    Splitter,
    Start,
)

from .decryption import Decryption

CHUNK = 64 * 1024


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

    def __init__(self, name: str, spool_dir: Path, *, connection: int = 0, dialect: Dialect = V3) -> None:
        self.name = name
        self.dialect = dialect
        self.spool_dir = spool_dir
        self.connection = connection
        self.messages: list[Message] = []
        self._splitters = {d: Splitter(d, schemas_for(dialect)) for d in Direction}
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

    def wire_chunks(self, message: Message) -> Iterator[bytes]:
        """The wire bytes of a message's content, from memory or from its spool file."""
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
            session = Session(name=self.name, messages=self.messages, recorded=recorded, dialect=self.dialect)
            Decryption(self, session, out_dir, client_dir).run()
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
