"""The plaintexts of one recorded connection (spec/sessions.md 5.3): the AES key is unwrapped from
the 2102/2105 with the client's private key read from ``--client-dir``, each 1103's spooled
ciphertext is decrypted beside the session file (inline when small). In 2024A/C the packets of
a file are one ciphertext: they are decrypted as one stream, the plaintext kept on packet 1
(spec/sessions.md 1.3)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from backupproto import crypto
from backupproto.cksum import Cksum
from backupproto.client_files import private_key_base64
from backupproto.dialect import RequestCode, ResponseCode
from backupproto.errors import CryptoError
from backupproto.sessions import INLINE_LIMIT, ClientKey, Direction, Message, Plaintext, Session

from .client_keys import read_client_keys

SEND_PUBLIC_KEY = RequestCode.SEND_PUBLIC_KEY
KEYED = (ResponseCode.AES_KEY, ResponseCode.RECONNECT_APPROVED)
"""The responses that carry a wrapped AES key."""

if TYPE_CHECKING:
    from .connection import ConnectionRecorder

KEY_WAIT_SECONDS = 3.0
"""How long to wait for a first-time client to write its priv.key after the connection ended."""


@dataclass
class _FileInTransit:
    """The decryption of one file, from its first message (packet 1) to its last."""

    first: Message
    decryptor: crypto.CbcDecryptor
    plain: IO[bytes]
    hasher: Any = field(default_factory=hashlib.sha256)
    crc: Cksum = field(default_factory=Cksum)
    size: int = 0
    error: str | None = None
    later: list[Message] = field(default_factory=list)
    """Its packets 2..N (2024A/C)."""

    def take(self, data: bytes) -> None:
        self.plain.write(data)
        self.hasher.update(data)
        self.crc.update(data)
        self.size += len(data)


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
        self._file: _FileInTransit | None = None

    def run(self) -> None:
        """Unwrap each AES key sent on the connection and decrypt the contents that follow it."""
        aes_key: bytes | None = None
        key_error = "no AES key on this connection (no 2102/2105 before the 1103)"
        dialect = self.session.dialect
        for message in self.session.messages:
            decoded = message.decoded
            request = message.direction is Direction.REQUEST
            if request and decoded is not None and dialect.request_role(decoded["code"]) is SEND_PUBLIC_KEY:
                self._public_keys.append(bytes.fromhex(decoded["fields"]["public_key"]))
            if not request and decoded is not None and dialect.response_role(decoded["code"]) in KEYED:
                aes_key, key_error = self._unwrap(decoded["fields"])
            content = message.content
            if message.direction is Direction.REQUEST and content is not None and decoded is not None:
                number = decoded["fields"].get("packet_number", 1)
                if number > 1:  # a later packet: its bytes continue the file begun at packet 1
                    self._continue(message, number == decoded["fields"]["total_packets"])
                elif aes_key is None:
                    content.plaintext_error = key_error
                else:
                    self._begin(message, aes_key)
                    self._continue(message, decoded["fields"].get("total_packets", 1) == 1)
        if self._file is not None:
            self._drop(self._file, "the connection ended before the file's last packet")

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
                aes_key = crypto.unwrap_aes_key(key, wrapped, self.session.dialect.aes_key_size)
            except CryptoError as error:
                errors.append(str(error))
                continue
            der = private_key_base64(key)
            client_id = fields["client_id"]
            if all(c.client_id != client_id for c in self.session.clients):
                self.session.clients.append(ClientKey(client_id, der, _name_of(self.session, client_id)))
            return aes_key, ""
        return None, "no private key in --client-dir unwraps the AES key: " + "; ".join(errors)

    def _begin(self, message: Message, aes_key: bytes) -> None:
        if self._file is not None:
            self._drop(self._file, "the file's packets stopped before its last one")
        spool = tempfile.NamedTemporaryFile("w+b", dir=self.recorder.spool_dir, delete=False)  # noqa: SIM115
        self._file = _FileInTransit(message, crypto.CbcDecryptor(aes_key), spool)

    def _continue(self, message: Message, last: bool) -> None:
        """Decrypt a message's content into the file in transit; at its last message, keep it."""
        file = self._file
        content = message.content
        assert content is not None
        if file is None or file.first.connection != message.connection:
            content.plaintext_error = "a later packet of a file whose packet 1 was not decrypted"
            return
        if file.first is not message:
            file.later.append(message)
        if file.error is None:
            try:
                for piece in self.recorder.wire_chunks(message):
                    file.take(file.decryptor.update(piece))
                if last:
                    file.take(file.decryptor.finalize())
            except (CryptoError, ValueError) as error:
                file.error = f"the content does not decrypt with the session's AES key: {error}"
        if last:
            self._file = None
            self._keep(file)

    def _drop(self, file: _FileInTransit, why: str) -> None:
        file.plain.close()
        Path(file.plain.name).unlink(missing_ok=True)
        assert file.first.content is not None
        file.first.content.plaintext_error = file.error or why

    def _keep(self, file: _FileInTransit) -> None:
        content = file.first.content
        assert content is not None
        if file.error is not None:
            self._drop(file, file.error)
            return
        file.plain.close()
        plaintext = Plaintext(size=file.size, sha256=file.hasher.hexdigest(), cksum=file.crc.value)
        path = Path(file.plain.name)
        if file.size <= INLINE_LIMIT:
            plaintext.data = path.read_bytes()
            path.unlink()
        else:
            side = self.out_dir / f"{self.session.name}.files"
            side.mkdir(exist_ok=True)
            target = side / f"{file.first.index}.plain"
            shutil.move(str(path), target)
            plaintext.file = f"{side.name}/{target.name}"
            plaintext.base_dir = self.out_dir
        content.plaintext = plaintext
        for packet in file.later:  # the plaintext on packet 1 and the hashes say it all
            assert packet.content is not None
            packet.content.ciphertext = None


def _name_of(session: Session, client_id: str) -> str | None:
    for message in session.messages:
        decoded = message.decoded
        if decoded is not None and decoded.get("client_id") == client_id and "name" in decoded["fields"]:
            return str(decoded["fields"]["name"])
    return None
