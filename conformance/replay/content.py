"""What a replay sends for the variable parts of a session: fresh names, re-encrypted file contents."""

from __future__ import annotations

from collections.abc import Iterator

from backupproto import crypto
from backupproto.errors import BackupProtoError
from backupproto.sessions import Content, Plaintext, Session

from ..recording.files import plaintext_chunks
from .report import NotReplayable


def fresh_name(name: str, token: str) -> str:
    """A per-run variant of a recorded client name (spec/sessions.md 4)."""
    suffix = f"-{token}"
    return name[: 100 - len(suffix)] + suffix if len(name) + len(suffix) > 100 else name + suffix


def private_keys(session: Session) -> dict[str, crypto.RsaKey]:
    """The recorded clients' private keys by client id (hex)."""
    keys: dict[str, crypto.RsaKey] = {}
    for client in session.clients:
        try:
            keys[client.client_id] = crypto.import_private_key(client.private_key)
        except BackupProtoError as error:
            raise NotReplayable(f"session {session.name!r}: client {client.client_id}: {error}") from None
    return keys


def _unpadded_encrypt(key: bytes, data: bytes) -> bytes:
    """CBC without padding added (for `padded: false` plaintexts: whole blocks, so `update` takes all)."""
    return crypto.CbcEncryptor(key).update(data)


def _encrypted(plain: Plaintext, aes_key: bytes) -> Iterator[bytes]:
    if not plain.padded:
        yield _unpadded_encrypt(aes_key, b"".join(plaintext_chunks(plain)))
        return
    encryptor = crypto.CbcEncryptor(aes_key)
    for chunk in plaintext_chunks(plain):
        yield encryptor.update(chunk)
    yield encryptor.finalize()


def content_chunks(
    content: Content, aes_key: bytes | None, replace: bool, what: str, size: int | None = None
) -> Iterator[bytes]:
    """The wire bytes of a recorded content for this run: the plaintext re-encrypted under
    `aes_key`, or the recorded ciphertext as it is. At most `size` bytes (default `content.size`;
    a 2024 file's whole ciphertext when its plaintext is kept on packet 1)."""
    left = content.size if size is None else size
    if replace and content.plaintext is not None:
        if aes_key is None:
            raise NotReplayable(f"{what}: no AES key on this connection to encrypt the file with")
        for chunk in _encrypted(content.plaintext, aes_key):
            if left <= 0:
                return
            yield chunk[:left]
            left -= len(chunk[:left])
        return
    if content.ciphertext is None:
        raise NotReplayable(
            f"{what}: the session keeps neither the plaintext nor the ciphertext of the "
            f"{content.size}-byte content ({content.plaintext_error or 'hash only'})"
        )
    yield content.ciphertext[:left]


class FileStream:
    """The wire bytes of one file taken packet by packet (2024A/C: one ciphertext, split as recorded)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._held = b""

    def take(self, size: int) -> Iterator[bytes]:
        """The next `size` bytes (fewer if the file ends first)."""
        left = size
        while left:
            if not self._held:
                self._held = next(self._chunks, b"")
                if not self._held:
                    return
            piece, self._held = self._held[:left], self._held[left:]
            left -= len(piece)
            yield piece
