"""A clock for tests: time moves only when the test says so."""

from __future__ import annotations


class FakeClock:
    """Call it for the time; add to `.now` to let time pass."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
