"""Recorded sessions (spec/sessions.md): the file model, load/save/validate, and the splitter
that cuts one direction's byte stream into protocol messages.

Sans-I/O except `load` / `save`: the `Splitter` is fed bytes and returns pieces; a 1103's
content (and the body after an unparseable header) leaves it as `Body` pieces, so a file of
any size passes in constant memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from .dialect import RequestCode, ResponseCode
from .errors import BackupProtoError, ErrorKind, MalformedMessage
from .schemas import V3_SCHEMAS, Schemas

FORMAT: Final = "backupproto-session"
FORMAT_VERSION: Final = 1
INLINE_LIMIT: Final = 64 * 1024
"""Content up to this size is kept inside the session file (base64); larger goes to a side file."""
NAME_PATTERN: Final = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
"""Session names: they become conformance case ids (15-replay-NAME)."""
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

    def chunks(self, size: int = INLINE_LIMIT) -> Iterator[bytes]:
        """The plaintext in pieces, read from the side file if it is one (constant memory)."""
        if self.data is not None:
            yield self.data
            return
        if self.file is None:
            raise SessionError("plaintext has neither data nor file")
        path = (self.base_dir or Path()) / self.file
        try:
            with path.open("rb") as handle:
                while piece := handle.read(size):
                    yield piece
        except OSError as error:
            raise SessionError(f"cannot read plaintext side file {path}: {error}") from None


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
        """The decoded message code, if the message parsed."""
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

    def blockers(self) -> list[str]:
        """Why this session cannot be replayed against a server (empty: it can)."""
        reasons: list[str] = []
        for message in self.messages:
            content = message.content
            if message.direction is not Direction.REQUEST or content is None:
                continue
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
    """One session of several recorded ones, played one after the other (connections renumbered)."""
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
    return Session(name=name, messages=messages, description=description, clients=clients, recorded=recorded)


# --- decoding for the file -----------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def error_record(error: BackupProtoError) -> dict[str, Any]:
    """An error as the session file notes it."""
    record: dict[str, Any] = {"kind": error.kind.value, "message": str(error)}
    if error.field is not None:
        record["field"] = error.field
    if error.offset is not None:
        record["offset"] = error.offset
    return record


def decode_request_start(schemas: Schemas, data: bytes, payload_size: int) -> dict[str, Any]:
    """Decoded fields of a request whose first bytes are `data` (for 1103: header + prefix)."""
    size = schemas.request_header_size
    header = schemas.parse_request_header(data[:size])
    if header.code is RequestCode.SEND_FILE:
        fields = schemas.parse_send_file_prefix(data[size:], payload_size, size)
    else:
        fields = schemas.parse_request(data)[1]
    return {
        "code": int(header.code),
        "type": header.code.name,
        "version": header.version,
        "client_id": header.client_id.hex(),
        "payload_size": header.payload_size,
        "fields": {key: _jsonable(value) for key, value in fields.items()},
    }


def decode_response(schemas: Schemas, data: bytes) -> dict[str, Any]:
    """Decoded fields of one whole response."""
    header, fields = schemas.parse_response(data)
    return {
        "code": int(header.code),
        "type": header.code.name,
        "version": header.version,
        "payload_size": header.payload_size,
        "fields": {key: _jsonable(value) for key, value in fields.items()},
    }


# --- the splitter --------------------------------------------------------------------------


@dataclass
class Start:
    """A message begins: its first bytes, decoded (or the parse error), and how many body bytes follow."""

    raw: bytes
    decoded: dict[str, Any] | None
    error: dict[str, Any] | None
    body_size: int


@dataclass
class Body:
    """A piece of the body announced by the last `Start`."""

    data: bytes


@dataclass
class End:
    """The message is complete (or `error`: the stream ended inside it)."""

    error: dict[str, Any] | None = None


Piece = Start | Body | End


class Splitter:
    """Cuts one direction's byte stream into protocol messages (spec/sessions.md 3).

    Framing follows the header's payload_size even when the header is invalid, so the bytes of
    malformed traffic stay together with the header that announced them. Only a 1103's content and
    the body after an invalid header are streamed out as `Body`; everything else is buffered whole
    (at most 23 + 415 bytes for a request, 7 + 528 for a response).
    """

    def __init__(self, direction: Direction, schemas: Schemas = V3_SCHEMAS) -> None:
        self.direction = direction
        self.schemas = schemas
        self._buffer = bytearray()
        self._body_left: int | None = None
        self._want: int | None = None
        self._payload_size = 0
        self._ended = False

    @property
    def _header_size(self) -> int:
        s = self.schemas
        return s.request_header_size if self.direction is Direction.REQUEST else s.response_header_size

    @property
    def inside_message(self) -> bool:
        """True when the stream stopped in the middle of a message."""
        return bool(self._buffer) or self._body_left is not None

    def feed(self, data: bytes) -> list[Piece]:
        """Bytes received in this direction; the pieces they complete."""
        if self._ended:
            raise SessionError("data fed to a splitter after its stream ended")
        pieces: list[Piece] = []
        view = memoryview(data)
        while view:
            if self._body_left is not None:
                take = min(self._body_left, len(view))
                pieces.append(Body(bytes(view[:take])))
                view = view[take:]
                self._body_left -= take
                if self._body_left == 0:
                    self._body_left = None
                    pieces.append(End())
                continue
            want = self._want if self._want is not None else self._header_size
            take = min(want - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == want:
                pieces.extend(self._framed())
        return pieces

    def end(self) -> list[Piece]:
        """The stream ended; closes a message left open (with a `truncated` error)."""
        self._ended = True
        if self._body_left is not None:
            left, self._body_left = self._body_left, None
            return [End(_truncated(f"stream ended {left} bytes before the end of the body", left))]
        if self._buffer:
            raw = bytes(self._buffer)
            self._buffer.clear()
            want = self._want if self._want is not None else self._header_size
            error = _truncated(f"stream ended {len(raw)} bytes into a message", want - len(raw))
            decoded = None
            if self._want is not None and self.direction is Direction.REQUEST:
                decoded_header = self._try_header(raw[: self._header_size])
                if decoded_header is not None:
                    error["header"] = decoded_header
            self._want = None
            return [Start(raw, decoded, error, 0), End(error)]
        return []

    def _framed(self) -> list[Piece]:
        """The buffer holds what was wanted: a header, or a header and the bytes to decode."""
        schemas, size = self.schemas, self._header_size
        raw = bytes(self._buffer)
        if self._want is None:  # a header is complete
            try:
                code, payload_size = self._parse_header(raw)
            except MalformedMessage as error:
                payload_size = self._raw_payload_size(raw)
                self._buffer.clear()
                return self._start(raw, None, error_record(error), payload_size)
            self._payload_size = payload_size
            if code is RequestCode.SEND_FILE:
                self._want = size + schemas.send_file_prefix_size
            else:
                self._want = size + payload_size
            if len(self._buffer) < self._want:
                return []
        self._buffer.clear()
        self._want = None
        payload_size = self._payload_size
        try:
            if self.direction is Direction.REQUEST:
                decoded = decode_request_start(schemas, raw, payload_size)
            else:
                decoded = decode_response(schemas, raw)
        except MalformedMessage as error:
            return self._start(raw, None, error_record(error), size + payload_size - len(raw))
        return self._start(raw, decoded, None, size + payload_size - len(raw))

    def _start(self, raw: bytes, decoded: Any, error: Any, body_size: int) -> list[Piece]:
        pieces: list[Piece] = [Start(raw, decoded, error, body_size)]
        if body_size > 0:
            self._body_left = body_size
        else:
            pieces.append(End())
        return pieces

    def _parse_header(self, raw: bytes) -> tuple[RequestCode | ResponseCode, int]:
        if self.direction is Direction.REQUEST:
            header = self.schemas.parse_request_header(raw)
            return header.code, header.payload_size
        response = self.schemas.parse_response_header(raw)
        return response.code, response.payload_size

    def _raw_payload_size(self, raw: bytes) -> int:
        """payload_size read without validation (it frames even a rejected header)."""
        schema = (
            self.schemas.request_header
            if self.direction is Direction.REQUEST
            else self.schemas.response_header
        )
        return int(schema.parse(raw)["payload_size"])

    def _try_header(self, raw: bytes) -> dict[str, Any] | None:
        try:
            header = self.schemas.parse_request_header(raw)
        except MalformedMessage:
            return None
        return {"code": int(header.code), "type": header.code.name, "payload_size": header.payload_size}


def _truncated(message: str, missing: int) -> dict[str, Any]:
    return {"kind": ErrorKind.TRUNCATED.value, "message": message, "missing": missing}


def split_all(direction: Direction, data: bytes, schemas: Schemas = V3_SCHEMAS) -> list[Piece]:
    """All pieces of a whole stream (convenience for tests and small tools)."""
    splitter = Splitter(direction, schemas)
    return splitter.feed(data) + splitter.end()


# --- load / save / validate ----------------------------------------------------------------


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


def save(session: Session, path: Path) -> None:
    """Write the session file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".part")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(to_json(session), handle, indent=1)
        handle.write("\n")
    temporary.replace(path)


def load(path: Path) -> Session:
    """Read and validate a session file; SessionError says what is wrong and where."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SessionError(f"cannot read session file {path}: {error}") from None
    try:
        return from_json(document, base_dir=path.parent)
    except SessionError as error:
        raise SessionError(f"{path}: {error}") from None


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
    clients = []
    for number, item in enumerate(document.get("clients", [])):
        where = f"clients[{number}]"
        key = _require(item, "private_key", str, where)
        _unb64(key, where + ".private_key")
        clients.append(ClientKey(_require(item, "client_id", str, where), key, item.get("name")))
    raw_messages = _require(document, "messages", list, "session")
    messages = [_message(item, number, base_dir) for number, item in enumerate(raw_messages)]
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
    )


def _message(item: Any, number: int, base_dir: Path | None) -> Message:
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
        _check_decoded(message, where)
    if "content" in item:
        message.content = _content(item["content"], where + ".content", base_dir)
    return message


def _check_decoded(message: Message, where: str) -> None:
    decoded = message.decoded
    code = _require(decoded, "code", int, where + ".decoded")
    _require(decoded, "fields", dict, where + ".decoded")
    codes: Any = RequestCode if message.direction is Direction.REQUEST else ResponseCode
    try:
        codes(code)
    except ValueError:
        raise SessionError(
            f"decoded code {code} is not a {message.direction.value} code", where=where
        ) from None
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
            if Path(plaintext.file).is_absolute() or ".." in Path(plaintext.file).parts:
                raise SessionError(
                    "side file must be a relative path inside the session folder", where=pwhere
                )
        else:
            raise SessionError("plaintext needs 'base64' or 'file'", where=pwhere)
        content.plaintext = plaintext
    return content


def load_folder(folder: Path) -> list[Session]:
    """Every session (`*.json`) of a folder, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionError(f"session folder {folder} does not exist")
    return [load(path) for path in sorted(folder.glob("*.json"))]
