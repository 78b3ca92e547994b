"""Client cases: the CRC flow (spec 4.5-4.7, 6, 8.4 step 5)."""

from __future__ import annotations

from backupproto.dialect import RequestCode
from conformance.case import MUST

from .checks import backup_ok, check_file_sent, content, explain_rejected
from .context import ClientCase, Outcome, client_case
from .server import Script

FILES = {"ledger.bin": content(40_000, 7)}
MAX_SENDS = 3
"""Spec 4.6 and 8.4: at most 3 sends of a file in a session (one 1103 and two resends)."""
FOUR_SEND_READING = 4
"""The named other reading of "up to 3 times": 1103 and three resends before 1106."""

SEND_FILE, CRC_OK, CRC_RETRY, CRC_GIVE_UP = (
    int(RequestCode.SEND_FILE),
    int(RequestCode.CRC_OK),
    int(RequestCode.CRC_RETRY),
    int(RequestCode.CRC_GIVE_UP),
)


def _settlements(outcome: Outcome) -> list[int]:
    """The file requests of the first keyed connection, from the first 1103 on."""
    for connection in outcome.connections:
        codes = connection.codes()
        if SEND_FILE in codes:
            return codes[codes.index(SEND_FILE) :]
    return []


@client_case(
    "8.4-client-crc-match",
    level=MUST,
    requirement=("equal: send 1104, receive 2104: done;"),
)
def test_crc_match(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), FILES)
    backup_ok(client_case, outcome, FILES)
    if _settlements(outcome) != [SEND_FILE, CRC_OK]:
        client_case.fail("1103, then 1104", f"{_settlements(outcome)} (the client's own cksum differs?)")


@client_case(
    "8.4-client-crc-mismatch-resends",
    level=MUST,
    requirement=("different, fewer than 3 sends so far: send 1105, then 1103 again;"),
)
def test_crc_mismatch_resends(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(crc_lies=1), FILES)
    client_case.check_finished(outcome)
    explain_rejected(client_case, outcome)
    codes = _settlements(outcome)
    want = [SEND_FILE, CRC_RETRY, SEND_FILE, CRC_OK]
    if codes[:2] == [SEND_FILE, CRC_GIVE_UP]:
        client_case.fail(
            f"{want} (one wrong cksum in 2103)",
            f"{codes}: the client NEVER RESENDS; it gives up (1106) on the first mismatch",
        )
    if codes[:2] == [SEND_FILE, CRC_OK]:
        client_case.fail(f"{want}", f"{codes}: the client confirms (1104) a cksum that differs from its own")
    if codes != want:
        client_case.fail(f"{want}", f"{codes}")
    backup_ok(client_case, outcome, FILES)


@client_case(
    "8.4-client-crc-gives-up",
    level=MUST,
    requirement=(
        "A client MUST NOT send more than 3 copies of a file in a session (one 1103 and at most "
        "two resends, section 8.4)."
    ),
)
def test_crc_gives_up(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(crc_lies=1000), FILES)
    client_case.check_finished(outcome, after=" after 1106 and 2104")
    explain_rejected(client_case, outcome)
    codes = _settlements(outcome)
    sends = codes.count(SEND_FILE)
    want = [SEND_FILE, CRC_RETRY] * (MAX_SENDS - 1) + [SEND_FILE, CRC_GIVE_UP]
    if codes == want:
        check_file_sent(client_case, outcome, *next(iter(FILES.items())))
        return
    if CRC_GIVE_UP not in codes:
        if sends > FOUR_SEND_READING:
            actual = f"{sends} sends and no 1106: the client RETRIES FOREVER (the server closed it)"
        else:
            actual = f"{codes}: NO 1106 after the last mismatch (the client just stops)"
        client_case.fail(f"{want} (the cksum never matches)", actual)
    if sends == FOUR_SEND_READING and codes[-1] == CRC_GIVE_UP:
        client_case.fail(
            f"{want}: at most {MAX_SENDS} sends in total",
            f"{sends} sends, then 1106: ONE SEND TOO MANY, the 4-send reading of 'up to 3 times' "
            "(1103 and three resends); spec 4.6 and 8.4 take the limit as 3 sends in total",
        )
    client_case.fail(f"{want}", f"{codes} ({sends} sends)")
