"""Regenerate the shipped session corpus: ``python -m conformance.sessions.record_corpus [--dialect D|all]``.

Options: ``--dialect NAME|all`` (default 2023A), ``--out DIR`` (corpus root), flow names (default all).

Per dialect it starts the reference server in that dialect (``backup-server --dialect NAME``),
puts the recording proxy (`conformance.recording.Recorder`) in front of it, and drives each
flow of the spec through it: the reference client for the flows it produces, a small scripted
client built on `backupproto` (ClientConnection for valid traffic, the schemas' build helpers
for malformed bytes) for the rest. The connections of one flow are joined into one session
named after the flow. 2023A's sessions go to ``conformance/sessions/NAME.json``, another
dialect's to ``conformance/sessions/<DIALECT>/NAME-<dialect>.json`` (e.g.
``2024A/reconnect-2024a.json``: case ids stay unique). A dialect records only the flows it has
(no reconnect in 2022C); descriptions name codes by their 2023A roles. The hand-written hostile
sessions (``hostile-*.json``) are not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from backupproto import crypto
from backupproto.client_files import (
    ME_INFO,
    PRIV_KEY,
    TRANSFER_INFO,
    Identity,
    format_me_info,
    format_private_key,
    format_transfer_info,
)
from backupproto.dialect import DIALECTS, V3, Dialect, dialect_named
from backupproto.engine import ClientConnection
from backupproto.events import (
    CrcGiveUp,
    CrcOk,
    CrcRetry,
    FileChunk,
    FileEnd,
    Register,
    Response,
    SendFile,
    SendPublicKey,
)
from backupproto.frames import Frame, request_frame, send_file_start
from backupproto.io.channel import ChannelTimeout, ConnectionLost, EngineChannel
from backupproto.io.server_process import ServerProcess
from backupproto.schemas import schemas_for
from backupproto.sessions import Session, join
from conformance.flows import ZERO_ID, raw_name
from conformance.recording import Recorder, load, save

HERE = Path(__file__).parent
Address = tuple[str, int]
CONTENT = b"backupproto recorded session corpus\n" * 30  # 1110 bytes: crosses block boundaries


class ScriptedClient:
    """A client that follows a script (valid flows on ClientConnection); keeps priv.key in its folder."""

    def __init__(self, address: Address, folder: Path, dialect: Dialect) -> None:
        connection = ClientConnection(dialect)
        self.channel = EngineChannel.connect(address, connection, connect_timeout=10, timeout=10)
        self.dialect = dialect
        self.folder = folder
        self.client_id = ZERO_ID
        self.aes_key = b""

    def request(self, event: Register | SendPublicKey | CrcOk | CrcGiveUp) -> Response:
        self.channel.send(event)
        return self.response()

    def response(self) -> Response:
        event = self.channel.next_event()
        assert isinstance(event, Response), event
        return event

    def register_and_key(self, name: str) -> None:
        registered = self.request(Register(ZERO_ID, name))
        self.client_id = registered.client_id  # type: ignore[attr-defined]
        key = crypto.generate_private_key()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / PRIV_KEY).write_text(format_private_key(key))
        answer = self.request(SendPublicKey(self.client_id, name, crypto.public_key_der(key)))
        wrapped = answer.encrypted_aes_key  # type: ignore[attr-defined]
        self.aes_key = crypto.unwrap_aes_key(key, wrapped, self.dialect.aes_key_size)

    def send_file(self, file_name: str, plaintext: bytes) -> Response:
        encryptor = crypto.CbcEncryptor(self.aes_key)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        plain_size = len(plaintext) if self.dialect.packetised else None
        self.channel.send(SendFile(self.client_id, len(ciphertext), file_name, plain_size))
        self.channel.send(FileChunk(ciphertext))
        self.channel.send(FileEnd())
        return self.response()

    def raw(self, data: bytes, *, half_close: bool = False) -> None:
        """Send bytes as they are, then read until the server closes."""
        with contextlib.suppress(ConnectionLost, ChannelTimeout):
            self.channel.send_bytes(data)
            if half_close:
                self.channel.shutdown_write()
            while self.channel.receive_bytes():
                pass

    def close(self) -> None:
        self.channel.close()


def corrupted(plaintext: bytes) -> bytes:
    """Same length, other bytes: what a client whose file changed (or a broken encryptor) sends."""
    return bytes(b ^ 0x5A for b in plaintext[:16]) + plaintext[16:]


# --- the flows (each returns after its connections closed) ----------------------------------


def reference_client(address: Address, folder: Path, name: str, dialect: Dialect) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_bytes(CONTENT)
    transfer_info = format_transfer_info(f"{address[0]}:{address[1]}", name, ["data.txt"])
    (folder / TRANSFER_INFO).write_text(transfer_info)
    command = [sys.executable, "-m", "reference_client", "--dir", str(folder), "--quiet"]
    command += ["--dialect", dialect.name]
    return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode


def flow_register_file_crc_ok(address: Address, folder: Path, dialect: Dialect) -> None:
    reference_client(address, folder, "corpus client", dialect)


def flow_reconnect(address: Address, folder: Path, dialect: Dialect) -> None:
    reference_client(address, folder, "corpus returning", dialect)
    reference_client(address, folder, "corpus returning", dialect)


def flow_reconnect_denied(address: Address, folder: Path, dialect: Dialect) -> None:
    """A me.info for an id the server never gave: 1102 -> 2106, then the client registers anew."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = Identity("corpus stranger", os.urandom(16), crypto.generate_private_key())
    (folder / ME_INFO).write_text(format_me_info(identity))
    (folder / PRIV_KEY).write_text(format_private_key(identity.private_key))
    reference_client(address, folder, "corpus stranger", dialect)


def flow_duplicate_name(address: Address, folder: Path, dialect: Dialect) -> None:
    reference_client(address, folder / "first", "corpus twin", dialect)
    reference_client(address, folder / "second", "corpus twin", dialect)


def flow_crc_retry_success(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    client.register_and_key("corpus retry")
    client.send_file("data.txt", corrupted(CONTENT))
    client.channel.send(CrcRetry(client.client_id, "data.txt"))
    client.send_file("data.txt", CONTENT)
    client.request(CrcOk(client.client_id, "data.txt"))
    client.close()


def flow_crc_give_up(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    client.register_and_key("corpus give up")
    for attempt in range(3):
        client.send_file("data.txt", corrupted(CONTENT))
        if attempt < 2:
            client.channel.send(CrcRetry(client.client_id, "data.txt"))
    client.request(CrcGiveUp(client.client_id, "data.txt"))
    client.close()


def _register(name: str, dialect: Dialect) -> Frame:
    """A valid 1100 of a new client, built through the schemas (the error flows alter it)."""
    return request_frame(Register.code, ZERO_ID, {"name": name}, schemas=schemas_for(dialect))


def flow_error_unknown_code(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    client.raw(_register("corpus unknown", dialect).with_header(code=1199).data)
    client.close()


def flow_error_bad_version(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    client.raw(_register("corpus v2", dialect).with_header(version=2).data)
    client.close()


def flow_error_payload_size_mismatch(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    frame = _register("corpus short", dialect)
    client.raw(
        frame.with_header(payload_size=frame.size - frame.header_size - 1).truncated(frame.size - 1).data
    )
    client.close()


def flow_error_hostile_file_name(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    client.register_and_key("corpus hostile")
    block = bytes(dialect.aes_block_size)
    fields = {"content_size": len(block), "file_name": raw_name(b"../escape.txt")}
    if dialect.packetised:
        fields |= {"orig_file_size": 0, "packet_number": 1, "total_packets": 1}
    client.raw(send_file_start(client.client_id, fields, schemas=schemas_for(dialect)).data + block)
    client.close()


def flow_error_truncated_frame(address: Address, folder: Path, dialect: Dialect) -> None:
    client = ScriptedClient(address, folder, dialect)
    frame = _register("corpus cut", dialect)
    client.raw(frame.truncated(frame.header_size + 100).data, half_close=True)
    client.close()


Flow = Callable[[Address, Path, Dialect], None]
RECONNECT_FLOWS = frozenset({"reconnect", "reconnect-denied"})
"""Flows of dialects with reconnect (1102) only."""

FLOWS: dict[str, tuple[str, Flow]] = {
    "register-file-crc-ok": (
        "The reference client registers, sends its public key, sends one file; CRC matches (1104).",
        flow_register_file_crc_ok,
    ),
    "crc-retry-success": (
        "First send carries other bytes: CRC differs, 1105 (no answer), the resend matches, 1104.",
        flow_crc_retry_success,
    ),
    "crc-give-up": ("Three sends whose CRC differs, then 1106; the server answers 2104.", flow_crc_give_up),
    "reconnect": (
        "The reference client registers and backs up, then runs again: 1102 -> 2105.",
        flow_reconnect,
    ),
    "reconnect-denied": (
        "The reference client holds a me.info the server does not know: 1102 -> 2106, then registers anew.",
        flow_reconnect_denied,
    ),
    "duplicate-name": (
        "Two reference clients register the same name: the second gets 2101.",
        flow_duplicate_name,
    ),
    "error-unknown-code": ("Request code 1199: 2107, then the server closes.", flow_error_unknown_code),
    "error-bad-version": ("Request version 2: 2107, then the server closes.", flow_error_bad_version),
    "error-payload-size-mismatch": (
        "1100 with payload_size 254: 2107, then the server closes.",
        flow_error_payload_size_mismatch,
    ),
    "error-hostile-file-name": (
        "1103 with file name '../escape.txt': 2107, then the server closes.",
        flow_error_hostile_file_name,
    ),
    "error-truncated-frame": (
        "A 1100 cut off after 123 bytes and the client's side closed: the server closes.",
        flow_error_truncated_frame,
    ),
}


def flows_of(dialect: Dialect) -> list[str]:
    """The flows `dialect` has (no reconnect flows without 1102)."""
    return [name for name in FLOWS if dialect.has_reconnect or name not in RECONNECT_FLOWS]


def session_name(flow: str, dialect: Dialect) -> str:
    """A flow's session (and case) name: the flow's in 2023A, with the dialect appended elsewhere."""
    return flow if dialect is V3 else f"{flow}-{dialect.name.lower()}"


def corpus_folder(root: Path, dialect: Dialect) -> Path:
    """Where a dialect's sessions go: `root` for 2023A, `root/<DIALECT>` for another."""
    return root if dialect is V3 else root / dialect.name


def record_flow(name: str, target: Address, work: Path, out: Path, dialect: Dialect = V3) -> Path:
    """Record one flow through a fresh proxy; write the joined session to `out/<session name>.json`."""
    description, flow = FLOWS[name]
    if dialect is not V3:
        description = f"{description} (dialect {dialect.name}; codes named by their 2023A roles)"
    client_dir = work / name / "client"
    parts_dir = work / name / "parts"
    recorder = Recorder(
        ("127.0.0.1", 0), target, parts_dir, client_dir=client_dir, name_prefix="part-", dialect=dialect
    ).start()
    try:
        flow(recorder.address, client_dir, dialect)
    finally:
        recorder.stop()
    if recorder.failures:
        raise RuntimeError(f"{name}: {recorder.failures}")
    parts = [load(path) for path in sorted(recorder.written)]
    if not parts:
        raise RuntimeError(f"{name}: nothing was recorded")
    session: Session = join(session_name(name, dialect), parts, description)
    session.recorded = {
        "tool": "conformance/sessions/record_corpus.py (python -m conformance record)",
        "server": "reference_server",
        "client": "reference_client" if "reference_client" in flow.__code__.co_names else "scripted client",
    }
    path = out / f"{session.name}.json"
    save(session, path)
    return path


def record_dialect(dialect: Dialect, flows: list[str], root: Path) -> None:
    """Record `flows` (those `dialect` has) against ``backup-server --dialect NAME`` into its folder."""
    out = corpus_folder(root, dialect)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bp-corpus-") as temporary:
        work = Path(temporary)
        (work / "data").mkdir()
        server = ServerProcess.start(work / "data", "--dialect", dialect.name)
        try:
            assert server.target is not None
            for name in [flow for flow in flows_of(dialect) if not flows or flow in flows]:
                path = record_flow(name, (server.target.host, server.target.port), work, out, dialect)
                print(f"wrote {path}")
        finally:
            server.stop()
            shutil.rmtree(work / "data", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=HERE, help="corpus root (default: here; other dialects in <DIALECT>/)"
    )
    parser.add_argument(
        "--dialect",
        default=V3.name,
        metavar="NAME",
        help=f"dialect to record ({', '.join(DIALECTS)}) or 'all' (default {V3.name})",
    )
    parser.add_argument(
        "flows", nargs="*", metavar="FLOW", help=f"flows to record (default all: {', '.join(FLOWS)})"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.flows) - set(FLOWS))
    if unknown:
        parser.error(f"unknown flows {unknown}; known: {', '.join(FLOWS)}")
    try:
        dialects = list(DIALECTS.values()) if args.dialect == "all" else [dialect_named(args.dialect)]
    except ValueError as error:
        parser.error(str(error))
    for dialect in dialects:
        record_dialect(dialect, args.flows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
