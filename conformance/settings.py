"""The suite's command-line options (all namespaced ``--bp-*``) and their validated values.

Every option is registered by `add_options`; `RunSettings.from_config` checks the values the
user gave and raises `pytest.UsageError` (pytest's exit code 4, one line) on a bad one, so a
usage mistake never turns into a verdict. No option has an un-namespaced alias: the plugin is
installed into other people's environments, where ``--target`` or ``--report`` may well be an
option of their own conftest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupproto.dialect import DIALECTS, Dialect, dialect_named

from .case import Target, parse_target
from .expected import ExpectedFailures, load_expected_failures

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_FUZZ_EXAMPLES = 150

# (option, metavar, help); the dest of ``--bp-foo-bar`` is ``bp_foo_bar``.
_VALUED = (
    ("--bp-target", "HOST:PORT", "server under test (default: start the reference server)"),
    (
        "--bp-data-dir",
        "DIR",
        "the server's data folder (server.db, client folders): enables the storage checks",
    ),
    (
        "--bp-expected-failures",
        "FILE",
        "known deviations: lines 'CASE-ID REGEX'; a listed case must fail with a matching message",
    ),
    ("--bp-sample", "N", "run a random subset of N cases (the sanity cases always run)"),
    ("--bp-seed", "S", "seed for --bp-sample and fuzzing (printed in the header; repeats a run)"),
    ("--bp-report", "FILE", "write a JSON report of every case"),
    ("--bp-html", "FILE", "write a self-contained HTML report: root causes, then every case"),
    ("--bp-timeout-s", "SECONDS", f"socket timeout per operation ({DEFAULT_TIMEOUT_S:g})"),
    ("--bp-fuzz-examples", "N", f"examples per live fuzz case ({DEFAULT_FUZZ_EXAMPLES})"),
    ("--bp-large-file-mib", "MIB", "also send one file of this many MiB (slow; 0 = skip)"),
    ("--bp-sessions", "DIR", "recorded sessions (*.json) to replay against the target (spec 15)"),
    (
        "--bp-hypothesis-dir",
        "DIR",
        "hypothesis' storage folder (default: a temporary folder, removed after the run)",
    ),
    # issue 10 (adapt): the suite starts and restarts the server under test
    ("--bp-server-cmd", "CMD", "command that starts the server under test (at --bp-target); restarts it"),
    ("--bp-server-cwd", "DIR", "working directory for --bp-server-cmd"),
    (
        "--bp-dialect",
        "NAME|auto",
        f"the protocol dialect of the run: {', '.join(DIALECTS)} or auto (default: detect the peer's)",
    ),
)
_FLAGS = (
    ("--bp-strict", "SHOULD failures count as failures (pytest's own strict mode does the same)"),
    ("--bp-list", "list case ids, levels and requirements; run nothing"),
    ("--bp-no-adapt", "no compensating transport: the cases meet the server's transport habits as they are"),
)


def add_options(parser: pytest.Parser) -> None:
    """Register the ``--bp-*`` options (plain strings: `RunSettings` checks them)."""
    group = parser.getgroup("backupproto", "backupproto conformance suite (pytest conformance --bp-...)")
    for name, metavar, text in _VALUED:
        group.addoption(name, metavar=metavar, default=None, help=text)
    for name, text in _FLAGS:
        group.addoption(name, action="store_true", default=False, help=text)


def option_names() -> list[str]:
    """Every option of the suite, in the order of ``pytest --help``."""
    return [name for name, _, _ in _VALUED] + [name for name, _ in _FLAGS]


def _whole(option: str, text: str | None, *, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise pytest.UsageError(f"{option} {text}: expected a whole number >= {minimum}")
    return value


def _seconds(option: str, text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise pytest.UsageError(f"{option} {text}: expected a number of seconds > 0")
    return value


def _folder(option: str, text: str | None) -> Path | None:
    if text is None:
        return None
    if not text.strip() or not Path(text).is_dir():
        raise pytest.UsageError(f"{option} {text!r}: not a folder")
    return Path(text)


def parse_dialect(text: str | None) -> Dialect | None:
    """``--bp-dialect``: the named dialect, or None for ``auto`` (the default): detect it."""
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        return dialect_named(text)
    except ValueError as error:
        raise pytest.UsageError(f"--bp-dialect: {error} or auto") from None


def _file(option: str, text: str | None) -> Path | None:
    if text is None:
        return None
    if not text.strip() or Path(text).is_dir():
        raise pytest.UsageError(f"{option} {text!r}: expected a file name")
    return Path(text)


@dataclass(frozen=True)
class RunSettings:
    """The checked values of the ``--bp-*`` options of one run."""

    target: Target | None
    data_dir: Path | None
    strict: bool
    list_only: bool
    expected: ExpectedFailures
    sample: int | None
    seed: int
    seed_given: bool
    json_report: Path | None
    html_report: Path | None
    timeout_s: float
    fuzz_examples: int | None
    large_file_mib: int
    sessions: Path | None
    hypothesis_dir: Path | None
    dialect: Dialect | None = None
    """--bp-dialect NAME; None for auto (the profiling stage detects the peer's dialect)."""

    @classmethod
    def from_config(cls, config: pytest.Config) -> RunSettings:
        """Check every option given; `pytest.UsageError` with one line on the first bad one."""

        def get(name: str) -> str | None:
            value = config.getoption(name.removeprefix("--").replace("-", "_"))
            return None if value is None else str(value)

        target_text = get("--bp-target")
        target = None
        if target_text is not None:
            try:
                target = parse_target(target_text)
            except ValueError as error:
                raise pytest.UsageError(f"--bp-target {error}") from None
        expected_path = get("--bp-expected-failures")
        seed = _whole("--bp-seed", get("--bp-seed"), minimum=0)
        hypothesis_dir = get("--bp-hypothesis-dir")
        return cls(
            target=target,
            data_dir=_folder("--bp-data-dir", get("--bp-data-dir")),
            strict=bool(config.getoption("bp_strict")) or bool(config.getini("strict")),
            list_only=bool(config.getoption("bp_list")),
            expected=load_expected_failures(expected_path) if expected_path else ExpectedFailures(),
            sample=_whole("--bp-sample", get("--bp-sample"), minimum=1),
            seed=seed if seed is not None else random.SystemRandom().randrange(1, 2**31),
            seed_given=seed is not None,
            json_report=_file("--bp-report", get("--bp-report")),
            html_report=_file("--bp-html", get("--bp-html")),
            timeout_s=_seconds("--bp-timeout-s", get("--bp-timeout-s"), DEFAULT_TIMEOUT_S),
            fuzz_examples=_whole("--bp-fuzz-examples", get("--bp-fuzz-examples"), minimum=1),
            large_file_mib=_whole("--bp-large-file-mib", get("--bp-large-file-mib"), minimum=0) or 0,
            sessions=_folder("--bp-sessions", get("--bp-sessions")),
            hypothesis_dir=Path(hypothesis_dir) if hypothesis_dir else None,
            dialect=parse_dialect(get("--bp-dialect")),
        )


def options_given(config: pytest.Config) -> bool:
    """True when the user passed any ``--bp-*`` option (asking for the suite)."""
    return any(
        config.getoption(name.removeprefix("--").replace("-", "_")) not in (None, False)
        for name in option_names()
    )
