"""Accept TCP connections and handle each in its own thread (the recorder, the tests' servers)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Self

from backupproto.address import Address

Handler = Callable[[socket.socket, int], None]
"""Called in a new thread with each accepted socket and its 1-based number; owns the socket."""


class ThreadedListener:
    """A listening socket whose connections are handled by `handler`, one daemon thread each."""

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        self._socket = socket.create_server(address)
        self.address = Address(*self._socket.getsockname()[:2])
        self.handler = handler
        self.connections = 0
        """Connections accepted so far."""
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()

    def start(self) -> Self:
        """Accept in a background thread."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        """Accept and hand over connections until `close()`."""
        while not self._closed.is_set():
            try:
                sock, _ = self._socket.accept()
            except OSError:
                break
            self.connections += 1
            thread = threading.Thread(target=self.handler, args=(sock, self.connections), daemon=True)
            self._threads.append(thread)
            thread.start()

    def close(self, timeout: float = 0.0) -> None:
        """Stop accepting (wakes a blocked accept), then wait up to `timeout` s in all for the handlers."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
