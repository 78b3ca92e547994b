"""A `Session` to and from the JSON document of spec/sessions.md (dicts; no file access)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path, PurePath
from typing import Any

from ..dialect import DIALECTS, Dialect, dialect_named
from .model import (
    DEFAULT_DIALECT,
    DEFAULT_VARIABLES,
    FORMAT,
    FORMAT_VERSION,
    NAME_PATTERN,
    ClientKey,
    Content,
    Direction,
    Message,
    Plaintext,
    Session,
    SessionError,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise SessionError("not a base64 string", where=where)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as error:
        raise SessionError(f"bad base64: {error}", where=where) from None


def _unhex(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise SessionError("not a hex string", where=where)
    try:
        return bytes.fromhex(text)
    except ValueError as error:
        raise SessionError(f"bad hex: {error}", where=where) from None


def to_json(session: Session) -> dict[str, Any]:
    """The session as the JSON document of spec/sessions.md."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "protocol_version": 3,
        "dialect": session.dialect.name,
        "name": session.name,
        "description": session.description,
        "level": session.level,
        "recorded": session.recorded,
        "variables": list(session.variables),
        "clients": [
            {"client_id": c.client_id, "name": c.name, "private_key": c.private_key} for c in session.clients
        ],
        "messages": [_message_json(m) for m in session.messages],
    }


def _message_json(message: Message) -> dict[str, Any]:
    record: dict[str, Any] = {
        "index": message.index,
        "connection": message.connection,
        "direction": message.direction.value,
        "t": round(message.t, 6),
    }
    if message.close:
        record["close"] = True
        return record
    record["hex"] = message.raw.hex()
    if message.decoded is not None:
        record["decoded"] = message.decoded
    if message.error is not None:
        record["error"] = message.error
    if message.content is not None:
        record["content"] = _content_json(message.content)
    return record


def _content_json(content: Content) -> dict[str, Any]:
    record: dict[str, Any] = {"size": content.size, "sha256": content.sha256}
    if content.ciphertext is not None:
        record["ciphertext_base64"] = _b64(content.ciphertext)
    if content.plaintext is not None:
        p = content.plaintext
        plain: dict[str, Any] = {"size": p.size, "sha256": p.sha256, "cksum": p.cksum}
        if not p.padded:
            plain["padded"] = False
        if p.data is not None:
            plain["base64"] = _b64(p.data)
        else:
            plain["file"] = p.file
        record["plaintext"] = plain
    if content.plaintext_error is not None:
        record["plaintext_error"] = content.plaintext_error
    return record


def _require(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, dict):
        raise SessionError("not a JSON object", where=where)
    if key not in mapping:
        raise SessionError(f"missing {key!r}", where=where)
    value = mapping[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SessionError(f"{key!r} has the wrong type ({type(value).__name__})", where=where)
    return value


def from_json(document: Any, base_dir: Path | None = None) -> Session:
    """Validate a parsed session document and build the `Session`."""
    if _require(document, "format", str, "session") != FORMAT:
        raise SessionError(f"'format' is {document['format']!r}", where="session", expected=repr(FORMAT))
    version = _require(document, "format_version", int, "session")
    if version != FORMAT_VERSION:
        raise SessionError(
            f"format_version {version} is not supported", where="session", expected=str(FORMAT_VERSION)
        )
    name = _require(document, "name", str, "session")
    if not NAME_PATTERN.match(name):
        raise SessionError(
            f"name {name!r}", where="name", expected="lower-case words joined by '-' (a case id)"
        )
    variables = document.get("variables", list(DEFAULT_VARIABLES))
    unknown = set(variables) - set(DEFAULT_VARIABLES)
    if unknown:
        raise SessionError(f"unknown variables {sorted(unknown)}", where="variables")
    level = document.get("level", "MUST")
    if level not in ("MUST", "SHOULD", "INFO"):
        raise SessionError(f"level {level!r}", where="level", expected="MUST, SHOULD or INFO")
    dialect = _dialect(document.get("dialect", DEFAULT_DIALECT.name))
    clients = []
    for number, item in enumerate(document.get("clients", [])):
        where = f"clients[{number}]"
        key = _require(item, "private_key", str, where)
        _unb64(key, where + ".private_key")
        clients.append(ClientKey(_require(item, "client_id", str, where), key, item.get("name")))
    raw_messages = _require(document, "messages", list, "session")
    messages = [_message(item, number, base_dir, dialect) for number, item in enumerate(raw_messages)]
    indexes = [m.index for m in messages]
    if indexes != sorted(indexes) or len(set(indexes)) != len(indexes):
        raise SessionError("message indexes must be unique and increasing", where="messages")
    return Session(
        name=name,
        messages=messages,
        description=str(document.get("description", "")),
        clients=clients,
        variables=list(variables),
        recorded=dict(document.get("recorded", {})),
        level=level,
        dialect=dialect,
    )


def _dialect(name: Any) -> Dialect:
    if not isinstance(name, str):
        raise SessionError(f"dialect has the wrong type ({type(name).__name__})", where="dialect")
    try:
        return dialect_named(name)
    except ValueError:
        known = ", ".join(DIALECTS)
        raise SessionError(f"unknown dialect {name!r}", where="dialect", expected=known) from None


def _message(item: Any, number: int, base_dir: Path | None, dialect: Dialect) -> Message:
    where = f"messages[{number}]"
    direction_text = _require(item, "direction", str, where)
    try:
        direction = Direction(direction_text)
    except ValueError:
        raise SessionError(
            f"direction {direction_text!r}", where=where, expected="'request' or 'response'"
        ) from None
    message = Message(
        index=_require(item, "index", int, where),
        direction=direction,
        t=float(_require(item, "t", (int, float), where)),
        connection=int(item.get("connection", 0)),
        close=bool(item.get("close", False)),
    )
    if message.close:
        return message
    message.raw = _unhex(_require(item, "hex", str, where), where + ".hex")
    message.decoded = item.get("decoded")
    message.error = item.get("error")
    if message.decoded is not None:
        _check_decoded(message, where, dialect)
    if "content" in item:
        message.content = _content(item["content"], where + ".content", base_dir)
    return message


def _check_decoded(message: Message, where: str, dialect: Dialect) -> None:
    decoded = message.decoded
    code = _require(decoded, "code", int, where + ".decoded")
    _require(decoded, "fields", dict, where + ".decoded")
    request = message.direction is Direction.REQUEST
    if (dialect.request_role(code) if request else dialect.response_role(code)) is None:
        known = sorted((dialect.requests if request else dialect.responses).values())
        raise SessionError(
            f"decoded code {code} is not a {message.direction.value} code of dialect {dialect.name}",
            where=where,
            expected="one of " + ", ".join(map(str, known)),
        )
    if message.direction is Direction.REQUEST:
        _unhex(_require(decoded, "client_id", str, where + ".decoded"), where + ".decoded.client_id")


def _content(item: Any, where: str, base_dir: Path | None) -> Content:
    content = Content(
        size=_require(item, "size", int, where),
        sha256=_require(item, "sha256", str, where),
        plaintext_error=item.get("plaintext_error"),
    )
    if "ciphertext_base64" in item:
        content.ciphertext = _unb64(item["ciphertext_base64"], where + ".ciphertext_base64")
    if "plaintext" in item:
        plain = item["plaintext"]
        pwhere = where + ".plaintext"
        plaintext = Plaintext(
            size=_require(plain, "size", int, pwhere),
            sha256=_require(plain, "sha256", str, pwhere),
            cksum=_require(plain, "cksum", int, pwhere),
            padded=bool(plain.get("padded", True)),
            base_dir=base_dir,
        )
        if "base64" in plain:
            plaintext.data = _unb64(plain["base64"], pwhere + ".base64")
            if len(plaintext.data) != plaintext.size:
                raise SessionError(f"{len(plaintext.data)} bytes, size says {plaintext.size}", where=pwhere)
            if hashlib.sha256(plaintext.data).hexdigest() != plaintext.sha256:
                raise SessionError("the plaintext does not match its sha256", where=pwhere)
        elif "file" in plain:
            plaintext.file = _require(plain, "file", str, pwhere)
            if PurePath(plaintext.file).is_absolute() or ".." in PurePath(plaintext.file).parts:
                raise SessionError(
                    "side file must be a relative path inside the session folder", where=pwhere
                )
        else:
            raise SessionError("plaintext needs 'base64' or 'file'", where=pwhere)
        content.plaintext = plaintext
    return content


__all__ = [
    "from_json",
    "to_json",
]
