"""Client cases: errors and retries (spec 2.4, 5.8, 8.4 'Errors and retries')."""

from __future__ import annotations

from backupproto.client_timing import RESPONSE_TIMEOUT_S
from conformance.case import MUST, SHOULD

from .checks import backup_ok, content
from .context import ClientCase, Outcome, client_case
from .server import Script

FILES = {"photo.raw": content(3000, 9)}
ATTEMPTS = 4
"""Spec 8.4: the first attempt and three retries, each on a new connection."""


@client_case(
    "8.4-client-2107-retries",
    level=MUST,
    requirement=(
        "After the third retry fails (four attempts in all) the client MUST exit with a message "
        "starting `Fatal` that names the failed step and the last error, and a non-zero exit status."
    ),
)
def test_2107_retries(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(failing_connections=1000), FILES)
    client_case.check_finished(outcome)
    attempts = len(outcome.connections)
    error = client_case.server_error
    if attempts == 1:
        client_case.fail(
            f"{ATTEMPTS} connections (1 attempt + 3 retries) answered {error}",
            f"1 connection: the client GIVES UP ON THE FIRST {error}, without retrying",
        )
    if attempts != ATTEMPTS:
        client_case.fail(f"{ATTEMPTS} connections (1 attempt + 3 retries)", f"{attempts} connections")
    if not outcome.run.by_hand and "Fatal" not in outcome.run.output():
        client_case.fail("a message starting 'Fatal' after the last attempt", "no 'Fatal' in the output")
    client_case.check_exit(outcome, success=False, why="every attempt failed")


@client_case(
    "8.4-client-2107-recovers",
    level=MUST,
    requirement=(
        "A retry MUST open a new connection and run the session again from step 2 (the AES key "
        "died with the old connection, so a lone 1103 cannot be repeated)."
    ),
)
def test_2107_recovers(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(failing_connections=1), FILES)
    client_case.check_finished(outcome)
    if len(outcome.connections) < 2:
        client_case.fail(f"a second connection after the {client_case.server_error}", _count(outcome))
    backup_ok(client_case, outcome, FILES)


@client_case(
    "8.4-client-server-closes-mid-transfer",
    level=MUST,
    requirement=("A client MUST retry every error except a response timeout."),
)
def test_server_closes_mid_transfer(client_case: ClientCase) -> None:
    files = {"big.bin": content(1 << 20, 11)}
    outcome = client_case.run(Script(close_after_content=1 << 16), files)
    client_case.check_finished(outcome)
    if len(outcome.connections) < 2:
        client_case.fail("a new connection after the server closed mid-transfer", _count(outcome))
    backup_ok(client_case, outcome, files)


@client_case(
    "2.4-client-silent-server",
    level=SHOULD,
    requirement=(
        "a client SHOULD give up waiting for a response after a response timeout (RECOMMENDED: "
        "15 s after the last byte of its request; for a 1103, 15 s + ceil(`content_size` / 20 MiB) "
        "s, since the server flushes the file to disk before answering) and treat it as an error "
        "that is not retried (section 8.4)."
    ),
)
def test_silent_server(client_case: ClientCase) -> None:
    budget = client_case.mode.silent_timeout_s
    outcome = client_case.run(Script(silent=True), FILES, timeout_s=budget)
    attempts = len(outcome.connections)
    retried = (
        f"it connected {attempts} times: the RETRY-TIMEOUTS reading (a response timeout retried like "
        f"a 2107); spec 2.4 and 8.4 give up after the first {RESPONSE_TIMEOUT_S:g} s timeout, without a retry"
    )
    client_case.check_finished(
        outcome,
        after=" (it must give up on a server that never answers)",
        hint=retried
        if attempts > 1
        else f"spec 2.4: give up {RESPONSE_TIMEOUT_S:g} s after the last byte of the request (RECOMMENDED)",
    )
    if attempts > 1:
        client_case.fail("one connection, given up after its response timeout", retried)
    client_case.check_exit(outcome, success=False, why="the server never answered")
    if not outcome.run.by_hand and "Fatal" not in outcome.run.output():
        client_case.fail("a message starting 'Fatal'", "no 'Fatal' in the output")


@client_case(
    "8.4-client-unknown-response-code",
    level=MUST,
    requirement=(
        "An error is: a 2107; a connection that cannot be opened, closes or resets without a "
        "complete response; a response timeout; a malformed response;"
    ),
)
def test_unknown_response_code(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(unknown_code_connections=1), FILES)
    client_case.check_finished(outcome, after=" after a response with an unknown code")
    if len(outcome.connections) < 2:
        client_case.fail("a new connection after the unknown response", _count(outcome))
    backup_ok(client_case, outcome, FILES)


def _count(outcome: Outcome) -> str:
    return f"{len(outcome.connections)} connection(s)"
