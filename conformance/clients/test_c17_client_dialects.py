"""Client cases of the dialects (spec dialects 17, 18): 2024 packets and AES-256, the 2024 response
codes, and 2022C's returning client (1101 again, no reconnect). Each runs in the dialects it
applies to and is skipped in the others."""

from __future__ import annotations

from backupproto import crypto, detect
from backupproto.dialect import DIALECT_2023C, RequestCode
from conformance.case import MUST

from .checks import backup_ok, check_first_request_identity, content, explain_rejected, first_requests
from .context import ClientCase, client_case
from .detection import Detection
from .server import Script


@client_case(
    "17.1-client-dialect",
    level=MUST,
    requirement=(
        "a request whose `code` is not a request code **of the reader's dialect** is "
        "`unknown_code` (field `code`, offset 17), even if it is a valid code of another dialect"
    ),
)
def test_dialect(client_case: ClientCase, client_detection: Detection | None) -> None:
    if client_detection is not None and client_detection.dialect is None:
        client_case.fail(
            "requests of one of the dialects 2022C, 2023A, 2023C, 2024A, 2024C",
            client_detection.summary,
            hint="the other client cases were not run\n" + "\n".join(client_detection.evidence),
        )
    dialect = client_case.dialect
    outcome = client_case.run(Script(), {"dialect.txt": b"dialect\n"})
    client_case.check_finished(outcome)
    codes = [code for connection in outcome.connections for code in connection.wire_codes]
    foreign = [code for code in codes if dialect.request_role(code) is None]
    if foreign:
        others = (
            "/".join(d.name for d in detect.dialects_with_code(foreign[0], requests=True)) or "no dialect"
        )
        client_case.fail(
            f"{dialect.name} request codes {sorted(dialect.requests.values())}",
            f"request code {foreign[0]} (of {others})",
            hint=f"run the suite with --bp-dialect {others.split('/')[0]} or auto"
            if others != "no dialect"
            else "",
        )


PACKETS = 3
"""A file of more than two packets of our sender (65536 bytes each) shows numbering and sizes."""


@client_case(
    "18.2-client-packets",
    level=MUST,
    requirement=("Packets are numbered **from 1** to `total_packets`"),
)
def test_packets(client_case: ClientCase) -> None:
    client_case.require(client_case.dialect.packetised, "packetised SEND_FILE (2024A, 2024C)")
    files = {"packets.bin": content(PACKETS * 65536 - 100, 18)}
    outcome = client_case.run(Script(), files)
    backup_ok(client_case, outcome, files)


@client_case(
    "18.6-client-aes-256",
    level=MUST,
    requirement=(
        "The AES key is 32 bytes (AES-256-CBC, zero IV, PKCS#7; content sizes as 7.3, the block "
        "is still 16 bytes)."
    ),
)
def test_aes_256(client_case: ClientCase) -> None:
    client_case.require(client_case.dialect.aes_key_size == 32, "a 32-byte AES key (2024A, 2024C)")
    files = {"aes.bin": content(1000, 186)}
    outcome = client_case.run(Script(), files)
    backup_ok(client_case, outcome, files)


@client_case(
    "18.4-client-2024-response-codes",
    level=MUST,
    requirement=("2100-2107 are `unknown_code` for a 2024A client"),
)
def test_2024_response_codes(client_case: ClientCase) -> None:
    dialect = client_case.dialect
    client_case.require(dialect.name.startswith("2024"), "the 2024 response codes 1600-1607")
    outcome = client_case.run(Script(response_dialect=DIALECT_2023C), {"mixed.txt": b"mixed\n"})
    client_case.check_finished(outcome)
    keyed = [code for code in outcome.requests() if code == RequestCode.SEND_PUBLIC_KEY]
    if keyed:
        client_case.fail(
            "no SEND_PUBLIC_KEY after a 2100 (an unknown code in 2024): an error, then Fatal",
            f"the client took 2100 for REGISTERED and sent {dialect.requests[RequestCode.SEND_PUBLIC_KEY]}",
            hint="the client speaks a mixed dialect: 2024 request codes with 2023A's response codes "
            "(2100-2107); 2024 responses are 1600-1607 (dialects 17.6, 18.4)",
        )
    client_case.check_exit(outcome, success=False, why="no server of its dialect answered")


@client_case(
    "17.4-client-2022c-returning",
    level=MUST,
    requirement=(
        "A returning client (one with `me.info`) re-sends **1101 SEND_PUBLIC_KEY** with its saved "
        "id in the header, its saved name and the public key of its saved private key, on a fresh "
        "connection in state CONNECTED (8.2 allows 1101 there)."
    ),
)
def test_2022c_returning(client_case: ClientCase) -> None:
    dialect = client_case.dialect
    client_case.require(not dialect.has_reconnect, "a dialect without reconnect (2022C)")
    saved = client_case.saved_identity()
    files = {"again.txt": b"a returning 2022C client\n"}
    outcome = client_case.run(Script(), files, identity=saved)
    explain_rejected(client_case, outcome)
    first_requests(client_case, outcome, [RequestCode.SEND_PUBLIC_KEY], "1101 first (with the saved id)")
    check_first_request_identity(client_case, outcome, saved.identity, "1101")
    sent_key = getattr(outcome.connections[0].requests[0], "public_key", b"")
    if sent_key != crypto.public_key_der(saved.identity.private_key):
        client_case.fail("1101 with the public key of the saved private key (17.4 step 4)", "another key")
    backup_ok(client_case, outcome, files)
