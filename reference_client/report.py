"""Where the client's messages go: a terminal with a progress bar, plain log lines, or nowhere."""

from __future__ import annotations

from typing import Protocol, TextIO

from .progress import ProgressMeter, TerminalProgress, final_line, format_bytes


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
    """Info on `out`, warnings on `err`; on a terminal a live progress line on `err`
    (`TerminalProgress`), and on every kind of output the final size/time/throughput line of
    each send on `out`.

    `quiet` drops info lines and progress but keeps warnings. The line is redrawn at most
    every `interval` seconds (of the times passed in).
    """

    def __init__(
        self, out: TextIO, err: TextIO, *, terminal: bool, quiet: bool = False, interval: float = 0.1
    ) -> None:
        self.out, self.err = out, err
        self.terminal, self.quiet = terminal, quiet
        self._meter: ProgressMeter | None = None
        self._name = ""
        self._live = TerminalProgress(err, interval=interval) if terminal and not quiet else None

    def info(self, text: str) -> None:
        if not self.quiet:
            self._hide()
            print(text, file=self.out, flush=True)

    def warning(self, text: str) -> None:
        self._hide()
        print(text, file=self.err, flush=True)

    def file_started(self, name: str, total: int, now: float) -> None:
        self._meter = ProgressMeter(total, now)
        self._name = name
        if not self.quiet and not self.terminal:
            print(f"sending {name} ({format_bytes(total)})", file=self.out, flush=True)

    def file_progress(self, done: int, now: float) -> None:
        meter = self._meter
        if meter is None:
            return
        meter.update(done, now)
        if self._live is not None:
            self._live.show(self._name, meter)

    def file_finished(self, now: float) -> None:
        meter = self._meter
        if meter is None:
            return
        meter.update(meter.done, now)
        self._meter = None
        if self._live is not None:
            self._live.show(self._name, meter)
        self.info(final_line(self._name, meter))

    def _hide(self) -> None:
        if self._live is not None:
            self._live.hide()
