"""The plaintexts of one recorded connection (spec/sessions.md 5.3): the AES key is unwrapped from
the 2102/2105 with the client's private key read from ``--client-dir``, each 1103's spooled
ciphertext is decrypted beside the session file (inline when small)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupproto import crypto
from backupproto.cksum import Cksum
from backupproto.client_files import private_key_base64
from backupproto.errors import CryptoError
from backupproto.sessions import INLINE_LIMIT, ClientKey, Direction, Message, Plaintext, Session

from .client_keys import read_client_keys

if TYPE_CHECKING:
    from .connection import ConnectionRecorder

KEY_WAIT_SECONDS = 3.0
"""How long to wait for a first-time client to write its priv.key after the connection ended."""


class Decryption:
    """Turns the spooled ciphertexts of one connection into plaintexts (spec/sessions.md 5.3)."""

    def __init__(
        self, recorder: ConnectionRecorder, session: Session, out_dir: Path, client_dir: Path | None
    ) -> None:
        self.recorder = recorder
        self.session = session
        self.out_dir = out_dir
        self.client_dir = client_dir
        self._keys: list[crypto.RsaKey] | None = None
        self._key_error: str | None = None
        self._public_keys: list[bytes] = []

    def run(self) -> None:
        """Unwrap each AES key sent on the connection and decrypt the contents that follow it."""
        aes_key: bytes | None = None
        key_error = "no AES key on this connection (no 2102/2105 before the 1103)"
        for message in self.session.messages:
            decoded = message.decoded
            if message.direction is Direction.REQUEST and decoded is not None and decoded["code"] == 1101:
                self._public_keys.append(bytes.fromhex(decoded["fields"]["public_key"]))
            if (
                message.direction is Direction.RESPONSE
                and decoded is not None
                and decoded["code"] in (2102, 2105)
            ):
                aes_key, key_error = self._unwrap(decoded["fields"])
            content = message.content
            if message.direction is Direction.REQUEST and content is not None and decoded is not None:
                if aes_key is None:
                    content.plaintext_error = key_error
                else:
                    self._decrypt(message, aes_key)

    def _private_keys(self) -> list[crypto.RsaKey]:
        if self._keys is not None:
            return self._keys
        if self.client_dir is None:
            self._key_error = "recorded without --client-dir: the client's private key is unknown"
            self._keys = []
            return self._keys
        deadline = time.monotonic() + KEY_WAIT_SECONDS
        while True:
            keys, error = read_client_keys(self.client_dir, self._public_keys)
            if keys or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self._keys, self._key_error = keys, error
        return keys

    def _unwrap(self, fields: dict[str, Any]) -> tuple[bytes | None, str]:
        keys = self._private_keys()
        if not keys:
            return None, self._key_error or "no private key"
        wrapped = bytes.fromhex(fields["encrypted_aes_key"])
        errors = []
        for key in keys:
            try:
                aes_key = crypto.unwrap_aes_key(key, wrapped)
            except CryptoError as error:
                errors.append(str(error))
                continue
            der = private_key_base64(key)
            client_id = fields["client_id"]
            if all(c.client_id != client_id for c in self.session.clients):
                self.session.clients.append(ClientKey(client_id, der, _name_of(self.session, client_id)))
            return aes_key, ""
        return None, "no private key in --client-dir unwraps the AES key: " + "; ".join(errors)

    def _decrypt(self, message: Message, aes_key: bytes) -> None:
        content = message.content
        assert content is not None
        decryptor = crypto.CbcDecryptor(aes_key)
        hasher, crc, size = hashlib.sha256(), Cksum(), 0
        with tempfile.NamedTemporaryFile("w+b", dir=self.recorder.spool_dir, delete=False) as plain:
            try:
                for piece in self.recorder.wire_chunks(message):
                    out = decryptor.update(piece)
                    plain.write(out)
                    hasher.update(out)
                    crc.update(out)
                    size += len(out)
                out = decryptor.finalize()
            except (CryptoError, ValueError) as error:
                Path(plain.name).unlink(missing_ok=True)
                content.plaintext_error = f"the content does not decrypt with the session's AES key: {error}"
                return
            plain.write(out)
            hasher.update(out)
            crc.update(out)
            size += len(out)
        plaintext = Plaintext(size=size, sha256=hasher.hexdigest(), cksum=crc.value)
        path = Path(plain.name)
        if size <= INLINE_LIMIT:
            plaintext.data = path.read_bytes()
            path.unlink()
        else:
            side = self.out_dir / f"{self.session.name}.files"
            side.mkdir(exist_ok=True)
            target = side / f"{message.index}.plain"
            shutil.move(str(path), target)
            plaintext.file = f"{side.name}/{target.name}"
            plaintext.base_dir = self.out_dir
        content.plaintext = plaintext


def _name_of(session: Session, client_id: str) -> str | None:
    for message in session.messages:
        decoded = message.decoded
        if decoded is not None and decoded.get("client_id") == client_id and "name" in decoded["fields"]:
            return str(decoded["fields"]["name"])
    return None
