"""The exceptions of backupproto: one small hierarchy, messages that say what, where and what was expected."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a message, a key or a ciphertext was refused; the `expect` values of `spec/vectors`."""

    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing_bytes"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_CODE = "unknown_code"
    PAYLOAD_SIZE_MISMATCH = "payload_size_mismatch"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MISSING_NUL = "missing_nul"
    NONZERO_PADDING = "nonzero_padding"
    INVALID_NAME = "invalid_name"
    INVALID_FILE_NAME = "invalid_file_name"
    BAD_CONTENT_SIZE = "bad_content_size"
    BAD_PUBLIC_KEY = "bad_public_key"
    BAD_PRIVATE_KEY = "bad_private_key"
    BAD_CIPHERTEXT = "bad_ciphertext"
    BAD_PADDING = "bad_padding"
    UNEXPECTED_MESSAGE = "unexpected_message"
    CONNECTION_CLOSED = "connection_closed"
    BUFFER_FULL = "buffer_full"
    CLIENT_ID_MISMATCH = "client_id_mismatch"
    BAD_ORIG_FILE_SIZE = "bad_orig_file_size"
    BAD_TOTAL_PACKETS = "bad_total_packets"
    BAD_PACKET_NUMBER = "bad_packet_number"
    CONTENT_SIZE_INCONSISTENT = "content_size_inconsistent"
    PACKET_MISSING = "packet_missing"
    PACKET_DUPLICATE = "packet_duplicate"
    PACKET_OUT_OF_ORDER = "packet_out_of_order"
    TOTAL_CHANGED = "total_changed"
    INVALID_FIELD = "invalid_field"


class BackupProtoError(Exception):
    """Base of every error raised by backupproto."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        expected: str | None = None,
    ) -> None:
        self.kind = kind
        self.field = field
        self.offset = offset
        self.expected = expected
        self.detail = message
        where = []
        if field is not None:
            where.append(f"field {field!r}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        text = message
        if where:
            text += f" (at {', '.join(where)})"
        if expected is not None:
            text += f"; expected {expected}"
        super().__init__(f"[{kind.value}] {text}")


class ProtocolError(BackupProtoError):
    """A violation of the wire format or of the conversation rules."""


class LocalProtocolError(ProtocolError):
    """Our own side tried to do something the protocol forbids (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids: malformed bytes or a message out of turn."""


class MalformedMessage(RemoteProtocolError):
    """Bytes that do not parse as a message of the protocol."""


class CryptoError(BackupProtoError):
    """A key, a wrapped key or a ciphertext that cannot be used."""
