"""Progress of one file's transfer: bytes done, rate, ETA. Pure: the caller passes the time in."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def render(self, width: int = 24) -> str:
        """One status line: bar, percentage, bytes, rate, ETA."""
        filled = int(self.fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        rate, eta = self.rate, self.eta
        rate_text = f"{format_bytes(rate)}/s" if rate is not None else "--/s"
        eta_text = format_duration(eta) if eta is not None else "--:--"
        return (
            f"[{bar}] {self.fraction * 100:3.0f}% {format_bytes(self.done)} / {format_bytes(self.total)}"
            f"  {rate_text}  ETA {eta_text}"
        )
