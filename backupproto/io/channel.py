"""One blocking TCP connection driving a sans-I/O receiver: the only socket-to-engine loop.

The receiver is anything with ``receive_data(bytes)`` (``b""``: the peer closed its side) and
``next_event()`` returning an event or `NEED_DATA`: `ClientConnection`, `ServerConnection`,
the session `Splitter`, or `ByteStream` (raw bytes by count, for peers whose framing is not
trusted: the conformance suite's `ByteChannel`). `Channel.next_event` feeds it from the socket
until it has an event; timeouts raise `ChannelTimeout`, the end of the stream `StreamEnded`,
socket failures `ConnectionLost`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any, Final, Generic, Protocol, Self, TypeVar

from backupproto.address import Address
from backupproto.events import NEED_DATA, _NeedData

RECEIVE_SIZE: Final = 64 * 1024


class ChannelTimeout(TimeoutError):
    """Nothing (or not enough) arrived, or nothing could be sent, within `seconds`."""

    def __init__(self, what: str, seconds: float | None, received: bytes = b"") -> None:
        super().__init__(f"{what} within {seconds:g} s" if seconds is not None else what)
        self.seconds = seconds
        self.received = received


class ConnectionLost(ConnectionError):
    """The connection failed (refused, reset, broken pipe); `reason` is the system's short text."""

    def __init__(self, what: str, error: OSError) -> None:
        self.reason = error.strerror or str(error) or type(error).__name__
        super().__init__(f"{what}: {self.reason}")
        self.error = error


class StreamEnded(ConnectionLost):
    """The peer closed its side before the receiver had a complete event."""

    def __init__(self) -> None:
        super().__init__("the stream ended", ConnectionResetError(0, "end of stream"))


class Receiver(Protocol):
    """The sans-I/O side a channel drives."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Any: ...


class Engine(Receiver, Protocol):
    """A receiver that also turns the events we send into bytes (the protocol engines)."""

    def send(self, event: Any) -> bytes: ...


class _BytesOnly:
    """The receiver of a channel used byte by byte (`receive_bytes` / `send_bytes`: relays)."""

    def receive_data(self, data: bytes) -> None:
        """Ignore the bytes: the caller handles them."""

    def next_event(self) -> Any:
        return NEED_DATA


BYTES_ONLY: Final = _BytesOnly()
"""Receiver for channels that only move bytes."""

class ByteStream:
    """A receiver that keeps the raw bytes and hands them out by count, trusting no framing.

    `want(size)`: `next_event` then returns exactly `size` bytes once they are buffered; bytes
    beyond stay buffered for the next read. `ended` is True once the end of stream was fed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._wanted: int | None = None
        self.ended = False

    def receive_data(self, data: bytes) -> None:
        """Keep `data` (``b""``: the stream ended)."""
        if data:
            self._buffer += data
        else:
            self.ended = True

    def want(self, size: int | None) -> None:
        """The count `next_event` waits for (None: nothing is wanted)."""
        self._wanted = size

    def next_event(self) -> bytes | _NeedData:
        """The wanted bytes, once buffered, or NEED_DATA."""
        size = self._wanted
        if size is None or len(self._buffer) < size:
            return NEED_DATA
        self._wanted = None
        return self.take(size)

    @property
    def pending(self) -> bytes:
        """A copy of the bytes buffered and not taken yet."""
        return bytes(self._buffer)

    def take(self, size: int | None = None) -> bytes:
        """Up to `size` buffered bytes (None: all of them), removed from the buffer."""
        end = len(self._buffer) if size is None else min(size, len(self._buffer))
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data


R = TypeVar("R", bound=Receiver)
E = TypeVar("E", bound=Engine)


class Channel(Generic[R]):
    """A connected socket and the receiver it feeds; `timeout` bounds each wait (None: forever)."""

    def __init__(self, sock: socket.socket, receiver: R, *, timeout: float | None) -> None:
        self.sock = sock
        self.receiver = receiver
        self.timeout = timeout
        self.peer_closed = False
        """True once the peer's end of stream was fed to the receiver."""
        sock.settimeout(timeout)

    @classmethod
    def connect(
        cls, address: tuple[str, int], receiver: R, *, connect_timeout: float, timeout: float | None
    ) -> Self:
        """Open a TCP connection (no Nagle delay); `ChannelTimeout` or `ConnectionLost` if it fails."""
        where = f"cannot connect to {Address(*address)}"
        try:
            sock = socket.create_connection(address, timeout=connect_timeout)
        except TimeoutError:
            raise ChannelTimeout(f"{where}: no answer", connect_timeout) from None
        except OSError as error:
            raise ConnectionLost(where, error) from None
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, receiver, timeout=timeout)

    # --- sending ------------------------------------------------------------------------------

    def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of `data`; `ChannelTimeout` if the peer accepts nothing for `timeout`."""
        if not data:
            return
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise ChannelTimeout("the peer accepted no data", self.timeout) from None
        except OSError as error:
            raise ConnectionLost("sending failed", error) from None

    def shutdown_write(self) -> None:
        """Half-close: the peer reads end of stream, we can still receive."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            raise ConnectionLost("half-closing failed", error) from None

    # --- receiving ----------------------------------------------------------------------------

    def receive_bytes(self, timeout: float | None = None, size: int = RECEIVE_SIZE) -> bytes:
        """One read from the socket (``b""``: the peer closed); `timeout` overrides the default once."""
        wait = self.timeout if timeout is None else timeout
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            raise ChannelTimeout("nothing arrived", wait) from None
        except OSError as error:
            raise ConnectionLost("receiving failed", error) from None
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        return data

    def receive_all(self, timeout: float | None = None) -> bytes:
        """Everything the peer sends until it closes (a reset ends it too); `timeout` bounds the
        whole wait (`ChannelTimeout`, with what arrived in `received`). The bytes bypass the receiver."""
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        received = bytearray()
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            not_closed = ChannelTimeout("the peer did not close the connection", wait, bytes(received))
            if left is not None and left <= 0:
                raise not_closed
            try:
                data = self.receive_bytes(left)
            except ConnectionLost as lost:
                if isinstance(lost.error, ConnectionResetError):
                    return bytes(received)
                raise
            except ChannelTimeout:
                raise not_closed from None
            if not data:
                return bytes(received)
            received += data

    def feed_end(self) -> None:
        """Tell the receiver that the stream ended (after a reset, say), once."""
        if not self.peer_closed:
            self.peer_closed = True
            self.receiver.receive_data(b"")

    def next_event(self, timeout: float | None = None) -> Any:
        """The receiver's next event, reading as needed; `timeout` bounds the whole wait.

        Never returns NEED_DATA: `ChannelTimeout` if no event is complete in time,
        `ConnectionLost` if the socket fails or the stream ended without an event. An engine's
        `PAUSED` (it waits for our own response) is returned as it is: send the response, then
        ask again; nothing is read meanwhile.
        """
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            event = self.receiver.next_event()
            if event is not NEED_DATA:
                return event
            if self.peer_closed:
                raise StreamEnded
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ChannelTimeout("no complete message arrived", wait)
            try:
                self.receive_more(left)
            except ChannelTimeout:
                raise ChannelTimeout("no complete message arrived", wait) from None

    def receive_more(self, timeout: float | None = None) -> bool:
        """One read from the socket fed to the receiver (the end of stream fed once); False once
        the peer closed. For a caller that reads on while its receiver has no event to give (a
        server whose engine is PAUSED, and that still watches for a close); errors as
        `receive_bytes`."""
        if self.peer_closed:
            return False
        data = self.receive_bytes(timeout)
        if data:
            self.receiver.receive_data(data)
        else:
            self.feed_end()
        return bool(data)

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EngineChannel(Channel[E]):
    """A channel around a protocol engine: also sends events."""

    @property
    def engine(self) -> E:
        """The engine this channel drives."""
        return self.receiver

    def send(self, event: Any) -> None:
        """Build `event` with the engine and send its bytes."""
        self.send_bytes(self.receiver.send(event))


class ByteChannel(Channel[ByteStream]):
    """A channel of raw bytes read by count, for peers whose framing is not trusted (the
    conformance suite and its profile): exact reads that keep what arrived on a timeout or an
    end of stream, and lenient reads that take whatever arrives in time."""

    @classmethod
    def around(cls, sock: socket.socket, *, timeout: float | None) -> ByteChannel:
        """A byte channel on a connected socket (no Nagle delay)."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, ByteStream(), timeout=timeout)

    def receive_exact(self, size: int, timeout: float | None = None) -> bytes:
        """Exactly `size` bytes within `timeout`. `ChannelTimeout` (with the bytes so far in
        `received`; they stay buffered), `StreamEnded` or `ConnectionLost` (the stream counts as
        ended; the bytes so far stay in `receiver`) when they do not all arrive."""
        self.receiver.want(size)
        try:
            data: bytes = self.next_event(timeout)
        except ChannelTimeout as silence:
            received = self.receiver.pending
            raise ChannelTimeout("no complete message arrived", silence.seconds, received) from None
        except ConnectionLost:
            self.feed_end()
            raise
        finally:
            self.receiver.want(None)
        return data

    def receive_up_to(self, size: int, timeout: float | None = None) -> bytes:
        """What arrives within `timeout`, at most `size` bytes (buffered ones first); fewer on
        silence, at the end of the stream or when the connection fails (then it counts as ended)."""
        if not self.peer_closed:
            with contextlib.suppress(ChannelTimeout, ConnectionLost):
                return self.receive_exact(size, timeout)
        return self.receiver.take(size)
