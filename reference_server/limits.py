"""Who may connect: the connection limit, the per-address cap, drop-the-longest-idle, counted refusals.

When a new connection would exceed a limit, the connection idle for longest (at a message
boundary, for at least `min_idle_to_drop` seconds) is dropped to make room; only if none is
idle is the new one refused. Idle connections are kept in insertion-ordered dicts (oldest
first), so choosing whom to drop costs O(1) whatever the number of connections. Refusals,
drops and accept errors are counted, and `summary()` turns the counts into one log line
(the server emits it at most every few seconds instead of a line per connection).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Slot = TypeVar("Slot", bound=Hashable)


class ConnectionTable(Generic[Slot]):
    """The open connections by address, and which of them are idle (oldest first)."""

    def __init__(
        self,
        max_connections: int,
        max_per_address: int,
        min_idle_to_drop: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        """0: no per-address cap."""
        self.min_idle_to_drop = min_idle_to_drop
        self._clock = clock
        self._address: dict[Slot, str] = {}
        self._count: Counter[str] = Counter()
        self._idle: dict[Slot, float] = {}
        self._idle_by_address: dict[str, dict[Slot, float]] = {}
        self.events: Counter[str] = Counter()
        """Counts since the last summary: refused, dropped, over-address, accept-error."""

    def __len__(self) -> int:
        return len(self._address)

    def slots(self) -> list[Slot]:
        """Every open connection."""
        return list(self._address)

    def admit(self, address: str) -> list[Slot] | None:
        """Room for a connection from `address`: the idle connections to drop first (maybe none),
        or None if it must be refused. Counts the outcome."""
        victims: list[Slot] = []
        if self.max_per_address and self._count[address] >= self.max_per_address:
            victim = self._longest_idle(self._idle_by_address.get(address, {}), victims)
            if victim is None:
                self.events["over the per-address cap"] += 1
                return None
            victims.append(victim)
        if len(self._address) - len(victims) >= self.max_connections:
            victim = self._longest_idle(self._idle, victims)
            if victim is None:
                self.events["refused at the connection limit"] += 1
                return None
            victims.append(victim)
        if victims:
            self.events["dropped (longest idle)"] += len(victims)
        return victims

    def _longest_idle(self, idle: dict[Slot, float], chosen: list[Slot]) -> Slot | None:
        horizon = self._clock() - self.min_idle_to_drop
        for slot, since in idle.items():
            if since > horizon:
                return None  # the oldest left is too recent, so all the others are
            if slot not in chosen:
                return slot
        return None

    def add(self, slot: Slot, address: str) -> None:
        self._address[slot] = address
        self._count[address] += 1

    def remove(self, slot: Slot) -> None:
        if slot not in self._address:
            return
        self.busy(slot)
        address = self._address.pop(slot)
        self._count[address] -= 1
        if not self._count[address]:
            del self._count[address]

    def idle(self, slot: Slot) -> None:
        """The connection waits for its next request (droppable once idle long enough)."""
        address = self._address.get(slot)
        if address is None or slot in self._idle:
            return
        now = self._clock()
        self._idle[slot] = now
        self._idle_by_address.setdefault(address, {})[slot] = now

    def busy(self, slot: Slot) -> None:
        """A message or its response is under way (never dropped)."""
        if self._idle.pop(slot, None) is None:
            return
        address = self._address[slot]
        by_address = self._idle_by_address[address]
        del by_address[slot]
        if not by_address:
            del self._idle_by_address[address]

    def summary(self) -> str | None:
        """One line with the counts since the last call (and resets them), or None if nothing happened."""
        if not self.events:
            return None
        counts = ", ".join(f"{count} {what}" for what, count in sorted(self.events.items()))
        self.events.clear()
        return f"connections: {counts}; {len(self._address)} open"
