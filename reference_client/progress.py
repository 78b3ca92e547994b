"""Progress of one file's transfer: bytes done, rate, ETA (`ProgressMeter`, pure: the caller
passes the time in), and its live display on a terminal (`TerminalProgress`, drawn by rich).

rich is imported when a line is first drawn, not with this module: it costs about 45 ms of
every client start-up, and most runs (not on a terminal, or quiet) never draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'; bytes below 1 KiB as an integer."""
    value = float(count)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """75 -> '1:15', 3725 -> '1:02:05'."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


@dataclass
class ProgressMeter:
    """Bytes sent of `total`, fed with ``update(done, now)``; the rate is a moving average
    over the last `window` seconds, so a stall shows at once."""

    total: int
    start: float
    window: float = 3.0
    done: int = 0
    now: float = field(init=False)
    _samples: list[tuple[float, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.now = self.start
        self._samples = [(self.start, 0)]

    def update(self, done: int, now: float) -> None:
        """Record that `done` bytes (in all) are sent at time `now` (seconds, monotonic)."""
        if done < self.done or now < self.now:
            raise ValueError("progress goes forward only")
        self.done, self.now = done, now
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            del self._samples[0]

    @property
    def fraction(self) -> float:
        """0.0 .. 1.0 (1.0 for an empty file)."""
        return min(1.0, self.done / self.total) if self.total else 1.0

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return self.now - self.start

    @property
    def rate(self) -> float | None:
        """Bytes per second over the recent window; None before time has passed."""
        first_time, first_done = self._samples[0]
        span = self.now - first_time
        return (self.done - first_done) / span if span > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None when unknown (no rate yet, or stalled)."""
        rate = self.rate
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / rate if rate else None


NARROW_COLUMNS = 80
"""Below this terminal width the live line drops the byte counts (percentage, rate, ETA stay)."""


def final_line(name: str, meter: ProgressMeter) -> str:
    """The line that stays once a send is done: size, time and throughput."""
    rate = meter.rate
    rate_text = f" ({format_bytes(rate)}/s)" if rate else ""
    return f"sent {name}: {format_bytes(meter.done)} in {format_duration(meter.elapsed)}{rate_text}"


class TerminalProgress:
    """One live progress line on a terminal, drawn with rich: as wide as the terminal (the
    name is shortened with an ellipsis, the bar takes the rest, narrow terminals get fewer
    figures), redrawn in place at most every `interval` seconds of the times passed in,
    and erased by `hide` so that other lines print clean."""

    def __init__(self, stream: TextIO, *, interval: float = 0.1, width: int | None = None) -> None:
        self.stream, self.width = stream, width
        self.interval = interval
        self._now = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._drawn_at: float | None = None

    def show(self, name: str, meter: ProgressMeter) -> None:
        """Draw (or redraw, if due) the line for `meter`."""
        self._now = meter.now
        if self._drawn_at is not None and meter.now - self._drawn_at < self.interval and meter.fraction < 1:
            return
        progress = self._progress
        if progress is None:
            progress = self._progress = self._make_progress()
            self._task = progress.add_task(name, total=max(meter.total, 1), stats="")
            progress.start()
        assert self._task is not None
        progress.update(
            self._task,
            description=name,
            completed=meter.done if meter.total else 1,
            stats=self._stats(meter),
        )
        progress.refresh()
        self._drawn_at = meter.now

    def hide(self) -> None:
        """Erase the line (it comes back with the next `show`)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
            self._drawn_at = None

    @cached_property
    def console(self) -> Console:
        """rich's console on the stream, made (and rich imported) when first needed."""
        from rich.console import Console

        return Console(file=self.stream, width=self.width, highlight=False, force_terminal=True)

    def _make_progress(self) -> Progress:
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        name_width = max(8, self.console.width // 3)
        return Progress(
            TextColumn(
                "{task.description}",
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=name_width),
            ),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[stats]}", table_column=Column(no_wrap=True)),
            console=self.console,
            auto_refresh=False,
            transient=True,
            get_time=lambda: self._now,
            expand=True,
        )

    def _stats(self, meter: ProgressMeter) -> str:
        rate, eta = meter.rate, meter.eta
        rate_text = f"{format_bytes(rate)}/s" if rate is not None else "--/s"
        eta_text = format_duration(eta) if eta is not None else "--:--"
        percent = f"{meter.fraction * 100:3.0f}%"
        if self.console.width < NARROW_COLUMNS:
            return f"{percent} {rate_text} {eta_text}"
        sizes = f"{format_bytes(meter.done)} / {format_bytes(meter.total)}"
        return f"{percent} {sizes}  {rate_text}  ETA {eta_text}"
