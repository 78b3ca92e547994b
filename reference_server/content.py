"""A 1103's content received in a pool thread straight from the socket: receive, decrypt, cksum, write.

While a file's content streams, the session stops the event loop's reading of the connection
(`wire.Wire.hold`) and runs `ContentPump.run` in the thread pool. The thread takes each
piece with one `recv` (the kernel's copy into a fresh bytes object, which the engine hands
on as it is), feeds the engine and gives each `FileChunk` to `files.Upload.write` (decrypt
into a reused buffer, cksum, write): no Python copy, and no trip through the event loop,
its futures and its wake-up pipe per piece. When the socket has been quiet for
`CONTENT_WAIT` seconds the thread returns `NEED_DATA` and the loop waits for the next bytes
as for any message, so a slow client holds no thread; after `CONTENT_SLICE` seconds of work
it returns `SLICE_DONE` and the session queues the pump again behind the pool's other jobs,
so uploads cannot keep every pool thread from registrations and verdicts. The message
deadline and the stall timeout (spec 13.11) are checked before every wait, with the
session's own rule.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable
from typing import Final

from backupproto.engine import ServerConnection
from backupproto.errors import RemoteProtocolError
from backupproto.events import NEED_DATA, Event, FileChunk

from .files import Upload

CONTENT_WAIT: Final = 0.05
"""Seconds a pool thread waits for more content before handing the connection back to the loop."""
CONTENT_SLICE: Final = 0.25
"""Seconds of content work on one pool job before the pump queues itself again (fairness)."""
SLICE_DONE: Final = object()
"""`ContentPump.run`'s result when its slice ended with content still due: run it again."""
RECV_SIZE: Final = 256 * 1024
"""Bytes asked of each receive: the most content held before decryption, about."""


class ContentStalled(Exception):
    """The message deadline or the stall timeout passed while content was due."""


class EngineRefused(Exception):
    """The engine found the stream malformed (a protocol error, not a refusal of the file)."""

    def __init__(self, error: RemoteProtocolError) -> None:
        super().__init__(str(error))
        self.error = error


class ContentPump:
    """Moves one upload's content from the socket through the engine into the upload.

    `seconds_left()` is the session's deadline rule (how long the next wait may last; <= 0:
    passed); `counted(n)` is told of every n content bytes received, which extends it.
    Only the thread running `run` touches the engine, the upload and the socket's input
    meanwhile; `wake` (any thread) makes it return at once (shutdown).
    """

    def __init__(
        self,
        sock: socket.socket,
        engine: ServerConnection,
        upload: Upload,
        seconds_left: Callable[[], float],
        counted: Callable[[int], None],
    ) -> None:
        self.sock = sock
        self.engine = engine
        self.upload = upload
        self.seconds_left = seconds_left
        self.counted = counted
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    def run(self, first: bytes = b"") -> Event | object:
        """Write `first` (content the engine handed out already), then go on until the engine
        yields something other than content: that event (FileEnd); NEED_DATA when the socket
        stayed quiet for `CONTENT_WAIT`; SLICE_DONE after `CONTENT_SLICE`. Raises
        ContentStalled, EngineRefused, OSError (connection lost) and the upload's errors
        (ReferenceServerError, CryptoError)."""
        if first:
            self._write(first)
        engine = self.engine
        ends = time.monotonic() + CONTENT_SLICE
        while True:
            try:
                event = engine.next_event()
            except RemoteProtocolError as error:
                raise EngineRefused(error) from None
            if isinstance(event, FileChunk):
                self._write(event.data)
                if time.monotonic() > ends:
                    return SLICE_DONE
            elif event is NEED_DATA:
                if not self._receive():
                    return NEED_DATA
            else:
                return event

    def _write(self, data: bytes) -> None:
        self.counted(len(data))
        self.upload.write(data)

    def _receive(self) -> bool:
        """Feed the engine what the socket has (b"" at its end); False if it stayed quiet."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            left = self.seconds_left()
            if left <= 0:
                raise ContentStalled from None
            if not self._poll.poll(int(min(left, CONTENT_WAIT) * 1000) + 1):
                if self.seconds_left() <= 0:
                    raise ContentStalled from None
                return False
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:  # woken without data (spurious): the loop waits instead
                return False
        self.engine.receive_data(data)
        return True

    def wake(self) -> None:
        """Make `run` return soon: no more input on this socket (shutdown)."""
        with contextlib.suppress(OSError):  # already shut or closed
            self.sock.shutdown(socket.SHUT_RD)
