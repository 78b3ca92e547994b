"""The server's own failures (protocol faults are backupproto's `RemoteProtocolError`)."""

from __future__ import annotations


class ReferenceServerError(Exception):
    """Base of the reference server's errors; the message is one line for the operator."""


class StartupError(ReferenceServerError):
    """The server cannot start: bad data folder, unusable database, port in use."""


class StorageError(ReferenceServerError):
    """The database or the file system failed while serving a request (answered with 2107)."""


class RequestRefused(ReferenceServerError):
    """A well-formed request the server will not serve (answered with 2107); says why."""
