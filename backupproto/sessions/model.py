"""Recorded sessions (spec/sessions.md): the data model, pure (no file access).

A `Session` is a recorded conversation; its file form is built by `sessions.document` and read
and written by the suite's tools (`conformance.recording.files`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ..dialect import V3, Dialect
from ..errors import BackupProtoError, ErrorKind

FORMAT: Final = "backupproto-session"
FORMAT_VERSION: Final = 1
INLINE_LIMIT: Final = 64 * 1024
"""Content up to this size is kept inside the session file (base64); larger goes to a side file."""
NAME_PATTERN: Final = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
"""Session names: they become conformance case ids (15-replay-NAME)."""
DEFAULT_DIALECT: Final = V3
"""The dialect of a session that names none (every session recorded before dialects: 2023A)."""
DEFAULT_VARIABLES: Final = ("client_id", "encrypted_aes_key", "content", "name")
"""What a replayer treats as variable unless a session says otherwise (spec/sessions.md 4)."""


class SessionError(BackupProtoError):
    """A session file that cannot be read, or does not follow spec/sessions.md."""

    def __init__(self, message: str, *, where: str | None = None, expected: str | None = None) -> None:
        super().__init__(ErrorKind.UNEXPECTED_MESSAGE, message, field=where, expected=expected)
        text = f"{where}: {message}" if where else message
        self.args = (text + (f"; expected {expected}" if expected else ""),)

    def __str__(self) -> str:
        return str(self.args[0])


class Direction(StrEnum):
    """Who sent a message."""

    REQUEST = "request"
    """client to server"""
    RESPONSE = "response"
    """server to client"""


# --- the model -----------------------------------------------------------------------------


@dataclass
class Plaintext:
    """A 1103's plaintext: inline `data`, or a side `file` (relative to the session file)."""

    size: int
    sha256: str
    cksum: int
    data: bytes | None = None
    file: str | None = None
    padded: bool = True
    """False: the ciphertext had no valid PKCS#7 padding; `data` is all decrypted blocks,
    to be re-encrypted without adding padding."""
    base_dir: Path | None = field(default=None, compare=False, repr=False)


@dataclass
class Content:
    """What followed a message's first bytes: a 1103's encrypted content, or the body after a bad header."""

    size: int
    sha256: str
    """SHA-256 of the bytes as they went over the wire (ciphertext)."""
    ciphertext: bytes | None = None
    """The wire bytes themselves, kept when small and no plaintext is known."""
    plaintext: Plaintext | None = None
    plaintext_error: str | None = None
    """Why `plaintext` is missing."""


@dataclass
class Message:
    """One message (or one end of stream) of a session."""

    index: int
    direction: Direction
    t: float
    connection: int = 0
    close: bool = False
    """True: not a message, the sender closed its side of the connection here."""
    raw: bytes = b""
    """The message's first bytes: whole message, or header (+ 1103 prefix) when `content` follows."""
    decoded: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    content: Content | None = None

    @property
    def code(self) -> int | None:
        """The decoded message code (the wire code of the session's dialect), if the message parsed."""
        return None if self.decoded is None else int(self.decoded["code"])


@dataclass
class ClientKey:
    """A recorded client's private key (what makes file content replayable)."""

    client_id: str
    private_key: str
    """base64 of the PKCS#8 DER"""
    name: str | None = None


@dataclass
class Session:
    """A recorded conversation: one or more connections, messages in the order they started."""

    name: str
    messages: list[Message]
    description: str = ""
    clients: list[ClientKey] = field(default_factory=list)
    variables: list[str] = field(default_factory=lambda: list(DEFAULT_VARIABLES))
    recorded: dict[str, Any] = field(default_factory=dict)
    level: str = "MUST"
    dialect: Dialect = DEFAULT_DIALECT
    """The dialect spoken: its codes, layouts and key size decode and replay the messages."""

    def blockers(self) -> list[str]:
        """Why this session cannot be replayed against a server (empty: it can)."""
        reasons: list[str] = []
        for message in self.messages:
            content = message.content
            if message.direction is not Direction.REQUEST or content is None:
                continue
            if message.decoded is not None and message.decoded["fields"].get("packet_number", 1) > 1:
                continue  # a later 2024 packet: the file's plaintext is kept on its packet 1
            if content.plaintext is None and content.ciphertext is None:
                why = content.plaintext_error or "no plaintext recorded"
                reasons.append(
                    f"message {message.index}: cannot re-encrypt the {content.size}-byte content "
                    f"under the server's new AES key: {why}; neither plaintext nor ciphertext is kept "
                    "(record with --client-dir to keep the plaintext)"
                )
            elif content.plaintext is None and message.decoded is not None and "content" in self.variables:
                why = content.plaintext_error or "no plaintext recorded"
                reasons.append(
                    f"message {message.index}: cannot re-encrypt the file content under the server's new "
                    f"AES key: {why} (record with --client-dir CLIENT_FOLDER so the client's priv.key "
                    "lets the recorder keep the plaintext)"
                )
        return reasons


def join(name: str, parts: list[Session], description: str = "") -> Session:
    """One session of several recorded ones, played one after the other (connections renumbered).

    The parts must speak one dialect (SessionError otherwise)."""
    dialects = sorted({part.dialect.name for part in parts})
    if len(dialects) > 1:
        raise SessionError(f"the parts speak dialects {', '.join(dialects)}", expected="one dialect")
    messages: list[Message] = []
    clients: list[ClientKey] = []
    connection = 0
    offset = 0.0
    for part in parts:
        numbers: dict[int, int] = {}
        for message in part.messages:
            if message.connection not in numbers:
                numbers[message.connection] = connection
                connection += 1
            copy = replace(
                message, index=len(messages), connection=numbers[message.connection], t=offset + message.t
            )
            messages.append(copy)
        offset = messages[-1].t if messages else offset
        for client in part.clients:
            if all(known.client_id != client.client_id for known in clients):
                clients.append(client)
    recorded = dict(parts[0].recorded) if parts else {}
    dialect = parts[0].dialect if parts else DEFAULT_DIALECT
    return Session(
        name=name,
        messages=messages,
        description=description,
        clients=clients,
        recorded=recorded,
        dialect=dialect,
    )


__all__ = [
    "DEFAULT_DIALECT",
    "DEFAULT_VARIABLES",
    "FORMAT",
    "FORMAT_VERSION",
    "INLINE_LIMIT",
    "NAME_PATTERN",
    "ClientKey",
    "Content",
    "Direction",
    "Message",
    "Plaintext",
    "Session",
    "SessionError",
    "join",
]
