"""One blocking TCP connection driving a sans-I/O receiver: the only socket-to-engine loop.

The receiver is anything with ``receive_data(bytes)`` (``b""``: the peer closed its side) and
``next_event()`` returning an event or `NEED_DATA`: `ClientConnection`, `ServerConnection`, or
the session splitter's adapter. `Channel.next_event` feeds it from the socket until it has an
event; timeouts raise `ChannelTimeout`, socket failures `ConnectionLost`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any, Final, Generic, Protocol, Self, TypeVar

from backupproto.address import Address
from backupproto.events import NEED_DATA

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
        `ConnectionLost` if the socket fails or the stream ended without an event.
        """
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            event = self.receiver.next_event()
            if event is not NEED_DATA:
                return event
            if self.peer_closed:
                raise ConnectionLost("the stream ended", ConnectionResetError(0, "end of stream"))
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ChannelTimeout("no complete message arrived", wait)
            try:
                data = self.receive_bytes(left)
            except ChannelTimeout:
                raise ChannelTimeout("no complete message arrived", wait) from None
            if data:
                self.receiver.receive_data(data)
            else:
                self.feed_end()

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
