"""One running client case: runs the client against a scripted server, keeps every run for the
evidence, and fails with the requirement, expected vs actual, the decoded conversation, the
client's output tail and the files it wrote."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from backupproto import crypto
from backupproto.dialect import V3, Dialect, ResponseCode
from conformance.case import CaseInfo, Level, Target, case

from .runner import ClientRun, run_command, wait_by_hand
from .server import Connection, Script, ScriptedServer
from .workdir import ME_INFO, PRIV_KEY, TRANSFER_INFO, Identity, listing, prepare

CLIENT_ATTRIBUTE = "__conformance_client_case__"
_F = TypeVar("_F", bound=Callable[..., Any])


def client_case(case_id: str, *, level: Level, requirement: str) -> Callable[[_F], _F]:
    """`conformance.case.case` for a client case (collected only in client mode)."""

    def decorate(function: _F) -> _F:
        setattr(function, CLIENT_ATTRIBUTE, True)
        return case(case_id, level=level, requirement=requirement)(function)

    return decorate


def is_client_case(item: pytest.Item) -> bool:
    """True for an item declared with `client_case`."""
    return bool(getattr(getattr(item, "function", None), CLIENT_ATTRIBUTE, False))


@dataclass(frozen=True)
class ClientMode:
    """The options of client mode."""

    command: str | None
    listen: Target | None
    cwd_template: Path | None
    timeout_s: float
    silent_timeout_s: float
    dialect: Dialect | None = None
    """The client's dialect; None: auto (detected from the client's first requests)."""

    def describe(self) -> str:
        who = f"`{self.command}`" if self.command else f"a client started by hand, to {self.listen}"
        limits = f"each run may take {self.timeout_s:g} s (silent server: {self.silent_timeout_s:g} s)"
        dialect = self.dialect.name if self.dialect is not None else "auto (detected from its first request)"
        return f"client mode: {who}; dialect {dialect}; {limits}"


@dataclass
class SavedIdentity:
    """The identity a returning-client case starts from, and where it came from."""

    identity: Identity
    origin: str


_SAVED: list[SavedIdentity] = []
"""The first valid me.info a client wrote in this run (returning-client cases reuse it)."""


@dataclass
class Outcome:
    """One run of the client against one scripted server."""

    number: int
    folder: Path
    server: ScriptedServer
    run: ClientRun
    files: dict[str, bytes]
    name: str
    origin: str = ""

    @property
    def connections(self) -> list[Connection]:
        return self.server.connections

    def requests(self) -> list[int]:
        """Every request code of the run, over all connections."""
        return [code for connection in self.connections for code in connection.codes()]

    def evidence(self) -> list[str]:
        who = "a client started by hand" if self.run.by_hand else f"`{self.run.command}`"
        lines = [f"--- run {self.number}: {who} in {self.folder}{self.origin}"]
        lines += [f"  {line}" for line in self.run.tail()]
        lines.append("  working folder after the run:")
        lines += [f"    {line}" for line in listing(self.folder)]
        if not self.connections:
            lines.append("  conversation: the client never connected")
        for connection in self.connections:
            closed = f", closed by the {connection.closed_by}" if connection.closed_by else ""
            lines.append(f"  connection {connection.number}{closed}:")
            lines += [f"    {line}" for line in connection.lines]
        return lines


@dataclass
class ClientCase:
    """The fixture ``client_case``: run the client, judge, fail with evidence."""

    info: CaseInfo | None
    mode: ClientMode
    tmp_path: Path
    announce: Callable[[str], None] = print
    """Shows the prompt of listen mode (past pytest's output capture)."""
    outcomes: list[Outcome] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def dialect(self) -> Dialect:
        return self.mode.dialect or V3

    @property
    def server_error(self) -> str:
        """How the dialect's server reports an error: its SERVER_ERROR code, or (2022C) a close."""
        code = self.dialect.responses.get(ResponseCode.SERVER_ERROR)
        return str(code) if code is not None else f"a close ({self.dialect.name} has no 2107)"

    def require(self, applies: bool, what: str) -> None:
        """Skip the case when it does not apply to the client's dialect (`what` it needs)."""
        if not applies:
            pytest.skip(f"not in dialect {self.dialect.name}: this case needs {what}")

    def run(
        self,
        script: Script,
        files: dict[str, bytes],
        *,
        name: str = "alice",
        identity: SavedIdentity | None = None,
        folder: Path | None = None,
        timeout_s: float | None = None,
    ) -> Outcome:
        """Serve `script` and run the client once in a fresh working folder (or `folder`)."""
        number = next(self._numbers)
        folder = folder or self.tmp_path / f"run-{number}"
        if folder.exists():
            identity = None  # a later run in the same folder: the client's own me.info stays
        listen = self.mode.listen
        address = ("127.0.0.1", 0) if listen is None else (listen.host, listen.port)
        origin = ""
        saved = identity.identity if identity is not None else None
        if identity is not None and saved is not None:
            name = saved.name
            script.known[saved.client_id] = (saved.name, saved.private_key)  # wraps with its public half
            origin = f" (me.info and priv.key {identity.origin})"
        server = ScriptedServer(script, dialect=self.dialect, listen=address).start()
        try:
            run = self.launch(server.address, folder, name, files, saved, timeout_s, server)
        finally:
            server.stop()
        outcome = Outcome(number, folder, server, run, files, name, origin)
        self.outcomes.append(outcome)
        return outcome

    def launch(
        self,
        address: tuple[str, int],
        folder: Path,
        name: str,
        files: dict[str, bytes],
        identity: Identity | None = None,
        timeout_s: float | None = None,
        server: ScriptedServer | None = None,
    ) -> ClientRun:
        """Fill the working folder for a server at `address`, then run the client there (or wait
        for it to be run by hand: needs the scripted `server` to see its connections)."""
        host = address[0] if address[0] not in ("0.0.0.0", "::", "") else "127.0.0.1"
        template = self.mode.cwd_template
        prepare(folder, f"{host}:{address[1]}", name, files, identity=identity, template=template)
        budget = timeout_s or self.mode.timeout_s
        if self.mode.command is not None:
            return run_command(self.mode.command, folder, budget)
        if server is None:
            pytest.skip("this case needs --bp-client-cmd (it cannot be played to a client started by hand)")
        return wait_by_hand(server, self._prompt(folder, budget), budget, self.announce)

    def _prompt(self, folder: Path, budget: float) -> str:
        info = (
            self.info.id
            if self.info is not None
            else "detecting your client's dialect (--bp-dialect auto; --bp-dialect NAME skips this run)"
        )
        transfer = (folder / TRANSFER_INFO).read_text().splitlines()
        listen = self.mode.listen
        lines = [
            "",
            f"=== {info}: start your client now (waiting up to {budget:g} s) ===",
            f"copy the files of {folder} next to your client; its transfer.info reads:",
            f"    {transfer[0]}   (line 1: use this machine's address as the client sees it, port "
            f"{listen.port if listen else '?'})",
            *(f"    {line}" for line in transfer[1:]),
            "(lines 3+: the files, copied beside the client; give their paths on the client's machine)",
        ]
        if (folder / ME_INFO).exists():
            lines.append(f"keep {ME_INFO} and {PRIV_KEY} from that folder (a returning client)")
        else:
            lines.append(f"delete any {ME_INFO} and {PRIV_KEY} beside the client (a new client)")
        return "\n".join(lines)

    # --- judging ------------------------------------------------------------------------------

    def fail(self, expected: str, actual: str, *, hint: str = "") -> NoReturn:
        """Fail the case with the requirement, expected vs actual, and the evidence of every run."""
        lines = []
        if self.info is not None:
            lines.append(f"[{self.info.id}] {self.info.level}: {self.info.requirement}")
        lines += [f"expected: {expected}", f"actual:   {actual}"]
        if hint:
            lines.append(f"diagnosis: {hint}")
        for outcome in self.outcomes:
            lines += outcome.evidence()
        raise pytest.fail.Exception("\n".join(lines), pytrace=False) from None

    def check_finished(self, outcome: Outcome, after: str = "", hint: str = "") -> None:
        """Fail if the client hung or crashed (killed by a signal, uncaught exception); `hint`
        says why a hang matters in this case."""
        run = outcome.run
        last = _last_line(outcome)
        if run.hung:
            why = hint or "a client must never wait forever (spec 2.4, 8.4)"
            self.fail(
                f"the client ends its run{after}",
                f"the client HUNG: it did not exit within {run.seconds:.0f} s (limit {run.limit_s:g} s) and "
                f"was killed; last thing on the wire: {last}",
                hint="\n".join(filter(None, [why, run.stderr.strip()])),
            )
        if not outcome.connections and not run.by_hand:
            self.fail(
                "the client connects to the server named in line 1 of transfer.info",
                f"the client never connected; it exited with status {run.describe_exit()}",
                hint="did the command start? It runs in the case's working folder (see stderr below)",
            )
        crash = run.crashed
        if crash:
            self.fail(
                f"the client ends its run{after} without crashing",
                f"the client CRASHED ({crash}) with exit status {run.describe_exit()}; "
                f"last thing on the wire: {last}",
            )

    def check_exit(self, outcome: Outcome, *, success: bool, why: str) -> None:
        """Exit status 0 (`success`) or non-zero; unknown when started by hand."""
        code = outcome.run.returncode
        if code is None:
            return
        if success and code != 0:
            self.fail(f"exit status 0 ({why})", f"exit status {code}")
        if not success and code == 0:
            self.fail(f"a non-zero exit status ({why})", "exit status 0")

    def saved_identity(self) -> SavedIdentity:
        """The me.info of an earlier case, or one made by the suite (with its origin)."""
        if _SAVED:
            return _SAVED[0]
        made = Identity("bob-returning", crypto.new_aes_key(), crypto.generate_private_key())
        return SavedIdentity(made, "made by the suite (no earlier case left a valid me.info)")

    @staticmethod
    def remember(identity: Identity, case_id: str) -> None:
        """Offer a client-written identity to later returning-client cases."""
        if not _SAVED:
            _SAVED.append(SavedIdentity(identity, f"written by the client in case {case_id}"))


def _last_line(outcome: Outcome) -> str:
    """The last message exchanged (and whether the connection was closed after it)."""
    for connection in reversed(outcome.connections):
        messages = [line.strip() for line in connection.lines if line[:2] in (">>", "<<", "!!")]
        if messages:
            closer = connection.closed_by
            return messages[-1] + (f" (then the {closer} closed the connection)" if closer else "")
    return "nothing (the client never connected)"


__all__ = ["ClientCase", "ClientMode", "Outcome", "client_case", "is_client_case"]
