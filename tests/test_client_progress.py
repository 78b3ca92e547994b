"""reference_client.progress / report: the meter is fed (bytes, now); output depends on the terminal."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from reference_client.progress import ProgressMeter, format_bytes, format_duration
from reference_client.report import ConsoleReporter

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


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


def test_terminal_reporter_redraws_in_place_throttled_and_keeps_the_final_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = ConsoleReporter(out, err, terminal=True, interval=0.5)
    reporter.file_started("a.bin", 4 * MiB, 0.0)
    reporter.file_progress(1 * MiB, 0.1)  # first draw
    reporter.file_progress(2 * MiB, 0.2)  # within 0.5 s: not drawn
    reporter.file_progress(3 * MiB, 0.7)  # drawn
    assert "a.bin" in err.getvalue() and "75%" in err.getvalue() and "50%" not in err.getvalue()
    reporter.file_progress(4 * MiB, 0.8)
    reporter.file_finished(0.8)
    assert "100%" in err.getvalue()
    assert out.getvalue() == "sent a.bin: 4.0 MiB in 0:01 (5.0 MiB/s)\n"
    reporter.info("a.bin: verified")
    assert out.getvalue().endswith("a.bin: verified\n")


_RICH_ON_FIRST_DRAW = """
import io, os, sys
import reference_client.cli
from reference_client.report import ConsoleReporter

reporter = ConsoleReporter(io.StringIO(), io.StringIO(), terminal=True)
reporter.info("registered")
reporter.file_started("a.bin", 100, 0.0)
before = "rich" in sys.modules
reporter.file_progress(50, 1.0)
os.write(1, f"{before} {'rich' in sys.modules}".encode())  # rich's live display redirects sys.stdout
"""


def test_rich_is_imported_only_when_a_line_is_drawn() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _RICH_ON_FIRST_DRAW], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "False True"


_DEMO = """
import sys
from reference_client.report import ConsoleReporter

reporter = ConsoleReporter(sys.stdout, sys.stderr, terminal=sys.stderr.isatty(), interval=0.0)
reporter.info("registered")
name = "a-rather-long-file-name-of-the-backup.bin"
reporter.file_started(name, 10 << 20, 0.0)
for step in range(1, 11):
    reporter.file_progress(step << 20, step * 0.5)
reporter.file_finished(5.0)
reporter.info(name + ": verified")
reporter.file_started("second.bin", 10 << 20, 10.0)
for step in range(1, 6):
    reporter.file_progress(step << 20, 10.0 + step)
"""


def _screen_after(columns: int, tmp_path: Path) -> list[str]:
    """Run `_DEMO` on a pseudo-terminal of `columns` x 30; the screen (pyte) when it exits."""
    pyte = pytest.importorskip("pyte")
    script = tmp_path / "demo.py"
    script.write_text(_DEMO)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    child = subprocess.Popen(
        [sys.executable, str(script)], stdin=follower, stdout=follower, stderr=follower, env=env, cwd=ROOT
    )
    os.close(follower)
    output = bytearray()
    while True:  # ends when the child exits and the pty closes (EIO)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert child.wait(timeout=60) == 0, output.decode(errors="replace")
    screen = pyte.Screen(columns, 30)
    pyte.ByteStream(screen).feed(bytes(output))
    return [line.rstrip() for line in screen.display if line.strip()]


@pytest.mark.parametrize("columns", [50, 120])
def test_live_line_fits_the_terminal_and_the_final_line_stays(columns: int, tmp_path: Path) -> None:
    lines = _screen_after(columns, tmp_path)
    name = "a-rather-long-file-name-of-the-backup.bin"
    sent = f"sent {name}: 10.0 MiB in 0:05 (2.0 MiB/s)"
    text = "\n".join(lines)
    joined = "".join(lines)  # printed lines wrap at the terminal's width; the bar must not
    assert lines[0] == "registered"
    assert joined.index(sent) < joined.index(f"{name}: verified"), text
    bars = [line for line in lines if "%" in line]
    assert len(bars) == 1, text  # one live line: nothing stale from the first file
    assert bars[0].startswith("second.bin") and "50%" in bars[0] and lines[-1] == bars[0]
    assert len(bars[0]) <= columns and ("ETA" in bars[0]) == (columns >= 80)


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
