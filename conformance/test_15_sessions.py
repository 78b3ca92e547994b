"""Section 15: every recorded session is a case, ``15-replay-<session-name>`` (level MUST).

The sessions are the shipped corpus (``conformance/sessions/*.json``) and those of the folder
given with ``--sessions DIR``. Each replays its client half against the target with
`conformance.replay` (spec/sessions.md 6) and fails at the first message that differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backupproto.sessions import NAME_PATTERN, SessionError
from conformance.case import MUST, CaseContext, Level, case
from conformance.plugin import active_config
from conformance.recording import load
from conformance.replay import NotReplayable, ReplayMismatch, replay_against_server

CORPUS = Path(__file__).parent / "sessions"
REQUIREMENT = (
    "A server MUST answer a recorded conversation as recorded: same response codes and fields, "
    "in the same order, closing where the recording closes; client ids, AES keys, file ciphertexts "
    "and client names are variables (spec/sessions.md 4)."
)


def _session_files() -> list[Path]:
    files = sorted(CORPUS.glob("*.json"))
    config = active_config()
    extra = config.getoption("sessions", None) if config is not None else None
    if extra:
        folder = Path(extra)
        if not folder.is_dir():
            raise pytest.UsageError(f"--sessions {extra}: not a folder of session files (*.json)")
        files += sorted(folder.glob("*.json"))
    return files


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _make_case(path: Path) -> tuple[str, Callable[..., Any]]:
    name = path.stem if NAME_PATTERN.match(path.stem) else "invalid-name"
    level = MUST
    try:
        session = load(path)
        name, level = session.name, Level(session.level)
        problem = None
    except (SessionError, ValueError) as error:
        problem = str(error)

    @case(f"15-replay-{name}", level=level, requirement=REQUIREMENT)
    def replay_case(case_context: CaseContext) -> None:
        if problem is not None:
            case_context.fail("a valid session file (spec/sessions.md)", problem)
        target = case_context.target
        mismatch: ReplayMismatch | None = None
        try:
            replay_against_server(path, (target.host, target.port), timeout=case_context.timeout_s)
        except NotReplayable as error:
            pytest.skip(f"{path.name}: {error}")
        except ReplayMismatch as error:
            mismatch = error
        if mismatch is not None:
            case_context.fail(
                f"message {mismatch.index} as recorded in {path}: {_json(mismatch.expected)}",
                _json(mismatch.actual),
                hint=mismatch.reason,
            )

    replay_case.__name__ = replay_case.__qualname__ = "test_15_replay_" + name.replace("-", "_")
    replay_case.__doc__ = f"Replay {path.name} against the target."
    return replay_case.__name__, replay_case


for _path in _session_files():
    _function_name, _function = _make_case(_path)
    if _function_name in globals():
        raise pytest.UsageError(f"two sessions are named {_function_name[16:]!r}: {_path}")
    globals()[_function_name] = _function
