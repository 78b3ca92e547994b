"""The client half of a session played against a server, checking every response (spec/sessions.md 6)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backupproto import crypto
from backupproto.dialect import PAYLOAD_CLIENT_ID, RequestCode, ResponseCode
from backupproto.errors import BackupProtoError
from backupproto.io.channel import Channel, ChannelTimeout, ConnectionLost
from backupproto.schemas import build_struct, schemas_for
from backupproto.sessions import Direction, Message, Session, Splitter

from .. import transport
from ..recording.files import load
from .content import FileStream, content_chunks, fresh_name, private_keys
from .peer import Peer
from .report import NotReplayable, ReplayMismatch, ReplayReport


class ServerReplay:
    """Plays a session's requests to a server and checks its responses."""

    def __init__(
        self, session: Session, address: tuple[str, int], *, timeout: float = 10.0, token: str | None = None
    ) -> None:
        blockers = session.blockers()
        if blockers:
            raise NotReplayable(f"session {session.name!r} cannot be replayed: " + "; ".join(blockers))
        self.session = session
        self.schemas = schemas_for(session.dialect)
        self.address = address
        self.timeout = timeout
        self.token = token or secrets.token_hex(4)
        self.keys = private_keys(session)
        self.ids: dict[str, bytes] = {}
        """recorded client id (hex) -> the id the server gave this run"""
        self.names: dict[str, str] = {}
        self.peers: dict[int, Peer] = {}
        self.variables = set(session.variables)

    def run(self) -> ReplayReport:
        """Replay every message in order; `ReplayMismatch` at the first difference."""
        started = time.monotonic()
        report = ReplayReport(self.session.name)
        try:
            for message in self.session.messages:
                peer = self._peer(message.connection)
                if message.direction is Direction.REQUEST:
                    self._send(peer, message)
                else:
                    self._expect(peer, message)
                report.messages += 1
        finally:
            for peer in self.peers.values():
                peer.close()
        report.connections = len(self.peers)
        report.seconds = time.monotonic() - started
        report.names = dict(self.names)
        return report

    def _peer(self, connection: int) -> Peer:
        peer = self.peers.get(connection)
        if peer is None:
            try:
                channel = Channel.connect(
                    self.address,
                    Splitter(Direction.RESPONSE, self.schemas),
                    connect_timeout=self.timeout,
                    timeout=self.timeout,
                )
            except (ChannelTimeout, ConnectionLost) as error:
                raise ReplayMismatch(
                    self.session.name,
                    -1,
                    f"cannot connect to {self.address[0]}:{self.address[1]} for connection {connection}",
                    "an accepted connection",
                    str(error),
                ) from None
            peer = self.peers[connection] = Peer(channel, self.timeout)
        return peer

    # requests

    def _name(self, recorded: str) -> str:
        if "name" not in self.variables:
            return recorded
        if recorded not in self.names:
            self.names[recorded] = fresh_name(recorded, self.token)
        return self.names[recorded]

    def _client_id(self, recorded_hex: str) -> bytes:
        if "client_id" in self.variables and recorded_hex in self.ids:
            return self.ids[recorded_hex]
        return bytes.fromhex(recorded_hex)

    def _send(self, peer: Peer, message: Message) -> None:
        if peer.send_as_recorded(message):
            return
        decoded = message.decoded
        assert decoded is not None
        code = self.schemas.request_role(decoded["code"])
        assert code is not None  # the session file was validated against its dialect
        client_id = self._client_id(decoded["client_id"])
        fields = dict(decoded["fields"])
        if "name" in fields:
            fields["name"] = self._name(fields["name"])
        if "public_key" in fields:
            fields["public_key"] = bytes.fromhex(fields["public_key"])
        schemas = self.schemas
        if code is RequestCode.SEND_FILE:
            prefix = build_struct(
                schemas.send_file_prefix, {PAYLOAD_CLIENT_ID: client_id, **fields}, "SEND_FILE prefix"
            )
            header = schemas.build_request_header(
                client_id, code, decoded["payload_size"], decoded["version"]
            )
            peer.send(header + bytes(prefix))
            if message.content is not None:
                for chunk in self._content(peer, message, fields):
                    peer.send(chunk)
            return
        peer.send(schemas.build_request(code, client_id, fields, decoded["version"]))

    def _content(self, peer: Peer, message: Message, fields: dict[str, Any]) -> Iterator[bytes]:
        """A SEND_FILE's content for this run; a 2024 packet's share of its file's one ciphertext."""
        content = message.content
        assert content is not None
        replace = "content" in self.variables
        what = f"session {self.session.name!r}, message {message.index}"
        number, total = fields.get("packet_number", 1), fields.get("total_packets", 1)
        if total == 1 or not replace:
            return content_chunks(content, peer.aes_key, replace, what)
        if number == 1:
            whole = content_chunks(content, peer.aes_key, replace, what, size=fields["content_size"])
            peer.file = FileStream(whole)
        if not isinstance(peer.file, FileStream):
            raise NotReplayable(f"{what}: packet {number} of a file whose packet 1 was not sent")
        return peer.file.take(content.size)

    # responses

    def _expect(self, peer: Peer, message: Message) -> None:
        expected: Any = "the server closes the connection" if message.close else message.decoded
        code = str(message.decoded["code"]) if message.decoded is not None else ""
        peer.timeout = transport.response_wait_s(None, code, self.timeout)  # a response found dropped: brief
        if expected is None:
            expected = {"hex": message.raw.hex(), "error": message.error}
        actual = peer.receive_like(self.session.name, message, expected, "server")
        if actual is None:
            return
        assert message.decoded is not None
        self._compare(peer, message, message.decoded, actual)

    def _fail(self, message: Message, reason: str, expected: Any, actual: Any) -> None:
        raise ReplayMismatch(self.session.name, message.index, reason, expected, actual)

    def _compare(
        self, peer: Peer, message: Message, expected: dict[str, Any], actual: dict[str, Any]
    ) -> None:
        shown = json.loads(json.dumps(expected))
        if "encrypted_aes_key" in shown["fields"] and "encrypted_aes_key" in self.variables:
            size = len(shown["fields"]["encrypted_aes_key"]) // 2
            shown["fields"]["encrypted_aes_key"] = f"<{size} bytes, any value>"
        if actual["code"] != expected["code"]:
            self._fail(
                message, f"response code {actual['code']} instead of {expected['code']}", shown, actual
            )
        fields, got = expected["fields"], actual["fields"]
        recorded_id = fields.get("client_id")
        if recorded_id is not None:
            registered = self.schemas.wire_code(ResponseCode.REGISTERED)
            if expected["code"] == registered and "client_id" in self.variables:
                taken = {value.hex(): key for key, value in self.ids.items()}
                if got["client_id"] in taken and taken[got["client_id"]] != recorded_id:
                    self._fail(message, "the server gave an id it had given another client", shown, actual)
                self.ids[recorded_id] = bytes.fromhex(got["client_id"])
            want = self._client_id(recorded_id).hex()
            shown["fields"]["client_id"] = want
            if got["client_id"] != want:
                self._fail(message, "client_id differs", shown, actual)
        for key, value in fields.items():
            if key == "client_id":
                continue
            if key == "encrypted_aes_key" and "encrypted_aes_key" in self.variables:
                self._check_key(peer, message, recorded_id, got[key], shown, actual)
                continue
            if got.get(key) != value:
                self._fail(message, f"field {key} differs", shown, actual)

    def _check_key(
        self, peer: Peer, message: Message, client: str | None, wrapped_hex: str, shown: Any, actual: Any
    ) -> None:
        key = self.keys.get(client or "")
        if key is None and len(self.keys) == 1:
            key = next(iter(self.keys.values()))
        if key is None:
            peer.aes_key = None
            return
        try:
            key_size = self.session.dialect.aes_key_size
            peer.aes_key = crypto.unwrap_aes_key(key, bytes.fromhex(wrapped_hex), key_size)
        except BackupProtoError as error:
            self._fail(
                message,
                f"encrypted_aes_key does not unwrap with the client's private key: {error}",
                shown,
                actual,
            )


def replay_against_server(
    session: Session | Path, address: tuple[str, int], *, timeout: float = 10.0
) -> ReplayReport:
    """Replay `session` (or the session file) against the server at `address`."""
    loaded = session if isinstance(session, Session) else load(session)
    return ServerReplay(loaded, address, timeout=timeout).run()
