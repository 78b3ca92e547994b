"""A file's content for one 1103: read and summed (cksum) in one worker thread, encrypted in a
second, while the caller sends the chunks before. AES-CBC encryption is a chain, one block after
the other, and bounds a large backup; reading (the kernel's copy out of the page cache, about a
quarter of the chain's time) and summing run beside it instead of in series with it (OpenSSL,
fastcrc, reads and socket sends all release the GIL).

Constant memory: `SLOTS` pairs of reused buffers (plaintext, ciphertext) circulate from the
reader to the encryptor to the caller and back; a chunk's buffers go back to the reader only
after the caller has sent it, so nothing is copied and nothing is overwritten while in use.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Final

from backupproto.cksum import Cksum
from backupproto.crypto import UPDATE_INTO_SLACK, CbcEncryptor

SLOTS: Final = 4
"""Buffer pairs in flight: one being read, one being encrypted, one being sent, one ready between."""
_STOP: Final = -1
"""Put in the free-slot queue to end the workers early (the reader passes it on)."""

_Read = tuple[int, int] | int | BaseException | None
"""A chunk read: (its slot, its length); `_STOP`; an error; or the end."""
_Ready = tuple[memoryview, int, int] | BaseException | None
"""A chunk's ciphertext, the plaintext bytes done with it, its slot; an error; or the end."""


class EncryptedContent:
    """Iterate over (ciphertext, plaintext bytes done) chunks of `size` bytes of `stream`; then
    `final` holds the padded last block, `crc` the cksum of the bytes read and `changed` tells
    whether the file shrank while being read (the missing bytes were sent as zeros).

    Use as a context manager: leaving it stops the worker, also after an error while sending.
    The views yielded are valid until the next chunk is asked for.
    """

    def __init__(self, stream: io.RawIOBase, size: int, aes_key: bytes, chunk_size: int) -> None:
        self.stream, self.size = stream, size
        self.final = b""
        self.changed = False
        self._encryptor = CbcEncryptor(aes_key)
        self._summer = Cksum()
        length = min(chunk_size, max(size, 1))
        self._plain = [bytearray(length) for _ in range(SLOTS)]
        self._cipher = [bytearray(length + UPDATE_INTO_SLACK) for _ in range(SLOTS)]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._read: queue.SimpleQueue[_Read] = queue.SimpleQueue()
        self._ready: queue.SimpleQueue[_Ready] = queue.SimpleQueue()
        for slot in range(SLOTS):
            self._free.put(slot)
        self._workers = [
            threading.Thread(target=self._read_all, name="read", daemon=True),
            threading.Thread(target=self._encrypt_all, name="encrypt", daemon=True),
        ]

    @property
    def crc(self) -> int:
        """The cksum of the plaintext read (complete once the iteration ended)."""
        return self._summer.value

    def __enter__(self) -> EncryptedContent:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._free.put(_STOP)
        for worker in self._workers:
            worker.join()

    def __iter__(self) -> Iterator[tuple[memoryview, int]]:
        while True:
            item = self._ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            data, done, slot = item
            yield data, done
            self._free.put(slot)

    def _read_all(self) -> None:
        """The reader: fill free slots from the stream and sum them; then the end (or an error)."""
        try:
            done = 0
            while done < self.size:
                slot = self._free.get()
                if slot == _STOP:
                    self._read.put(_STOP)
                    return
                view = memoryview(self._plain[slot])
                want = min(len(view), self.size - done)
                count = self.stream.readinto(view[:want]) if not self.changed else 0
                if not count:  # the file shrank: keep the framing with zeros, then resend
                    self.changed = True
                    view[:want] = bytes(want)
                    count = want
                self._summer.update(view[:count])
                done += count
                self._read.put((slot, count))
        except BaseException as error:  # handed on to the sending thread, which raises it
            self._read.put(error)
        else:
            self._read.put(None)

    def _encrypt_all(self) -> None:
        """The encryptor: encrypt each slot read, in order; the padded last block at the end."""
        try:
            done = 0
            while (item := self._read.get()) is not None:
                if isinstance(item, int):  # _STOP: the sender is gone
                    return
                if isinstance(item, BaseException):
                    raise item
                slot, count = item
                plain = memoryview(self._plain[slot])[:count]
                cipher = self._encryptor.update_into(plain, self._cipher[slot])
                done += count
                self._ready.put((cipher, done, slot))
            self.final = self._encryptor.finalize()
        except BaseException as error:  # handed to the sending thread, which raises it
            self._ready.put(error)
        else:
            self._ready.put(None)
