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
    requirement="When the cksum of 2103 equals its own, the client sends 1104 CRC_OK (not 1105 or 1106) "
    "and, on 2104, ends the backup with exit status 0 (spec 6, 8.4 step 5).",
)
def test_crc_match(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), FILES)
    backup_ok(client_case, outcome, FILES)
    if _settlements(outcome) != [SEND_FILE, CRC_OK]:
        client_case.fail("1103, then 1104", f"{_settlements(outcome)} (the client's own cksum differs?)")


@client_case(
    "8.4-client-crc-mismatch-resends",
    level=MUST,
    requirement="When the cksum of 2103 differs from its own, the client sends 1105 CRC_RETRY and then "
    "the same file again in a 1103 on the same connection; a matching 2103 then gets 1104 (spec 4.6, 8.4).",
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
    requirement="A client sends a file at most 3 times in a session (one 1103, two resends after 1105); "
    "after the third mismatching 2103 it sends 1106 CRC_GIVE_UP, receives 2104, sends no further copy "
    "and ends (spec 4.6, 4.7, 8.4).",
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
