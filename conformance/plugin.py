"""The pytest plugin of the conformance suite: options, fixtures, case ids, verdict and report.

Loaded everywhere through the ``pytest11`` entry point, it only acts on items whose function
was declared with `conformance.case.case`; ordinary test runs are untouched.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .case import CASES, CaseContext, Target, case_of, parse_target
from .causes import verdict_lines  # issue 10 (adapt)
from .expected import ExpectedFailures, load_expected_failures
from .profile import TargetUnusable  # issue 10 (adapt)
from .results import SHOULD_NOTE, CaseResult, Results
from .summary import write_json_report, write_summary
from .supervise import Supervisor  # issue 10 (adapt): profiling, adaptation, liveness, causes

_STATE = pytest.StashKey["_State"]()
_ACTIVE: list[pytest.Config] = []


def active_config() -> pytest.Config | None:
    """The configuration of the pytest run in progress (None outside one); test modules that
    make their cases at import time (one per recorded session) read their options here."""
    return _ACTIVE[-1] if _ACTIVE else None
SANITY_FIRST, SANITY_LAST = "0-sanity-first", "0-sanity-last"


class _State:
    """Per-run state of the plugin, kept in the config stash."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.strict = bool(config.getoption("conformance_strict")) or bool(config.getini("strict"))
        seed = config.getoption("conformance_seed")
        self.seed: int = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
        path = config.getoption("expected_failures")
        self.expected: ExpectedFailures = load_expected_failures(path) if path else ExpectedFailures()
        self.results = Results()
        self.active = False
        """True once conformance items were collected."""
        self.total_cases = 0
        self.server: Any = None
        self.started = time.monotonic()
        # issue 10 (adapt): profiling stage, compensating transport, liveness, root causes
        cwd = config.getoption("bp_server_cwd")
        self.supervisor = Supervisor(
            adapt=not config.getoption("bp_no_adapt"),
            server_cmd=config.getoption("bp_server_cmd"),
            server_cwd=Path(cwd) if cwd else None,
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "backupproto conformance suite (pytest conformance ...)")
    group.addoption(
        "--target", metavar="HOST:PORT", help="server under test (default: start the reference server)"
    )
    group.addoption(
        "--data-dir",
        metavar="DIR",
        help="the server's data folder (server.db, client folders): enables the storage checks",
    )
    group.addoption(
        "--conformance-strict",
        action="store_true",
        help="SHOULD failures count as failures (pytest's own --strict does the same)",
    )
    group.addoption("--list", action="store_true", help="list case ids, levels and requirements; run nothing")
    group.addoption(
        "--expected-failures",
        metavar="FILE",
        help="known deviations: lines 'CASE-ID REGEX'; a listed case must fail with a matching message",
    )
    group.addoption(
        "--sample", type=int, metavar="N", help="run a random subset of N cases (sanity always runs)"
    )
    group.addoption(
        "--seed", dest="conformance_seed", type=int, metavar="S", help="seed for --sample and fuzzing"
    )
    group.addoption("--report", metavar="FILE", help="write a JSON report of every case")
    group.addoption(
        "--timeout-s", type=float, default=10.0, metavar="SECONDS", help="socket timeout per operation (10)"
    )
    group.addoption(
        "--fuzz-examples",
        type=int,
        default=None,
        metavar="N",
        help="examples per live fuzz case (default 150)",
    )
    group.addoption(
        "--large-file-mib",
        type=int,
        default=0,
        metavar="MIB",
        help="also send one file of this many MiB (slow)",
    )
    group.addoption(
        "--sessions", metavar="DIR", help="recorded sessions to replay against the target (spec 15)"
    )
    # issue 10 (adapt): adaptation off; the suite starts and restarts the server under test
    group.addoption(
        "--bp-no-adapt",
        action="store_true",
        help="no compensating transport: every case meets the server's transport habits as they are",
    )
    group.addoption(
        "--bp-server-cmd",
        metavar="CMD",
        help="command that starts the server under test (at --target); the suite restarts it after a hang",
    )
    group.addoption("--bp-server-cwd", metavar="DIR", help="working directory for --bp-server-cmd")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in (
        ("conformance", "a case of the backupproto conformance suite"),
        ("must", "conformance case of level MUST (a failure fails the run)"),
        ("should", "conformance case of level SHOULD (a warning unless --strict)"),
        ("info", "conformance case of level INFO (informational, never fails)"),
    ):
        config.addinivalue_line("markers", f"{name}: {text}")
    for section in range(21):
        config.addinivalue_line("markers", f"section_{section}: conformance cases of spec section {section}")
    config.stash[_STATE] = _State(config)
    _ACTIVE.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _ACTIVE:
        _ACTIVE.remove(config)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Collect a case function under its case id (``test_x.py::4.4-file-crc-block-boundary``)."""
    info = case_of(obj)
    if info is None or not callable(obj) or not isinstance(collector, pytest.Module | pytest.Class):
        return None
    if getattr(obj, "__module__", None) != getattr(collector.module, "__name__", None):
        return []  # imported from another module: collected there
    return pytest.Function.from_parent(collector, name=info.id, callobj=obj)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[_STATE]
    target = config.getoption("target") or "the reference server, started by the suite"
    return [f"conformance: target {target}; seed {state.seed} (--seed {state.seed} repeats this run)"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash[_STATE]
    cases = [item for item in items if case_of(item) is not None]
    if not cases:
        return
    state.active = True
    state.total_cases = len(cases)
    _check_target_options(config)  # issue 10 (adapt): a bad or empty target is a usage error
    unknown = sorted(set(state.expected.entries) - set(CASES))
    if unknown:
        raise pytest.UsageError(f"--expected-failures names unknown case ids: {', '.join(unknown)}")
    sample = config.getoption("sample")
    if sample is not None:
        _sample(config, items, cases, sample, state.seed)
    _order_sanity(items)
    if config.getoption("list"):
        _list_cases(config, items)


def _check_target_options(config: pytest.Config) -> None:
    """issue 10 (adapt): --target must be HOST:PORT when given (also empty); --bp-server-cmd needs it."""
    if config.getoption("list"):
        return
    given = config.getoption("target")
    if given is not None:
        try:
            parse_target(given)
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None
    if config.getoption("bp_server_cmd") is not None and given is None:
        raise pytest.UsageError("--bp-server-cmd needs --target HOST:PORT (where the started server listens)")


def _sample(
    config: pytest.Config, items: list[pytest.Item], cases: list[pytest.Item], size: int, seed: int
) -> None:
    pool = [item for item in cases if item.name not in (SANITY_FIRST, SANITY_LAST)]
    chosen = set(random.Random(seed).sample(pool, min(max(size, 0), len(pool))))
    dropped = [item for item in pool if item not in chosen]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in set(dropped)]


def _order_sanity(items: list[pytest.Item]) -> None:
    """The sanity cases run first and last, so that a crash mid-run is visible."""
    first = [item for item in items if item.name == SANITY_FIRST]
    last = [item for item in items if item.name == SANITY_LAST]
    rest = [item for item in items if item.name not in (SANITY_FIRST, SANITY_LAST)]
    items[:] = first + rest + last


def _list_cases(config: pytest.Config, items: list[pytest.Item]) -> None:
    writer = config.get_terminal_writer()
    writer.line()
    listed = [item for item in items if case_of(item) is not None]
    for item in listed:
        info = case_of(item)
        assert info is not None
        writer.line(f"{info.id:<48} {info.level:<6} {info.requirement}")
    writer.line(f"{len(listed)} cases (nothing was run: --list)")
    config.hook.pytest_deselected(items=list(items))
    items[:] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """issue 10 (adapt): once the server is down (and not restarted), the remaining cases do not run."""
    info = case_of(item)
    if info is None:
        return
    reason = item.config.stash[_STATE].supervisor.not_run_reason(info)
    if reason:
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """issue 10 (adapt): liveness after each case; a server that stopped answering fails this case."""
    outcome: Any = yield
    info = case_of(item)
    if info is None:
        return
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    context = funcargs.get("case_context")
    failure = item.config.stash[_STATE].supervisor.after_case(
        info, context if isinstance(context, CaseContext) else None
    )
    if failure:
        error = outcome.exception
        if error is not None:
            said = verdict_lines(str(error)) or str(error)[:300]
            failure += f"\nthe case's own check:\n{said}"
        outcome.force_exception(pytest.fail.Exception(failure, pytrace=False))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    info = case_of(item)
    if info is None:
        return
    state = item.config.stash[_STATE]
    if report.when == "call" and report.failed:  # issue 10 (adapt): a finding is reported once
        repeated = state.supervisor.repeated_finding(info, report.longreprtext)
        if repeated:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), 0, f"Skipped: {repeated}")
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _judge(state, info.id, report)
        error = call.excinfo.value if call.excinfo is not None else None
        if (
            report.failed
            and report.when == "call"
            and error is not None
            and not isinstance(error, pytest.fail.Exception | AssertionError)
        ):
            report.conformance_outcome = "error"  # type: ignore[attr-defined]
            report.longrepr = f"the suite itself failed (not a verdict on the server): {report.longreprtext}"
        state.results.record(info, report)


def _judge(state: _State, case_id: str, report: pytest.TestReport) -> None:
    """Apply the levels and the expected failures to a report (changes its outcome in place)."""
    info = CASES[case_id]
    entry = state.expected.entries.get(case_id)
    message = report.longreprtext
    if entry is not None and report.when == "call":
        if report.failed and entry.matches(message):
            report.outcome = "skipped"
            report.wasxfail = f"expected failure (/{entry.pattern}/ in {state.expected.source})"
            report.conformance_outcome = "expected-failure"  # type: ignore[attr-defined]
            return
        if report.failed:
            report.longrepr = (
                f"{message}\n\n(listed in {state.expected.source} as an expected failure, "
                f"but the message does not match /{entry.pattern}/)"
            )
            return
        if report.passed:
            report.outcome = "failed"
            report.longrepr = (
                f"[{case_id}] is listed in {state.expected.source} as a known deviation "
                f"(/{entry.pattern}/) but it passed: remove the entry"
            )
            report.conformance_outcome = "unexpected-pass"  # type: ignore[attr-defined]
            return
    lenient = info.level == "INFO" or (info.level == "SHOULD" and not state.strict)
    if report.failed and report.when == "call" and lenient:
        report.outcome = "skipped"
        first = message.strip().splitlines()[0] if message.strip() else ""
        report.wasxfail = f"{info.level} {SHOULD_NOTE}: {first}"
        report.conformance_outcome = "warning" if info.level == "SHOULD" else "info"  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[_STATE]
    if not state.active or config.getoption("list"):
        return
    supervisor = state.supervisor  # issue 10 (adapt): early stop (no verdict); causes before the verdict
    if exitstatus == pytest.ExitCode.USAGE_ERROR and not supervisor.stopped:
        return
    if supervisor.stopped:
        terminalreporter.section("backupproto conformance: stopped, no verdict", sep="=")
        terminalreporter.write_line(supervisor.stopped)
        return
    rows = list(state.results.rows.values())
    write_summary(terminalreporter, state.results, _run_facts(config, state), supervisor.summary_lines(rows))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    if config.getoption("list"):
        session.exitstatus = 0
        return
    report = config.getoption("report")
    usage_error = exitstatus == pytest.ExitCode.USAGE_ERROR and not state.supervisor.stopped  # issue 10
    if report and state.active and not usage_error:
        rows = list(state.results.rows.values())  # issue 10 (adapt): findings, causes, restarts
        write_json_report(
            Path(report), state.results, _run_facts(config, state), state.supervisor.report(rows)
        )


def _run_facts(config: pytest.Config, state: _State) -> dict[str, Any]:
    target = config.getoption("target")
    return {
        "target": target or (str(state.server.target) if state.server is not None else None),
        "target_kind": "given" if target else "reference server started by the suite",
        "data_dir": str(_data_dir_path(config, state)) if _data_dir_path(config, state) else None,
        "seed": state.seed,
        "strict": state.strict,
        "cases_collected": state.total_cases,
        "sample": config.getoption("sample"),
        "expected_failures": state.expected.source,
        "duration_s": round(time.monotonic() - state.started, 2),
    }


def _data_dir_path(config: pytest.Config, state: _State) -> Path | None:
    given = config.getoption("data_dir")
    if given:
        return Path(given)
    if state.server is not None:
        return Path(state.server.data_dir)
    return None


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """(host, port) of the server under test; starts the reference server when --target is absent."""
    config = request.config
    given = config.getoption("target")
    state = config.stash[_STATE]
    if given is not None:
        try:
            chosen = parse_target(given)
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None
        _begin_supervision(config, chosen, tmp_path_factory)
        try:
            yield chosen
        finally:
            state.supervisor.end()
        return
    from .server_process import ServerProcess

    data = Path(config.getoption("data_dir") or tmp_path_factory.mktemp("reference-server") / "data")
    data.mkdir(parents=True, exist_ok=True)
    state.server = ServerProcess(data)
    assert state.server.target is not None
    try:
        _begin_supervision(config, state.server.target, tmp_path_factory)
        yield state.server.target
    finally:
        state.supervisor.end()
        state.server.stop()


def _begin_supervision(
    config: pytest.Config, chosen: Target, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """issue 10 (adapt): the profiling stage before the first case; an untestable target stops the run."""
    try:
        config.stash[_STATE].supervisor.begin(
            chosen, float(config.getoption("timeout_s")), tmp_path_factory.mktemp("server-under-test")
        )
    except TargetUnusable as unusable:
        pytest.exit(str(unusable), returncode=unusable.exit_code)


@pytest.fixture(scope="session")
def data_dir(request: pytest.FixtureRequest, target: Target) -> Path | None:
    """The server's data folder (--data-dir, or the started reference server's), else None."""
    config = request.config
    return _data_dir_path(config, config.stash[_STATE])


@pytest.fixture
def storage(data_dir: Path | None) -> Path:
    """The data folder; skips the case (with the reason) when the suite cannot see it."""
    if data_dir is None:
        pytest.skip("needs --data-dir DIR (the server's data folder) to check what the server stored")
    return data_dir


@pytest.fixture
def case_context(
    request: pytest.FixtureRequest, target: Target, data_dir: Path | None
) -> Iterator[CaseContext]:
    """The running case: metadata, target, timeout, the connections it opened (closed at the end)."""
    context = CaseContext(
        case_of(request.node), target, float(request.config.getoption("timeout_s")), data_dir
    )
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def connect(case_context: CaseContext) -> Any:
    """``connect(label=None) -> Wire``: a new connection to the target, part of the case's transcript."""
    return case_context.connect


@pytest.fixture
def conformance_seed(request: pytest.FixtureRequest) -> int:
    """The run's seed (printed in the header; --seed repeats it)."""
    return int(request.config.stash[_STATE].seed)


@pytest.fixture
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    """Examples per live fuzz case (--fuzz-examples)."""
    value = request.config.getoption("fuzz_examples")
    return int(value) if value is not None else int(os.environ.get("CONFORMANCE_FUZZ_EXAMPLES", "150"))


@pytest.fixture
def large_file_mib(request: pytest.FixtureRequest) -> int:
    """Size of the optional large-file case (--large-file-mib; 0 = skip)."""
    return int(request.config.getoption("large_file_mib"))


__all__ = ["CaseResult"]
