"""What a replay reports: the session cannot be replayed, the peer differed, or what was checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class NotReplayable(Exception):
    """The session lacks what a replay needs (say which and why)."""


class ReplayMismatch(AssertionError):
    """The peer did not behave as recorded."""

    def __init__(self, session: str, index: int, reason: str, expected: Any, actual: Any) -> None:
        self.session, self.index, self.reason = session, index, reason
        self.expected, self.actual = expected, actual
        super().__init__(
            f"session {session!r}, message {index}: {reason}\n"
            f"  expected: {_show(expected)}\n"
            f"  actual:   {_show(actual)}"
        )


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass
class ReplayReport:
    """What a replay checked."""

    session: str
    messages: int = 0
    connections: int = 0
    seconds: float = 0.0
    names: dict[str, str] = field(default_factory=dict)
