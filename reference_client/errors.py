"""The reference client's own errors: each says what failed and what the user can do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from backupproto.dialect import RequestCode


class ClientError(Exception):
    """Base of every error the reference client raises on purpose."""


class ConfigError(ClientError):
    """A configuration file, an option or a listed file is unusable; nothing was sent.

    `path` and `line` (1-based, None for the whole file) say where the fault is.
    """

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class UsageError(ClientError):
    """Options that contradict each other or are missing."""


class FatalError(ClientError):
    """The backup cannot go on (server unreachable, repeated errors, name taken, ...).

    `results` holds the outcomes of the files finished before it (BackupResult objects).
    """

    def __init__(self, message: str, results: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class RetryableError(ClientError):
    """One attempt failed in a way a fresh connection may cure (2107, a refused, closed or reset
    connection, a connect timeout, bytes the protocol forbids)."""


class ServerRespondedWithError(RetryableError):
    """The server answered its error code (2107's role), or, in a dialect without one (2022C),
    closed the connection instead of answering.

    `answer` is the code received (None: a close); `first_request` the request it refused when
    that was the first of its connection (the clue to a foreign dialect), else None.
    """

    def __init__(self, message: str, answer: int | None, first_request: RequestCode | None) -> None:
        super().__init__(message)
        self.answer = answer
        self.first_request = first_request


class ForeignDialect(ClientError):
    """The server answered with another dialect's code: retrying cannot help."""


class ConnectionFailed(RetryableError):
    """The server could not be reached, or the connection broke or timed out."""


class TimedOut(ClientError):
    """The server accepted the connection, then neither answered nor took our bytes for the whole
    response timeout: not retried (spec 8.4), since a new connection to it would wait the same."""


class ProtocolFailure(RetryableError):
    """The server sent something the protocol forbids, or a key we cannot use."""
