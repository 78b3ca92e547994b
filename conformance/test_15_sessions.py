"""Section 15: every recorded session is a case, ``15-replay-<session-name>`` (its level from the file).

The sessions are the shipped corpus (2023A: ``conformance/sessions/*.json``, other dialects:
``conformance/sessions/<DIALECT>/*.json``; each runs only in its dialect) and those of the folder
given with ``--bp-sessions DIR``. One test function replays them all: `pytest_generate_tests`
parametrises it with one `SessionCase` (and its `CaseInfo`) per file. Each replays its client
half against the target with `conformance.replay` (spec/sessions.md 6) and fails at the first
message that differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backupproto.sessions import NAME_PATTERN, SessionError
from conformance.case import MUST, CaseContext, CaseInfo, Level, declare
from conformance.plugin import sessions_folder, usage_error
from conformance.recording import load
from conformance.replay import NotReplayable, ReplayMismatch, replay_against_server

CORPUS = Path(__file__).parent / "sessions"
REQUIREMENT = (
    "A server MUST answer a recorded conversation as recorded: same response codes and fields, "
    "in the same order, closing where the recording closes; client ids, AES keys, file ciphertexts "
    "and client names are variables (spec/sessions.md 4)."
)


@dataclass(frozen=True)
class SessionCase:
    """One session file and the case it makes (`problem`: why the file is not a valid session)."""

    path: Path
    info: CaseInfo
    problem: str | None


def session_cases(extra: Path | None) -> tuple[list[SessionCase], list[str]]:
    """The corpus' sessions, then those of `extra` (the first of two of one name); the clashes."""
    corpus = sorted(CORPUS.glob("*.json")) + sorted(CORPUS.glob("*/*.json"))  # 2023A, then <DIALECT>/
    files = corpus + (sorted(extra.glob("*.json")) if extra else [])
    made: dict[str, SessionCase] = {}
    clashes = []
    for path in files:
        made_case = _session_case(path)
        known = made.get(made_case.info.id)
        if known is not None:
            case_id = made_case.info.id
            clashes.append(f"--bp-sessions: two sessions make case {case_id}: {known.path} and {path}")
            continue
        made[made_case.info.id] = made_case
    return list(made.values()), clashes


def _session_case(path: Path) -> SessionCase:
    name = path.stem if NAME_PATTERN.match(path.stem) else "invalid-name"
    level, problem, dialects = MUST, None, tuple[str, ...]()
    try:
        session = load(path)
        name, level, dialects = session.name, Level(session.level), (session.dialect.name,)
    except (SessionError, ValueError) as error:
        problem = str(error)
    info = declare(f"15-replay-{name}", level=level, requirement=REQUIREMENT, dialects=dialects)
    return SessionCase(path, info, problem)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name != test_15_replay.__name__:
        return
    cases, clashes = session_cases(sessions_folder(metafunc.config))
    for clash in clashes:
        usage_error(metafunc.config, clash)
    metafunc.parametrize(
        ("case_info", "session"),
        [(made.info, made) for made in cases],
        ids=[made.info.id for made in cases],
    )


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def test_15_replay(case_context: CaseContext, case_info: CaseInfo, session: SessionCase) -> None:
    """Replay one recorded session against the target."""
    if session.problem is not None:
        case_context.fail("a valid session file (spec/sessions.md)", session.problem)
    target = case_context.target
    mismatch: ReplayMismatch | None = None
    try:
        replay_against_server(session.path, (target.host, target.port), timeout=case_context.timeout_s)
    except NotReplayable as error:
        pytest.skip(f"{session.path.name}: {error}")
    except ReplayMismatch as error:
        mismatch = error
    if mismatch is not None:
        case_context.fail(
            f"message {mismatch.index} as recorded in {session.path}: {_json(mismatch.expected)}",
            _json(mismatch.actual),
            hint=mismatch.reason,
        )
