"""The pytest plugin of the conformance suite: options, fixtures, case ids, verdict and reports.

Loaded everywhere through the ``pytest11`` entry point, it acts only when conformance cases
are collected (or a ``--bp-*`` option is given): only then are its markers registered, its
header printed, hypothesis' storage moved and its summary and reports written. Its options
are all ``--bp-*`` (see `conformance.settings`). pytest-xdist is refused with a usage error:
the cases run in order against one server (sanity first and last).
"""

from __future__ import annotations

import contextlib
import importlib
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupproto.dialect import DIALECT_2023A, Dialect

from .case import CASES, CaseContext, CaseInfo, Target, case_of
from .causes import verdict_lines  # issue 10 (adapt)
from .clients.mode import client_under_test
from .dialect_probe import Detected, detect_server_dialect
from .html_report import write_html_report
from .profile import STOPPING_READINGS, TargetUnusable  # issue 10 (adapt)
from .results import SHOULD_NOTE, CaseResult, Results
from .settings import DEFAULT_FUZZ_EXAMPLES, RunSettings, add_options, options_given
from .summary import write_json_report, write_summary
from .supervise import Supervisor  # issue 10 (adapt): profiling, adaptation, liveness, causes

SANITY_FIRST, SANITY_LAST = "0-sanity-first", "0-sanity-last"
PACKAGE_DIR = Path(__file__).resolve().parent
MARKERS = (
    ("conformance", "a case of the backupproto conformance suite"),
    ("must", "conformance case of level MUST (a failure fails the run)"),
    ("should", "conformance case of level SHOULD (a warning unless --bp-strict)"),
    ("info", "conformance case of level INFO (informational, never fails)"),
    *((f"section_{n}", f"conformance cases of spec section {n}") for n in range(21)),
)
XDIST_REFUSED = (
    "the conformance suite does not run under pytest-xdist (-n/--dist): its cases run in order "
    "against one server, sanity first and last; run it without -n"
)
MISSING_EXTRA = "the conformance suite needs {module}: pip install 'backupproto[conformance]'"


class _State:
    """Per-run state of the plugin, kept in the config stash."""

    def __init__(self, settings: RunSettings, config: pytest.Config) -> None:
        self.settings = settings
        # issue 10 (adapt): profiling stage, compensating transport, liveness, root causes
        cwd = config.getoption("bp_server_cwd")
        self.supervisor = Supervisor(
            adapt=not config.getoption("bp_no_adapt"),
            server_cmd=config.getoption("bp_server_cmd"),
            server_cwd=Path(cwd) if cwd else None,
        )
        self.results = Results()
        self.active = False
        """True once conformance items were collected."""
        self.total_cases = 0
        self.collected: list[CaseInfo] = []
        """Every conformance case collected (before -k, -m, sampling and the dialect)."""
        self.server: Any = None
        self.hypothesis_tmp: Path | None = None
        self.usage_errors: list[str] = []
        """Usage mistakes found while collecting (raised once collection is over)."""
        self.started = time.monotonic()
        self.client: str | None = None
        self.config = config
        self.detected: Detected | None = None
        """The dialect probe's result when it was made while collecting (a given target, auto)."""
        self.dialect_said = False
        """True once the run's dialect line was printed (at the top, or when the profile was made)."""
        self.collection_dialect: Dialect | None = None
        """The dialect known while collecting (cases of other dialects are deselected), else None."""
        """The client under test in client mode (conformance.clients), else None."""


_STATE = pytest.StashKey[_State]()


def _state(config: pytest.Config) -> _State:
    return config.stash[_STATE]


# -- configuration and collection ------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _State(RunSettings.from_config(config), config)
    config.stash[_STATE].client = client_under_test(config)
    config.pluginmanager.register(_Selection(), "backupproto-conformance-selection")
    if _uses_xdist(config) and _asks_for_suite(config):
        raise pytest.UsageError(XDIST_REFUSED)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.hypothesis_tmp is not None:
        shutil.rmtree(state.hypothesis_tmp, ignore_errors=True)


def _uses_xdist(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput"):
        return True
    return bool(config.getoption("numprocesses", None)) or config.getoption("dist", "no") != "no"


def _asks_for_suite(config: pytest.Config) -> bool:
    """A ``--bp-*`` option, or a command-line path inside (or holding) the suite's package."""
    if options_given(config):
        return True
    for arg in config.args:
        name = arg.split("::", 1)[0]
        if config.getoption("pyargs", False) and name.split(".", 1)[0] == "conformance":
            return True
        path = (config.invocation_params.dir / name).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents or path in PACKAGE_DIR.parents:
            return True
    return False


class CaseFunction(pytest.Function):
    """A case collected under its id; its report location keeps the id whole (pytest turns the
    dots of a location's domain into ``::``, which would print ``::9::1-concurrent-clients``)."""

    def reportinfo(self) -> tuple[Any, int | None, str]:
        path, line, _ = super().reportinfo()
        info = case_of(self)
        return path, line, f"{info.id} ({info.level})" if info else self.name


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """Collect a case function under its case id (``test_x.py::4.4-file-crc-block-boundary``)."""
    info = case_of(obj)
    if info is None or not callable(obj) or not isinstance(collector, pytest.Module | pytest.Class):
        return None
    if getattr(obj, "__module__", None) != getattr(collector.module, "__name__", None):
        return []  # imported from another module: collected there
    return CaseFunction.from_parent(collector, name=info.id, callobj=obj)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Activate when cases are collected: check the run is usable, register and apply markers
    (before ``-m`` selects on them)."""
    cases = [item for item in items if case_of(item) is not None]
    if not cases:
        return
    state = _state(config)
    if _uses_xdist(config):
        raise pytest.UsageError(XDIST_REFUSED)
    if state.usage_errors:
        raise pytest.UsageError(state.usage_errors[0])
    for module in ("hypothesis",):
        try:
            importlib.import_module(module)
        except ImportError:
            raise pytest.UsageError(MISSING_EXTRA.format(module=module)) from None
    unknown = sorted(set(state.settings.expected.entries) - set(CASES))
    if unknown:
        raise pytest.UsageError(
            f"--bp-expected-failures {state.settings.expected.source}: unknown case ids: {', '.join(unknown)}"
        )
    if config.getoption("bp_server_cmd") is not None and state.settings.target is None:  # issue 10 (adapt)
        raise pytest.UsageError("--bp-server-cmd needs --bp-target HOST:PORT (where the server listens)")
    state.active = True
    state.total_cases = len(cases)
    state.collected = [info for item in cases if (info := case_of(item)) is not None]
    for name, text in MARKERS:
        config.addinivalue_line("markers", f"{name}: {text}")
    for item in cases:
        info = case_of(item)
        assert info is not None
        for marker in ("conformance", info.level.lower(), f"section_{info.top_section}"):
            item.add_marker(marker)
    _keep_hypothesis_storage(state)


def _keep_hypothesis_storage(state: _State) -> None:
    """Hypothesis writes a cache folder (default ``./.hypothesis``): --bp-hypothesis-dir, or a
    temporary folder removed after the run."""
    from hypothesis.configuration import set_hypothesis_home_dir

    folder = state.settings.hypothesis_dir
    if folder is None:
        folder = state.hypothesis_tmp = Path(tempfile.mkdtemp(prefix="bp-hypothesis-"))
    set_hypothesis_home_dir(folder)


class _Selection:
    """The second half of collection (a plugin object of its own, so that its hook runs last,
    after ``-k``/``-m``): sample, put sanity first and last, list."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        state = _state(config)
        if not state.active:
            return
        _deselect_other_dialects(config, state, items)
        if state.settings.sample is not None:
            _sample(config, items, state.settings.sample, state.settings.seed)
        _order_sanity(items)
        if state.settings.list_only:
            _list_cases(config, items)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    state = _state(config)
    if not state.active:
        return []
    settings = state.settings
    target = state.client or settings.target or "the reference server, started by the suite"
    seed = settings.seed
    lines = [f"conformance: target {target}; seed {seed} (--bp-seed {seed} repeats this run)"]
    detected = state.detected
    if detected is not None and state.collection_dialect is not None:
        told = f"--bp-dialect {settings.dialect.name}: " if settings.dialect is not None else ""
        lines.append(f"conformance: {told}{detected.line()}")
        state.dialect_said = True
    return lines


def _collection_dialect(config: pytest.Config, state: _State) -> Dialect | None:
    """The run's dialect as far as it is known before the cases: --bp-dialect (the reference server
    the suite starts speaks it; 2023A by default); else, for a given target, the dialect probe
    (spec dialects 19.2)."""
    settings = state.settings
    if settings.dialect is not None or state.client is not None:
        return settings.dialect
    if settings.target is None:
        return DIALECT_2023A
    if config.getoption("bp_server_cmd") is not None or settings.list_only or config.option.collectonly:
        return None
    try:
        state.detected = detect_server_dialect(settings.target, settings.timeout_s)
    except OSError:
        return None  # nothing listening (yet): the profiling stage says so, or detects later
    stops = state.detected.reading in STOPPING_READINGS
    return None if stops else state.detected.dialect  # None: the profiling stage stops the run


def _deselect_other_dialects(config: pytest.Config, state: _State, items: list[pytest.Item]) -> None:
    """Cases that do not apply to the run's dialect are deselected (not skipped)."""
    dialect = state.collection_dialect = _collection_dialect(config, state)
    if dialect is None:
        return
    # cases of other dialects are not part of this run: leaving them out is not a partial run
    state.total_cases = sum(1 for info in state.collected if info.applies_to(dialect))
    dropped = [item for item in items if (info := case_of(item)) is not None and not info.applies_to(dialect)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in set(dropped)]


def _sample(config: pytest.Config, items: list[pytest.Item], size: int, seed: int) -> None:
    pool = [item for item in items if _case_id(item) not in (None, SANITY_FIRST, SANITY_LAST)]
    chosen = set(random.Random(seed).sample(pool, min(size, len(pool))))
    dropped = [item for item in pool if item not in chosen]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in set(dropped)]


def _case_id(item: pytest.Item) -> str | None:
    info = case_of(item)
    return info.id if info else None


def _order_sanity(items: list[pytest.Item]) -> None:
    """The sanity cases run first and last, so that a crash mid-run is visible."""
    first = [item for item in items if _case_id(item) == SANITY_FIRST]
    last = [item for item in items if _case_id(item) == SANITY_LAST]
    rest = [item for item in items if _case_id(item) not in (SANITY_FIRST, SANITY_LAST)]
    items[:] = first + rest + last


def _list_cases(config: pytest.Config, items: list[pytest.Item]) -> None:
    writer = config.get_terminal_writer()
    writer.line()
    listed = [info for info in map(case_of, items) if info is not None]
    for info in listed:
        writer.line(f"{info.id:<48} {info.level:<6} {info.requirement}")
    writer.line(f"{len(listed)} cases (nothing was run: --bp-list)")
    config.hook.pytest_deselected(items=list(items))
    items[:] = []


# -- judging and recording -------------------------------------------------------------------


def pytest_runtest_setup(item: pytest.Item) -> None:
    """issue 10 (adapt): once the server is down (and not restarted), the remaining cases do not run."""
    info = case_of(item)
    if info is None:
        return
    state = _state(item.config)
    dialect = run_dialect(state)
    if not info.applies_to(dialect):
        pytest.skip(f"does not apply to dialect {dialect.name} (a case of {', '.join(info.dialects)})")
    reason = state.supervisor.not_run_reason(info)
    if reason:
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """issue 10 (adapt): liveness after each case; a server that stopped answering fails this case."""
    outcome: Any = yield
    info = case_of(item)
    if info is None:
        return
    context = getattr(item, "funcargs", {}).get("case_context")
    failure = _state(item.config).supervisor.after_case(
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
    state = _state(item.config)
    if report.when == "call" and report.failed:  # issue 10 (adapt): a finding is reported once
        repeated = state.supervisor.repeated_finding(info, report.longreprtext)
        if repeated:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), 0, f"Skipped: {repeated}")
    if report.when == "teardown":
        if report.failed:
            state.results.teardown_failed(report)
        return
    if report.when == "call" or not report.passed:
        _judge(state, info, report)
        error = call.excinfo.value if call.excinfo is not None else None
        if (
            report.failed
            and report.when == "call"
            and error is not None
            and not isinstance(error, pytest.fail.Exception | AssertionError)
        ):
            report.conformance_outcome = "error"  # type: ignore[attr-defined]
            report.longrepr = f"the suite itself failed (not a verdict on the server): {report.longreprtext}"
        state.results.record(info, report, _conversation(item))


def _conversation(item: pytest.Item) -> list[str]:
    """The decoded transcript of every connection the case opened (empty if it opened none)."""
    context = getattr(item, "funcargs", {}).get("case_context")
    if not isinstance(context, CaseContext):
        return []
    return [line for wire in context.wires for line in wire.transcript_lines()]


def _judge(state: _State, info: CaseInfo, report: pytest.TestReport) -> None:
    """Apply the levels and the expected failures to a report (changes its outcome in place)."""
    expected = state.settings.expected
    entry = expected.entries.get(info.id)
    message = report.longreprtext
    if entry is not None and report.when == "call":
        if report.failed and entry.matches(message):
            report.outcome = "skipped"
            report.wasxfail = f"expected failure (/{entry.pattern}/ in {expected.source})"
            report.conformance_outcome = "expected-failure"  # type: ignore[attr-defined]
            return
        if report.failed:
            report.longrepr = (
                f"{message}\n\n(listed in {expected.source} as an expected failure, "
                f"but the message does not match /{entry.pattern}/)"
            )
            return
        if report.passed:
            report.outcome = "failed"
            report.longrepr = (
                f"[{info.id}] is listed in {expected.source} as a known deviation "
                f"(/{entry.pattern}/) but it passed: remove the entry"
            )
            report.conformance_outcome = "unexpected-pass"  # type: ignore[attr-defined]
            return
    lenient = info.level == "INFO" or (info.level == "SHOULD" and not state.settings.strict)
    if report.failed and report.when == "call" and lenient:
        report.outcome = "skipped"
        first = message.strip().splitlines()[0] if message.strip() else ""
        report.wasxfail = f"{info.level} {SHOULD_NOTE}: {first}"
        report.conformance_outcome = "warning" if info.level == "SHOULD" else "info"  # type: ignore[attr-defined]


# -- summary and reports ---------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    supervisor = state.supervisor  # issue 10 (adapt): an early stop gives no verdict
    if supervisor.stopped:
        terminalreporter.section("backupproto conformance: stopped, no verdict", sep="=")
        terminalreporter.write_line(supervisor.stopped)
        return
    if not state.active or state.settings.list_only or config.option.collectonly or not state.results.rows:
        return
    rows = list(state.results.rows.values())  # issue 10 (adapt): root causes, profile, restarts
    state.results.causes = supervisor.result_causes(rows)
    write_summary(terminalreporter, state.results, _run_facts(state), supervisor.summary_lines(rows))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or not state.active:
        return
    if state.settings.list_only:
        session.exitstatus = 0
        return
    usage_error = exitstatus == pytest.ExitCode.USAGE_ERROR and not state.supervisor.stopped  # issue 10
    if usage_error or config.option.collectonly:
        return
    facts = _run_facts(state)
    rows = list(state.results.rows.values())  # issue 10 (adapt): findings, causes, restarts, early stop
    state.results.causes = state.supervisor.result_causes(rows)
    if state.settings.json_report:
        write_json_report(state.settings.json_report, state.results, facts, state.supervisor.report(rows))
    if state.settings.html_report:
        write_html_report(state.settings.html_report, state.results, facts)


def _target_kind(settings: RunSettings) -> str:
    return "given" if settings.target else "reference server started by the suite"


def _run_facts(state: _State) -> dict[str, Any]:
    settings = state.settings
    data_dir = _data_dir_path(state)
    server = settings.target or (state.server.target if state.server is not None else None)
    return {
        "target": state.client or str(server),
        "target_kind": "client mode" if state.client else _target_kind(settings),
        "data_dir": str(data_dir) if data_dir else None,
        "seed": settings.seed,
        "strict": settings.strict,
        "cases_collected": state.total_cases,
        "sample": settings.sample,
        "expected_failures": settings.expected.source,
        "duration_s": round(time.monotonic() - state.started, 2),
    }


def _data_dir_path(state: _State) -> Path | None:
    if state.settings.data_dir:
        return state.settings.data_dir
    if state.server is not None:
        return Path(state.server.data_dir)
    return None


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """(host, port) of the server under test; starts the reference server when --bp-target is absent."""
    state = _state(request.config)
    if state.settings.target is not None:
        _begin_supervision(state, state.settings.target, tmp_path_factory)
        try:
            yield state.settings.target
        finally:
            state.supervisor.end()
        return
    from backupproto.io.server_process import ServerProcess

    data = state.settings.data_dir or tmp_path_factory.mktemp("reference-server") / "data"
    data.mkdir(parents=True, exist_ok=True)
    dialect = state.settings.dialect or DIALECT_2023A
    state.server = ServerProcess.start(data, "--dialect", dialect.name)
    assert state.server.target is not None
    try:
        _begin_supervision(state, state.server.target, tmp_path_factory)
        yield state.server.target
    finally:
        state.supervisor.end()
        state.server.stop()


def _begin_supervision(state: _State, chosen: Target, tmp_path_factory: pytest.TempPathFactory) -> None:
    """issue 10 (adapt): the profiling stage before the first case; an untestable target stops the run."""
    try:
        state.supervisor.begin(
            chosen,
            state.settings.timeout_s,
            tmp_path_factory.mktemp("server-under-test"),
            state.settings.dialect,
            state.detected,
        )
    except TargetUnusable as unusable:
        pytest.exit(str(unusable), returncode=unusable.exit_code)
    profile = state.supervisor.profile
    reporter = state.config.pluginmanager.get_plugin("terminalreporter")
    capture = state.config.pluginmanager.get_plugin("capturemanager")
    if profile is not None and reporter is not None and not state.dialect_said:
        state.dialect_said = True
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(f"\nconformance: {profile.dialect_line}")


@pytest.fixture(scope="session")
def data_dir(request: pytest.FixtureRequest, target: Target) -> Path | None:
    """The server's data folder (--bp-data-dir, or the started reference server's), else None."""
    return _data_dir_path(_state(request.config))


@pytest.fixture
def storage(data_dir: Path | None) -> Path:
    """The data folder; skips the case (with the reason) when the suite cannot see it."""
    if data_dir is None:
        pytest.skip("needs --bp-data-dir DIR (the server's data folder) to check what the server stored")
    return data_dir


@pytest.fixture
def case_context(
    request: pytest.FixtureRequest, target: Target, data_dir: Path | None
) -> Iterator[CaseContext]:
    """The running case: metadata, target, timeout, the connections it opened (closed at the end)."""
    state = _state(request.config)
    context = CaseContext(
        case_of(request.node), target, state.settings.timeout_s, data_dir, dialect=run_dialect(state)
    )
    try:
        yield context
    finally:
        context.close()


def run_dialect(state: _State) -> Dialect:
    """The run's dialect: the one the profiling stage detected (or confirmed), else --bp-dialect's."""
    profile = state.supervisor.profile
    if profile is not None:
        return profile.dialect
    return state.collection_dialect or state.settings.dialect or DIALECT_2023A


@pytest.fixture
def dialect(request: pytest.FixtureRequest, target: Target) -> Dialect:
    """The run's dialect (codes, layouts, key size of every case)."""
    return run_dialect(_state(request.config))


@pytest.fixture
def connect(case_context: CaseContext) -> Any:
    """``connect(label=None) -> Wire``: a new connection to the target, part of the case's transcript."""
    return case_context.connect


@pytest.fixture
def conformance_seed(request: pytest.FixtureRequest) -> int:
    """The run's seed (printed in the header; --bp-seed repeats it)."""
    return _state(request.config).settings.seed


@pytest.fixture
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    """Examples per live fuzz case (--bp-fuzz-examples, default 150)."""
    return _state(request.config).settings.fuzz_examples or DEFAULT_FUZZ_EXAMPLES


@pytest.fixture
def large_file_mib(request: pytest.FixtureRequest) -> int:
    """Size of the optional large-file case (--bp-large-file-mib; 0 = skip)."""
    return _state(request.config).settings.large_file_mib


def usage_error(config: pytest.Config, text: str) -> None:
    """Report a usage mistake found while collecting (inside collection, a raised
    `pytest.UsageError` would become a collection error): the run stops with exit code 4 and
    this line once collection is over."""
    _state(config).usage_errors.append(text)


def sessions_folder(config: pytest.Config) -> Path | None:
    """--bp-sessions of this run (for `pytest_generate_tests` of the session cases)."""
    return _state(config).settings.sessions


__all__ = ["CaseResult", "sessions_folder", "usage_error"]
