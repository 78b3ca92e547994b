"""Regenerate the shipped session corpus: ``python -m conformance.sessions.record_corpus [--out DIR]``.

Starts the reference server, puts the recording proxy (`conformance.recording.Recorder`) in
front of it, and drives each flow of the spec through it: the reference client for the flows
it produces, a small scripted client built on `backupproto` (ClientConnection for valid
traffic, the schemas' build helpers for malformed bytes) for the rest. The connections of
one flow are joined into one session named after the flow. The hand-written hostile
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
from backupproto.client_files import ME_INFO, PRIV_KEY, Identity, format_me_info, format_private_key
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
from backupproto.schemas import V3_SCHEMAS
from backupproto.sessions import Session, join
from conformance.flows import ZERO_ID, raw_name
from conformance.recording import Recorder, load, save

HERE = Path(__file__).parent
Address = tuple[str, int]
CONTENT = b"backupproto recorded session corpus\n" * 30  # 1110 bytes: crosses block boundaries


class ScriptedClient:
    """A client that follows a script (valid flows on ClientConnection); keeps priv.key in its folder."""

    def __init__(self, address: Address, folder: Path) -> None:
        self.channel = EngineChannel.connect(address, ClientConnection(), connect_timeout=10, timeout=10)
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
        self.aes_key = crypto.unwrap_aes_key(key, answer.encrypted_aes_key)  # type: ignore[attr-defined]

    def send_file(self, file_name: str, plaintext: bytes) -> Response:
        encryptor = crypto.CbcEncryptor(self.aes_key)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        self.channel.send(SendFile(self.client_id, len(ciphertext), file_name))
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


def reference_client(address: Address, folder: Path, name: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_bytes(CONTENT)
    (folder / "transfer.info").write_text(f"{address[0]}:{address[1]}\n{name}\ndata.txt\n")
    command = [sys.executable, "-m", "reference_client", "--dir", str(folder), "--quiet"]
    return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode


def flow_register_file_crc_ok(address: Address, folder: Path) -> None:
    reference_client(address, folder, "corpus client")


def flow_reconnect(address: Address, folder: Path) -> None:
    reference_client(address, folder, "corpus returning")
    reference_client(address, folder, "corpus returning")


def flow_reconnect_denied(address: Address, folder: Path) -> None:
    """A me.info for an id the server never gave: 1102 -> 2106, then the client registers anew."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = Identity("corpus stranger", os.urandom(16), crypto.generate_private_key())
    (folder / ME_INFO).write_text(format_me_info(identity))
    (folder / PRIV_KEY).write_text(format_private_key(identity.private_key))
    reference_client(address, folder, "corpus stranger")


def flow_duplicate_name(address: Address, folder: Path) -> None:
    reference_client(address, folder / "first", "corpus twin")
    reference_client(address, folder / "second", "corpus twin")


def flow_crc_retry_success(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    client.register_and_key("corpus retry")
    client.send_file("data.txt", corrupted(CONTENT))
    client.channel.send(CrcRetry(client.client_id, "data.txt"))
    client.send_file("data.txt", CONTENT)
    client.request(CrcOk(client.client_id, "data.txt"))
    client.close()


def flow_crc_give_up(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    client.register_and_key("corpus give up")
    for attempt in range(3):
        client.send_file("data.txt", corrupted(CONTENT))
        if attempt < 2:
            client.channel.send(CrcRetry(client.client_id, "data.txt"))
    client.request(CrcGiveUp(client.client_id, "data.txt"))
    client.close()


def _register(name: str) -> Frame:
    """A valid 1100 of a new client, built through the schemas (the error flows alter it)."""
    return request_frame(Register.code, ZERO_ID, {"name": name})


def flow_error_unknown_code(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    client.raw(_register("corpus unknown").with_header(code=1199).data)
    client.close()


def flow_error_bad_version(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    client.raw(_register("corpus v2").with_header(version=2).data)
    client.close()


def flow_error_payload_size_mismatch(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    frame = _register("corpus short")
    client.raw(
        frame.with_header(payload_size=frame.size - frame.header_size - 1).truncated(frame.size - 1).data
    )
    client.close()


def flow_error_hostile_file_name(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    client.register_and_key("corpus hostile")
    block = bytes(V3_SCHEMAS.dialect.aes_block_size)
    fields = {"content_size": len(block), "file_name": raw_name(b"../escape.txt")}
    client.raw(send_file_start(client.client_id, fields).data + block)
    client.close()


def flow_error_truncated_frame(address: Address, folder: Path) -> None:
    client = ScriptedClient(address, folder)
    frame = _register("corpus cut")
    client.raw(frame.truncated(frame.header_size + 100).data, half_close=True)
    client.close()


FLOWS: dict[str, tuple[str, Callable[[Address, Path], None]]] = {
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


def record_flow(name: str, target: Address, work: Path, out: Path) -> Path:
    """Record one flow through a fresh proxy; write the joined session to `out/NAME.json`."""
    description, flow = FLOWS[name]
    client_dir = work / name / "client"
    parts_dir = work / name / "parts"
    recorder = Recorder(
        ("127.0.0.1", 0), target, parts_dir, client_dir=client_dir, name_prefix="part-"
    ).start()
    try:
        flow(recorder.address, client_dir)
    finally:
        recorder.stop()
    if recorder.failures:
        raise RuntimeError(f"{name}: {recorder.failures}")
    parts = [load(path) for path in sorted(recorder.written)]
    if not parts:
        raise RuntimeError(f"{name}: nothing was recorded")
    session: Session = join(name, parts, description)
    session.recorded = {
        "tool": "conformance/sessions/record_corpus.py (python -m conformance record)",
        "server": "reference_server",
        "client": "reference_client" if "reference_client" in flow.__code__.co_names else "scripted client",
    }
    path = out / f"{name}.json"
    save(session, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the sessions (default: here)")
    parser.add_argument(
        "flows", nargs="*", metavar="FLOW", help=f"flows to record (default all: {', '.join(FLOWS)})"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.flows) - set(FLOWS))
    if unknown:
        parser.error(f"unknown flows {unknown}; known: {', '.join(FLOWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bp-corpus-") as temporary:
        work = Path(temporary)
        (work / "data").mkdir()
        server = ServerProcess.start(work / "data")
        try:
            assert server.target is not None
            for name in args.flows or FLOWS:
                path = record_flow(name, (server.target.host, server.target.port), work, args.out)
                print(f"wrote {path}")
        finally:
            server.stop()
            shutil.rmtree(work / "data", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
