"""One replayed connection: the channel around a session `Splitter` of the incoming direction."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from backupproto.io.channel import Channel, ChannelTimeout, ConnectionLost
from backupproto.schemas import Schemas
from backupproto.sessions import Body, Direction, End, Message, Splitter, Start

from .content import content_chunks
from .report import ReplayMismatch

BODY_KEEP = 64 * 1024
"""Bytes of an unexpected body kept for the report."""


@dataclass
class Received:
    """One message read from the peer, or the end of its stream (`closed`)."""

    start: Start | None = None
    body: bytearray = field(default_factory=bytearray)
    body_size: int = 0
    end: End | None = None
    closed: bool = False

    def describe(self) -> Any:
        """The message as a report shows it."""
        if self.closed:
            return "the peer closed the connection"
        assert self.start is not None
        if self.start.decoded is not None:
            return self.start.decoded
        return {"hex": self.start.raw.hex(), "error": self.start.error, "body_size": self.body_size}


class Peer:
    """One connection: a channel whose receiver splits the incoming direction, and the session's AES key."""

    def __init__(self, channel: Channel[Splitter], timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout
        self.aes_key: bytes | None = None
        self.send_failed: str | None = None
        self.file: Any = None
        """What a half keeps of the file whose packets are in transit (2024A/C), between packets."""

    @classmethod
    def over(cls, sock: socket.socket, incoming: Direction, timeout: float, schemas: Schemas) -> Peer:
        """A peer on an accepted socket, splitting with the session dialect's `schemas`."""
        return cls(Channel(sock, Splitter(incoming, schemas), timeout=timeout), timeout)

    def send(self, data: bytes) -> None:
        """Send bytes; a failure is only noted (the peer may have answered and closed: its answer decides)."""
        if self.send_failed is not None or not data:
            return
        try:
            self.channel.send_bytes(data)
        except (ChannelTimeout, ConnectionLost) as error:
            self.send_failed = str(error)

    def send_as_recorded(self, message: Message) -> bool:
        """Play a close, or a message that did not decode, exactly as recorded (with its body);
        False when the message must be rebuilt for this run instead."""
        if message.close:
            self.shutdown_write()
            return True
        if message.decoded is not None:
            return False
        self.send(message.raw)
        if message.content is not None:
            for chunk in content_chunks(message.content, None, False, f"message {message.index}"):
                self.send(chunk)
        return True

    def receive_like(
        self,
        session: str,
        message: Message,
        expected: Any,
        role: str,
        on_body: Callable[[bytes], None] | None = None,
    ) -> dict[str, Any] | None:
        """Receive where `message` was recorded from the `role` ("server" or "client") and check the
        envelope: a close where one was recorded, a message where one was, an undecodable one byte
        for byte. The decoded message to compare field by field, or None when all is checked;
        `ReplayMismatch` (showing `expected`) otherwise."""
        kind = "response" if role == "server" else "request"

        def fail(reason: str, actual: Any) -> NoReturn:
            raise ReplayMismatch(session, message.index, reason, expected, actual)

        received = self.receive(on_body)
        if received is None:
            fail(f"no {kind} within {self.timeout:g} s", "nothing")
        if message.close:
            if not received.closed:
                fail(f"the {role} did not close the connection", received.describe())
            return None
        if received.closed or received.start is None:
            why = f" (sending had failed: {self.send_failed})" if self.send_failed else ""
            fail(f"the {role} closed the connection" + why, received.describe())
        actual = received.start.decoded
        if message.decoded is None or actual is None:
            if message.decoded is None and received.start.raw == message.raw:
                return None
            fail(f"the {kind} differs", received.describe())
        return actual

    def shutdown_write(self) -> None:
        """Half-close our side."""
        try:
            self.channel.shutdown_write()
        except ConnectionLost as error:
            self.send_failed = self.send_failed or str(error)

    def receive(self, on_body: Callable[[bytes], None] | None = None) -> Received | None:
        """The next whole message, `closed`, or None on timeout; body pieces go to `on_body` if given."""
        received = Received()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                piece = self.channel.next_event(max(0.0, deadline - time.monotonic()))
            except ChannelTimeout:
                return None
            except ConnectionLost:
                if not self.channel.peer_closed:  # reset: the stream ends here
                    self.channel.feed_end()
                    continue
                received.closed = received.start is None
                return received
            if isinstance(piece, Start):
                received.start = piece
            elif isinstance(piece, Body):
                received.body_size += len(piece.data)
                if on_body is not None:
                    on_body(piece.data)
                    continue
                room = BODY_KEEP - len(received.body)
                received.body += piece.data[: max(room, 0)]
            else:
                received.end = piece
                return received

    def close(self) -> None:
        """Close the connection."""
        self.channel.close()
