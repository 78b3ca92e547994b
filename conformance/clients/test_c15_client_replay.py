"""Client cases from recorded sessions (spec 15): each shipped session whose client half a client
can play (every connection opens with 1100 or 1102) becomes ``15-client-replay-<name>``. The
server half is played by `conformance.replay.ReplayServer`; the client is run once per recorded
connection: in a fresh folder for a new client (1100), in the folder of the client so far when it
returns (1102). Its requests must match the recording."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backupproto.dialect import RequestCode, ResponseCode
from backupproto.sessions import Direction, Session, SessionError
from conformance.case import Level
from conformance.recording import load, plaintext_chunks
from conformance.replay import ReplayMismatch, ReplayServer

from .context import ClientCase, client_case

CORPUS = Path(__file__).resolve().parent.parent / "sessions"
REQUIREMENT = (
    "A client MUST play its half of a recorded conversation as recorded: same request codes and "
    "fields, in the same order, closing where the recording closes; client ids, AES keys, "
    "ciphertexts and names are variables (spec/sessions.md 4, 6)."
)
OPENERS = (int(RequestCode.REGISTER), int(RequestCode.RECONNECT))
SETTLEMENTS = (int(RequestCode.CRC_OK), int(RequestCode.CRC_RETRY), int(RequestCode.CRC_GIVE_UP))
PLACEHOLDER = {"unsent.txt": b"this client is refused before it sends a file\n"}


def _connections(session: Session) -> list[list[Any]]:
    """The session's messages grouped by connection, in order."""
    grouped: dict[int, list[Any]] = {}
    for message in session.messages:
        grouped.setdefault(message.connection, []).append(message)
    return [grouped[key] for key in sorted(grouped)]


def playable(session: Session) -> bool:
    """A conformant client can play the client half: every request decodes, every connection opens
    with 1100 or 1102, and each CRC settlement follows from the recorded cksums."""
    for messages in _connections(session):
        requests = [m for m in messages if m.direction is Direction.REQUEST and not m.close]
        if not requests or requests[0].code not in OPENERS or any(m.decoded is None for m in requests):
            return False
    return _crc_consistent(session) and not session.blockers()


def _crc_consistent(session: Session) -> bool:
    """After each 2103 the recorded client confirms (1104) exactly when the cksum is the plaintext's."""
    plain_cksum: int | None = None
    answered: int | None = None
    for message in session.messages:
        if message.close or message.decoded is None:
            continue
        code = message.code
        if code == int(RequestCode.SEND_FILE):
            plain = message.content.plaintext if message.content is not None else None
            plain_cksum = plain.cksum if plain is not None else None
        elif code == int(ResponseCode.FILE_RECEIVED):
            answered = int(message.decoded["fields"]["cksum"])
        elif code in SETTLEMENTS and answered is not None:
            if (code == int(RequestCode.CRC_OK)) != (answered == plain_cksum):
                return False
            answered = None
    return True


def _file(messages: list[Any]) -> dict[str, bytes]:
    """The file the recorded client sent on this connection (its first 1103's plaintext)."""
    for message in messages:
        if message.code == int(RequestCode.SEND_FILE) and message.content is not None:
            plain = message.content.plaintext
            if plain is not None and message.decoded is not None:
                return {str(message.decoded["fields"]["file_name"]): b"".join(plaintext_chunks(plain))}
    return PLACEHOLDER


def _replay(client_case: ClientCase, session: Session) -> None:
    recorded = session.dialect.name
    client_case.require(client_case.dialect.name == recorded, f"a session recorded in {recorded}")
    server = ReplayServer(session, timeout=client_case.mode.timeout_s).start()
    folder: Path | None = None
    runs = []
    try:
        for number, messages in enumerate(_connections(session), 1):
            opener = next(m for m in messages if m.direction is Direction.REQUEST)
            if opener.code == int(RequestCode.REGISTER) or folder is None:
                folder = client_case.tmp_path / f"client-{number}"
            identity = None
            if opener.code == int(RequestCode.RECONNECT) and not (folder / "me.info").exists():
                identity = client_case.saved_identity().identity
            name = identity.name if identity is not None else "alice"
            run = client_case.launch(server.address, folder, name, _file(messages), identity)
            runs.append((folder, run))
            if run.hung or run.crashed:
                break
        mismatch: ReplayMismatch | None = None
        try:
            server.wait(timeout=client_case.mode.timeout_s)
        except ReplayMismatch as error:
            mismatch = error
    finally:
        server.close()
    evidence = [line for folder, run in runs for line in [f"--- run in {folder}", *run.tail()]]
    for _, run in runs:
        if run.hung or run.crashed:
            what = "HUNG" if run.hung else "CRASHED"
            client_case.fail("the client ends each run", f"the client {what}", hint="\n".join(evidence))
    if mismatch is not None:
        client_case.fail(
            f"message {mismatch.index} as recorded in {session.name}.json: {_json(mismatch.expected)}",
            _json(mismatch.actual),
            hint=f"{mismatch.reason}\n" + "\n".join(evidence),
        )


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _make_case(session: Session) -> tuple[str, Callable[..., Any]]:
    @client_case(f"15-client-replay-{session.name}", level=Level(session.level), requirement=REQUIREMENT)
    def replay_case(client_case: ClientCase) -> None:
        _replay(client_case, session)

    name = "test_client_replay_" + session.name.replace("-", "_")
    replay_case.__name__ = replay_case.__qualname__ = name
    replay_case.__doc__ = f"Play {session.name}.json's server half to the client."
    return name, replay_case


def _sessions() -> list[Session]:
    found = []
    for path in sorted(CORPUS.glob("*.json")):
        try:
            session = load(path)
        except SessionError:
            continue  # the server-side case 15-replay-* reports broken session files
        if playable(session):
            found.append(session)
    return found


for _session in _sessions():
    _name, _function = _make_case(_session)
    globals()[_name] = _function
del _session, _name, _function  # each case collected once, under its own name
