"""Failed decryptions per client id: after a few, the id is locked out for a while (spec 13.3).

Content with bad padding is what an attacker who knows a client's name and id produces: it
cannot unwrap the session key, so it sends random content, and about one try in 256 has
valid padding. Counting the failures per client id and refusing that id's 1102 and 1103
for `lockout` seconds after `limit` of them makes those tries slow: `limit` tries per
`lockout` seconds instead of hundreds per second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class DecryptionFailures:
    """Thread-safe failure counts; failures older than `lockout` seconds are forgotten."""

    def __init__(self, limit: int, lockout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.lockout = lockout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[bytes, list[float]] = {}
        self._locked_until: dict[bytes, float] = {}

    def record(self, client_id: bytes) -> bool:
        """Count a failed decryption; True if it starts a lockout of this client id."""
        now = self._clock()
        with self._lock:
            self._forget_before(now - self.lockout)
            recent = self._failures.setdefault(client_id, [])
            recent.append(now)
            if len(recent) < self.limit or client_id in self._locked_until:
                return False
            self._locked_until[client_id] = now + self.lockout
            recent.clear()
            return True

    def locked_for(self, client_id: bytes) -> float:
        """Seconds this client id stays locked out (0.0 if it is not)."""
        now = self._clock()
        with self._lock:
            until = self._locked_until.get(client_id)
            if until is None:
                return 0.0
            if until <= now:
                del self._locked_until[client_id]
                return 0.0
            return until - now

    def _forget_before(self, horizon: float) -> None:
        for client_id in list(self._failures):
            kept = [moment for moment in self._failures[client_id] if moment > horizon]
            if kept:
                self._failures[client_id] = kept
            else:
                del self._failures[client_id]
