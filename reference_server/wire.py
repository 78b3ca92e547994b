"""A connection's bytes on the event loop: received straight into one reused buffer.

`Wire` is an asyncio buffered protocol: the kernel copies received bytes directly into the
connection's buffer (recv_into), and `read()` hands them out as one bytes object, one copy
in all, where asyncio's streams make three (recv, append to their buffer, slice out) and
allocate twice per read. The buffer starts at 16 KiB when bytes arrive, doubles while
reads fill it (up to the maximum the session sets) and is dropped when the session
goes idle, so an idle connection holds no buffer. Reading pauses while the buffer is full
(flow control), and while another thread reads the socket itself (`hold()`: a 1103's
content, `content.ContentPump`); writes are the transport's, with `drain()` waiting while
the transport's buffer is above its high-water mark. Both waits take a deadline of their
own (one timer, armed only if they have to wait: a send that need not wait costs none),
cheaper than wrapping every read and send in `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast


class Wire(asyncio.BufferedProtocol):
    """One connection: `read()` and `write()`/`drain()`, half-close and abort."""

    def __init__(self, max_size: int, first_size: int = 16 * 1024) -> None:
        self._max_size = max_size
        self._first_size = min(first_size, max_size)
        self._buffer: bytearray | None = None
        """Allocated when bytes arrive, doubled while reads fill it, dropped by `release()`."""
        self._filled = 0
        self._eof = False
        self._lost: Exception | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiters: list[asyncio.Future[None]] = []
        """The reads and drains waiting (`_wait`): every protocol event wakes them, each checks
        its own condition again."""
        self.transport: asyncio.Transport | None = None

    # -- protocol callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buffer is None:
            self._buffer = bytearray(self._first_size)
        return memoryview(self._buffer)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        assert self._buffer is not None
        if self._filled == len(self._buffer):
            if len(self._buffer) < self._max_size:  # bulk data: a bigger buffer, fewer reads
                bigger = bytearray(min(2 * len(self._buffer), self._max_size))
                bigger[: self._filled] = self._buffer
                self._buffer = bigger
            elif self.transport is not None:
                self.transport.pause_reading()
                self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # stay half-open: a response may still have to go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._closed = True
        self._lost = exc
        self._writing_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, waiting: Callable[[], bool], timeout: float | None) -> None:
        """Wait while `waiting()` holds, woken by the protocol callbacks; TimeoutError once
        `timeout` seconds have passed (None: no deadline)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] | None = None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        timer = None if timeout is None else loop.call_later(timeout, expire)
        try:
            while waiting():
                if expired:
                    raise TimeoutError
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.remove(waiter)
        finally:
            if timer is not None:
                timer.cancel()

    # -- the session's side -----------------------------------------------------------------

    async def read(self, timeout: float | None = None) -> bytes:
        """The bytes received since the last read (waits for some, TimeoutError after `timeout`
        seconds); b"" once the peer closed."""
        if not self._filled:
            self._resume_reading()  # after hold()
            if not self._eof:
                await self._wait(self._nothing_received, timeout)
        if not self._filled:
            if self._lost is not None:
                raise ConnectionError(str(self._lost) or type(self._lost).__name__)
            return b""
        data = self._take()
        self._resume_reading()
        return data

    def _nothing_received(self) -> bool:
        return not self._filled and not self._eof

    def _take(self) -> bytes:
        if not self._filled:
            return b""
        assert self._buffer is not None
        data = bytes(memoryview(self._buffer)[: self._filled])
        self._filled = 0
        return data

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def hold(self) -> bytes:
        """Stop reading from the socket (another thread reads it now); the bytes received so far.

        `read()` resumes reading (or `unhold()` does)."""
        if not self._reading_paused and self.transport is not None and not self._closed:
            self.transport.pause_reading()
            self._reading_paused = True
        return self._take()

    def unhold(self) -> None:
        """Read from the socket again after `hold()`."""
        self._resume_reading()

    def release(self) -> None:
        """Drop the buffer while nothing is in it (an idle connection then costs no buffer)."""
        if not self._filled:
            self._buffer = None

    def write(self, data: bytes) -> None:
        if self._closed or self.transport is None:
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait while the transport holds more unsent bytes than its high-water mark
        (TimeoutError after `timeout` seconds)."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._writing_paused:
            await self._wait(self._unsent, timeout)
            if self._closed:
                raise ConnectionResetError("the connection is closed")

    def _unsent(self) -> bool:
        return self._writing_paused and not self._closed

    def write_eof(self) -> None:
        """Half-close: no more bytes from us (the peer can still send)."""
        if self.transport is not None and not self._closed and self.transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
