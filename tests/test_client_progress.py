"""reference_client.progress / report: the meter is fed (bytes, now); output depends on the terminal."""

from __future__ import annotations

import io

import pytest

from reference_client.progress import ProgressMeter, format_bytes, format_duration
from reference_client.report import ConsoleReporter

MiB = 1 << 20


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MiB, "1.0 MiB"),
        (5 << 30, "5.0 GiB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (59.4, "0:59"), (75, "1:15"), (3725, "1:02:05")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_meter_rate_and_eta_from_the_times_passed_in() -> None:
    meter = ProgressMeter(total=10 * MiB, start=100.0)
    assert (meter.fraction, meter.rate, meter.eta) == (0.0, None, None)
    meter.update(2 * MiB, 101.0)
    assert meter.rate == 2 * MiB
    assert meter.eta == 4.0
    assert meter.fraction == 0.2
    assert meter.render(width=10) == "[##--------]  20% 2.0 MiB / 10.0 MiB  2.0 MiB/s  ETA 0:04"


def test_meter_rate_follows_the_recent_window() -> None:
    meter = ProgressMeter(total=100 * MiB, start=0.0, window=3.0)
    for second in range(1, 11):  # 1 MiB/s for 10 s
        meter.update(second * MiB, float(second))
    for second in range(11, 15):  # then 10 MiB/s
        meter.update(10 * MiB + (second - 10) * 10 * MiB, float(second))
    rate = meter.rate
    assert rate is not None and rate > 7 * MiB  # an all-time average would say about 3.6 MiB/s


def test_stalled_transfer_has_no_eta() -> None:
    meter = ProgressMeter(total=MiB, start=0.0, window=1.0)
    meter.update(1000, 1.0)
    for second in range(2, 6):
        meter.update(1000, float(second))
    assert meter.rate == 0
    assert meter.eta is None
    assert "ETA --:--" in meter.render()


def test_empty_file_is_complete() -> None:
    meter = ProgressMeter(total=0, start=5.0)
    assert meter.fraction == 1.0
    assert meter.eta == 0.0


def test_meter_refuses_going_backwards() -> None:
    meter = ProgressMeter(total=10, start=0.0)
    meter.update(5, 1.0)
    with pytest.raises(ValueError):
        meter.update(4, 2.0)
    with pytest.raises(ValueError):
        meter.update(6, 0.5)


def test_terminal_reporter_draws_a_throttled_bar_on_stderr_and_clears_it() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out, err, terminal=True, interval=0.5)
    reporter.file_started("a.bin", 4 * MiB, 0.0)
    reporter.file_progress(1 * MiB, 0.1)  # first draw
    reporter.file_progress(2 * MiB, 0.2)  # within 0.5 s: not drawn
    reporter.file_progress(3 * MiB, 0.7)  # drawn
    assert err.getvalue().count("\r") == 2
    assert "a.bin [" in err.getvalue() and "75%" in err.getvalue() and "50%" not in err.getvalue()
    reporter.file_progress(4 * MiB, 0.8)
    reporter.file_finished(0.8)
    assert "100%" in err.getvalue()
    assert err.getvalue().endswith("\r")  # the bar is wiped: later lines start clean
    reporter.info("a.bin: verified")
    assert out.getvalue() == "a.bin: verified\n"


def test_plain_reporter_writes_log_lines_and_no_bar() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out, err, terminal=False)
    reporter.file_started("a.bin", 2 * MiB, 10.0)
    reporter.file_progress(MiB, 11.0)
    reporter.file_progress(2 * MiB, 12.0)
    reporter.file_finished(12.0)
    assert out.getvalue() == "sending a.bin (2.0 MiB)\nsent a.bin: 2.0 MiB in 0:02 (1.0 MiB/s)\n"
    assert err.getvalue() == ""


def test_quiet_reporter_keeps_only_warnings() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out, err, terminal=True, quiet=True)
    reporter.file_started("a.bin", 10, 0.0)
    reporter.file_progress(10, 1.0)
    reporter.file_finished(1.0)
    reporter.info("registered")
    reporter.warning("server responded with an error")
    assert out.getvalue() == ""
    assert err.getvalue() == "server responded with an error\n"
