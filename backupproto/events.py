"""The events of a conversation: one frozen dataclass per message, plus the pieces of a streamed file.

Field names are the payload field names of `schemas` (a test checks that they agree);
`client_id` is 16 raw bytes, names are `str`. A file's content never travels inside an
event as a whole: `SendFile` announces it, `FileChunk` events carry it, `FileEnd` closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from .dialect import RequestCode, ResponseCode


class _NeedData:
    """Sentinel type of `NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Returned by `next_event()` when more bytes must arrive before the next event (feed more)."""


class _Paused:
    """Sentinel type of `PAUSED`."""

    def __repr__(self) -> str:
        return "PAUSED"


PAUSED: Final = _Paused()
"""Returned by a server's `next_event()` while a request awaits our own response (send it first)."""


@dataclass(frozen=True)
class Request:
    """Base of the requests (client to server)."""

    code: ClassVar[RequestCode]
    client_id: bytes


@dataclass(frozen=True)
class Register(Request):
    """1100: register a new client under `name`."""

    code: ClassVar[RequestCode] = RequestCode.REGISTER
    name: str


@dataclass(frozen=True)
class SendPublicKey(Request):
    """1101: the client's RSA public key (SubjectPublicKeyInfo DER, without the field's padding)."""

    code: ClassVar[RequestCode] = RequestCode.SEND_PUBLIC_KEY
    name: str
    public_key: bytes


@dataclass(frozen=True)
class Reconnect(Request):
    """1102: a registered client asks for a fresh AES key."""

    code: ClassVar[RequestCode] = RequestCode.RECONNECT
    name: str


@dataclass(frozen=True)
class SendFile(Request):
    """1103, header part: `content_size` encrypted bytes of `file_name` follow as `FileChunk` events.

    In a packetised dialect (2024A/C) this is the whole file: `content_size` is its total
    encrypted size and `orig_file_size` its plaintext size (required there, None elsewhere);
    the engines number and split the packets.
    """

    code: ClassVar[RequestCode] = RequestCode.SEND_FILE
    content_size: int
    file_name: str
    orig_file_size: int | None = None


@dataclass(frozen=True)
class CrcOk(Request):
    """1104: the client's CRC matches the server's."""

    code: ClassVar[RequestCode] = RequestCode.CRC_OK
    file_name: str


@dataclass(frozen=True)
class CrcRetry(Request):
    """1105: CRC mismatch; a new 1103 of the same file follows (no response)."""

    code: ClassVar[RequestCode] = RequestCode.CRC_RETRY
    file_name: str


@dataclass(frozen=True)
class CrcGiveUp(Request):
    """1106: CRC mismatch for the last allowed time; the client gives up on the file."""

    code: ClassVar[RequestCode] = RequestCode.CRC_GIVE_UP
    file_name: str


@dataclass(frozen=True)
class FileChunk:
    """A piece of a 1103's encrypted content, in order."""

    data: bytes


@dataclass(frozen=True)
class FileEnd:
    """All `content_size` bytes of a 1103 have passed."""


@dataclass(frozen=True)
class Response:
    """Base of the responses (server to client)."""

    code: ClassVar[ResponseCode]


@dataclass(frozen=True)
class Registered(Response):
    """2100: registration succeeded; `client_id` is the new client's UUID."""

    code: ClassVar[ResponseCode] = ResponseCode.REGISTERED
    client_id: bytes


@dataclass(frozen=True)
class RegistrationFailed(Response):
    """2101: the name is taken."""

    code: ClassVar[ResponseCode] = ResponseCode.REGISTRATION_FAILED


@dataclass(frozen=True)
class AesKey(Response):
    """2102: public key stored; the session's AES key, RSA-OAEP encrypted to it."""

    code: ClassVar[ResponseCode] = ResponseCode.AES_KEY
    client_id: bytes
    encrypted_aes_key: bytes


@dataclass(frozen=True)
class FileReceived(Response):
    """2103: the file arrived; `cksum` is the POSIX CRC of its plaintext."""

    code: ClassVar[ResponseCode] = ResponseCode.FILE_RECEIVED
    client_id: bytes
    content_size: int
    file_name: str
    cksum: int


@dataclass(frozen=True)
class Acknowledged(Response):
    """2104: answers 1104 and 1106."""

    code: ClassVar[ResponseCode] = ResponseCode.ACKNOWLEDGED
    client_id: bytes


@dataclass(frozen=True)
class ReconnectApproved(Response):
    """2105: reconnect approved; a fresh AES key, RSA-OAEP encrypted to the stored public key."""

    code: ClassVar[ResponseCode] = ResponseCode.RECONNECT_APPROVED
    client_id: bytes
    encrypted_aes_key: bytes


@dataclass(frozen=True)
class ReconnectDenied(Response):
    """2106: unknown client, wrong name or no public key; the client must register anew."""

    code: ClassVar[ResponseCode] = ResponseCode.RECONNECT_DENIED
    client_id: bytes


@dataclass(frozen=True)
class ServerError(Response):
    """2107: the request could not be served; the server closes the connection after it."""

    code: ClassVar[ResponseCode] = ResponseCode.SERVER_ERROR


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection at a point where that is allowed."""


REQUEST_EVENTS: Final[dict[RequestCode, type[Request]]] = {
    cls.code: cls for cls in (Register, SendPublicKey, Reconnect, SendFile, CrcOk, CrcRetry, CrcGiveUp)
}
RESPONSE_EVENTS: Final[dict[ResponseCode, type[Response]]] = {
    cls.code: cls
    for cls in (
        Registered,
        RegistrationFailed,
        AesKey,
        FileReceived,
        Acknowledged,
        ReconnectApproved,
        ReconnectDenied,
        ServerError,
    )
}

Event = Request | Response | FileChunk | FileEnd | ConnectionClosed
