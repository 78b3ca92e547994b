"""The pytest plugin of client mode (its own ``pytest11`` entry point, beside the suite's).

``--bp-client-cmd CMD`` or ``--bp-client-listen HOST:PORT`` switch the suite to client mode: the
server cases are deselected and the client cases (`context.client_case`) run. Without either, the
client cases are deselected. Nothing happens when no conformance case is collected.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backupproto.client_timing import RESPONSE_TIMEOUT_S
from conformance.case import case_of, parse_target
from conformance.settings import parse_dialect

from .context import ClientCase, ClientMode, is_client_case
from .detection import Detection, detect_client_dialect

DEFAULT_TIMEOUT_S = 30.0
"""One run of the client: start-up, RSA key generation and a backup, with a wide margin."""


def silent_budget(run_timeout_s: float) -> float:
    """The silent-server case's budget: an ordinary run's plus the spec's RECOMMENDED response
    timeout (2.4), after which a client gives up without a retry (8.4)."""
    return run_timeout_s + RESPONSE_TIMEOUT_S


_MODE = pytest.StashKey["ClientMode | None"]()
_DETECTION = pytest.StashKey[Detection]()
DIALECT_CASE = "17.1-client-dialect"
"""The case that carries the finding of a client that speaks no dialect (the others are deselected)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance-clients", "backupproto conformance suite, client mode")
    group.addoption(
        "--bp-client-cmd",
        metavar="CMD",
        help="certify a client: run CMD (in a prepared working folder) once per client case",
    )
    group.addoption(
        "--bp-client-cwd-template",
        metavar="DIR",
        help="copy DIR's files into each working folder first (DLLs, config the client needs)",
    )
    group.addoption(
        "--bp-client-listen",
        metavar="HOST:PORT",
        help="client mode for a client started by hand (another machine): listen here and prompt",
    )
    group.addoption(
        "--bp-client-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds one client run may take before it is killed (default {DEFAULT_TIMEOUT_S:g})",
    )
    group.addoption(
        "--bp-client-silent-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds the client may take to give up on a server that never answers (default: "
        f"--bp-client-timeout + the spec's {RESPONSE_TIMEOUT_S:g} s response timeout, "
        f"{silent_budget(DEFAULT_TIMEOUT_S):g} s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_MODE] = _mode(config)


def _mode(config: pytest.Config) -> ClientMode | None:
    command = config.getoption("bp_client_cmd")
    listen = config.getoption("bp_client_listen")
    if command and listen:
        raise pytest.UsageError("--bp-client-cmd and --bp-client-listen exclude each other")
    if not command and not listen:
        return None
    template = config.getoption("bp_client_cwd_template")
    if template and not Path(template).is_dir():
        raise pytest.UsageError(f"--bp-client-cwd-template {template}: not a folder")
    try:
        target = parse_target(listen) if listen else None
    except ValueError as error:
        raise pytest.UsageError(f"--bp-client-listen: {error}") from None
    timeout_s = float(config.getoption("bp_client_timeout"))
    silent = config.getoption("bp_client_silent_timeout")
    return ClientMode(
        command=absolute_paths(command) if command else None,
        listen=target,
        cwd_template=Path(template) if template else None,
        timeout_s=timeout_s,
        silent_timeout_s=float(silent) if silent is not None else silent_budget(timeout_s),
        dialect=parse_dialect(config.getoption("bp_dialect", None)),
    )


def absolute_paths(command: str) -> str:
    """CMD with each word that names an existing relative path made absolute: the client runs in
    the case's working folder, not where pytest was started."""
    words = shlex.split(command, posix=os.name != "nt")
    fixed = [str(Path(word).resolve()) if _relative_path(word) else word for word in words]
    return shlex.join(fixed) if fixed != words else command


def _relative_path(word: str) -> bool:
    return (
        not word.startswith("-")
        and ("/" in word or os.sep in word)
        and not Path(word).is_absolute()
        and Path(word).exists()
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = config.stash.get(_MODE, None)
    return [mode.describe()] if mode is not None else []


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Client mode runs the client cases only; otherwise they are deselected (before any other
    plugin counts, samples or lists the cases)."""
    mode = config.stash.get(_MODE, None)
    client_mode = mode is not None
    dropped = [item for item in items if case_of(item) is not None and is_client_case(item) != client_mode]
    kept = [item for item in items if case_of(item) is not None and is_client_case(item) and client_mode]
    if mode is not None and mode.dialect is None and kept:
        detection = detect_client_dialect(mode, _announcer(config))
        config.stash[_DETECTION] = detection
        config.stash[_MODE] = replace(mode, dialect=detection.dialect)
        if detection.dialect is None:
            dropped += [item for item in kept if getattr(case_of(item), "id", None) != DIALECT_CASE]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(dropped)
        items[:] = [item for item in items if item not in gone]
    yield


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    detection = config.stash.get(_DETECTION, None)
    if detection is None:
        return []
    return [f"client dialect (--bp-dialect auto): {detection.summary}"]


def _announcer(config: pytest.Config) -> Callable[[str], None]:
    """Writes past pytest's output capture (the prompt of listen mode)."""

    def announce(text: str) -> None:
        capture: Any = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    return announce


@pytest.fixture
def client_detection(request: pytest.FixtureRequest) -> Detection | None:
    """What ``--bp-dialect auto`` found (None when the dialect was named)."""
    return request.config.stash.get(_DETECTION, None)


@pytest.fixture
def client_mode(request: pytest.FixtureRequest) -> ClientMode:
    """The client-mode options (the case is skipped outside client mode)."""
    mode = request.config.stash.get(_MODE, None)
    if mode is None:
        pytest.skip("client cases run with --bp-client-cmd CMD or --bp-client-listen HOST:PORT")
    return mode


@pytest.fixture
def client_case(request: pytest.FixtureRequest, client_mode: ClientMode, tmp_path: Path) -> ClientCase:
    """The running client case: `ClientCase.run` plays a scripted server to the client."""
    return ClientCase(case_of(request.node), client_mode, tmp_path, _announcer(request.config))
