"""Where the client's messages go: a terminal with a progress bar, plain log lines, or nowhere."""

from __future__ import annotations

from typing import Protocol, TextIO

from .progress import ProgressMeter, format_bytes, format_duration


class Reporter(Protocol):
    """What the backup flow tells the user about."""

    def info(self, text: str) -> None:
        """A step worth knowing (registered, file verified, ...)."""

    def warning(self, text: str) -> None:
        """Something went wrong and is being handled (an error response, a retry)."""

    def file_started(self, name: str, total: int, now: float) -> None:
        """A send of `name` (`total` plaintext bytes) begins."""

    def file_progress(self, done: int, now: float) -> None:
        """`done` plaintext bytes of the current send are on their way."""

    def file_finished(self, now: float) -> None:
        """The current send's bytes are all out (the CRC verdict comes separately)."""


class SilentReporter:
    """Says nothing (the API's default)."""

    def info(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass

    def file_started(self, name: str, total: int, now: float) -> None:
        pass

    def file_progress(self, done: int, now: float) -> None:
        pass

    def file_finished(self, now: float) -> None:
        pass


class ConsoleReporter:
    """Info on `out`, warnings on `err`; on a terminal a live progress bar on `err`.

    `quiet` drops info lines and progress but keeps warnings. The bar is redrawn at most
    every `interval` seconds (of the times passed in).
    """

    def __init__(
        self, out: TextIO, err: TextIO, *, terminal: bool, quiet: bool = False, interval: float = 0.1
    ) -> None:
        self.out, self.err = out, err
        self.terminal, self.quiet, self.interval = terminal, quiet, interval
        self._meter: ProgressMeter | None = None
        self._name = ""
        self._drawn_at: float | None = None
        self._bar_width = 0

    def info(self, text: str) -> None:
        if not self.quiet:
            self._clear_bar()
            print(text, file=self.out, flush=True)

    def warning(self, text: str) -> None:
        self._clear_bar()
        print(text, file=self.err, flush=True)

    def file_started(self, name: str, total: int, now: float) -> None:
        self._meter = ProgressMeter(total, now)
        self._name = name
        self._drawn_at = None
        if not self.quiet and not self.terminal:
            print(f"sending {name} ({format_bytes(total)})", file=self.out, flush=True)

    def file_progress(self, done: int, now: float) -> None:
        meter = self._meter
        if meter is None:
            return
        meter.update(done, now)
        due = self._drawn_at is None or now - self._drawn_at >= self.interval
        if self.terminal and not self.quiet and due:
            self._draw(meter)
            self._drawn_at = now

    def file_finished(self, now: float) -> None:
        meter = self._meter
        if meter is None:
            return
        meter.update(meter.done, now)
        if not self.quiet:
            if self.terminal:
                self._draw(meter)
                self._clear_bar()
            else:
                rate = meter.rate
                rate_text = f" ({format_bytes(rate)}/s)" if rate else ""
                print(
                    f"sent {self._name}: {format_bytes(meter.done)} in "
                    f"{format_duration(meter.elapsed)}{rate_text}",
                    file=self.out,
                    flush=True,
                )
        self._meter = None

    def _draw(self, meter: ProgressMeter) -> None:
        line = f"{self._name} {meter.render()}"
        pad = max(0, self._bar_width - len(line))
        self.err.write("\r" + line + " " * pad)
        self.err.flush()
        self._bar_width = len(line)

    def _clear_bar(self) -> None:
        if self._bar_width:
            self.err.write("\r" + " " * self._bar_width + "\r")
            self.err.flush()
            self._bar_width = 0
