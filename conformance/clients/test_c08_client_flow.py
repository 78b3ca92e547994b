"""Client cases: registration, keys, saved identity, reconnection (spec 4.1-4.3, 7, 8.4, 12)."""

from __future__ import annotations

from backupproto import crypto
from backupproto.dialect import RequestCode
from backupproto.errors import BackupProtoError
from backupproto.events import Registered, SendPublicKey
from conformance.case import MUST, SHOULD

from .checks import backup_ok, check_me_info_written, content, explain_rejected, first_requests
from .context import ClientCase, client_case
from .server import Script
from .workdir import ME_INFO, read_me_info

FILE = {"report.txt": b"quarterly report\n"}
REGISTRATION = [RequestCode.REGISTER, RequestCode.SEND_PUBLIC_KEY]


@client_case(
    "8.4-client-registers",
    level=MUST,
    requirement="Without me.info the client sends 1100 REGISTER with the name of transfer.info, then "
    "on 2100 1101 SEND_PUBLIC_KEY with the client id it received and the same name; then it backs "
    "the file up and exits 0 (spec 8.4 steps 4-6).",
)
def test_registers(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), FILE)
    first_requests(client_case, outcome, REGISTRATION, "1100 then 1101")
    connection = outcome.connections[0]
    register, send_key = connection.requests[0], connection.requests[1]
    given = connection.responses[0]
    assert isinstance(given, Registered) and isinstance(send_key, SendPublicKey)
    name = getattr(register, "name", None)
    if name != outcome.name or send_key.name != outcome.name:
        client_case.fail(f"name {outcome.name!r} in 1100 and 1101", f"{name!r} and {send_key.name!r}")
    if send_key.client_id != given.client_id:
        client_case.fail(
            f"1101's client_id {given.client_id.hex()} (from 2100)", f"client_id {send_key.client_id.hex()}"
        )
    backup_ok(client_case, outcome, FILE)
    identity = check_me_info_written(client_case, outcome)
    if identity is not None and client_case.info is not None:
        client_case.remember(identity, client_case.info.id)


@client_case(
    "7.1-client-public-key",
    level=MUST,
    requirement="The 1101 public key is the 160-byte X.509 SubjectPublicKeyInfo DER of a 1024-bit RSA "
    "key, the public half of the key the client saves in me.info (spec 3.5, 7.1, 12.2).",
)
def test_public_key(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), FILE)
    first_requests(client_case, outcome, REGISTRATION, "1100 then 1101")
    send_key = outcome.connections[0].requests[1]
    assert isinstance(send_key, SendPublicKey)
    try:
        public = crypto.import_public_key(send_key.public_key, bits=client_case.dialect.rsa_bits)
    except BackupProtoError as error:
        client_case.fail("a SubjectPublicKeyInfo DER of a 1024-bit RSA key", str(error))
    identity = check_me_info_written(client_case, outcome)
    if identity is not None and crypto.public_key_der(identity.private_key) != crypto.public_key_der(public):
        client_case.fail("the public half of the key in me.info", "another key")


@client_case(
    "7.2-client-unwraps-aes-key",
    level=MUST,
    requirement="The client unwraps the 2102 AES key with its private key (RSA-OAEP, SHA-1) and encrypts "
    "the file with it: the content decrypts under the key the server wrapped (spec 7.2, 7.3).",
)
def test_unwraps_key(client_case: ClientCase) -> None:
    files = {"data.bin": content(1000)}
    outcome = client_case.run(Script(), files)
    backup_ok(client_case, outcome, files)


@client_case(
    "12.2-client-me-info",
    level=MUST,
    requirement="After 2100 the client writes me.info: line 1 the name, line 2 the 16 id bytes as 32 "
    "hexadecimal digits, line 3 base64 of the private key's PKCS#8 DER (spec 12.2).",
)
def test_me_info(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), FILE)
    client_case.check_finished(outcome)
    identity = check_me_info_written(client_case, outcome)
    if identity is None:
        return
    responses = [response for connection in outcome.connections for response in connection.responses]
    registered = next((r for r in responses if isinstance(r, Registered)), None)
    if registered is None:
        client_case.fail("a registration (1100, 2100)", f"requests {outcome.requests()}")
    if identity.name != outcome.name or identity.client_id != registered.client_id:
        client_case.fail(
            f"me.info: {outcome.name!r}, {registered.client_id.hex()}",
            f"{identity.name!r}, {identity.client_id.hex()}",
        )


@client_case(
    "12.3-client-priv-key",
    level=MUST,
    requirement="priv.key holds the key of me.info line 3 in the same form: one line of base64 of the "
    "PKCS#8 PrivateKeyInfo DER (spec 12.3).",
)
def test_priv_key(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(), FILE)
    client_case.check_finished(outcome)
    check_me_info_written(client_case, outcome)  # priv.key: one line of PKCS#8, the key of me.info


@client_case(
    "8.4-client-reconnects",
    level=MUST,
    requirement="With me.info the client sends 1102 RECONNECT with its saved id and name (no 1100), "
    "unwraps the fresh AES key of 2105 with its saved private key and encrypts with it (spec 8.4 step 3).",
)
def test_reconnects(client_case: ClientCase) -> None:
    saved = client_case.saved_identity()
    files = {"notes.txt": content(300, 2)}
    outcome = client_case.run(Script(), files, identity=saved)
    client_case.check_finished(outcome)
    explain_rejected(client_case, outcome)
    codes = outcome.requests()
    if int(RequestCode.REGISTER) in codes and int(RequestCode.RECONNECT) not in codes:
        client_case.fail(
            "1102 RECONNECT with the id of me.info",
            f"requests {codes}: the client re-registers (1100) although me.info exists",
        )
    first_requests(client_case, outcome, [RequestCode.RECONNECT], "1102 first")
    reconnect = outcome.connections[0].requests[0]
    want = saved.identity
    if (reconnect.client_id, getattr(reconnect, "name", None)) != (want.client_id, want.name):
        client_case.fail(
            f"client_id {want.client_id.hex()}, name {want.name!r} (me.info)",
            f"client_id {reconnect.client_id.hex()}, name {getattr(reconnect, 'name', None)!r}",
        )
    backup_ok(client_case, outcome, files)


@client_case(
    "8.4-client-reconnect-denied",
    level=MUST,
    requirement="On 2106 the client registers anew on the same connection: 1100 with the same name, a "
    "new RSA pair in 1101, and replaces me.info and priv.key (spec 8.4 '2106 handling').",
)
def test_reconnect_denied(client_case: ClientCase) -> None:
    saved = client_case.saved_identity()
    outcome = client_case.run(Script(deny_reconnect=True), FILE, identity=saved)
    client_case.check_finished(outcome)
    first = outcome.connections[0] if outcome.connections else None
    codes = first.codes() if first is not None else []
    if codes[:1] == [int(RequestCode.RECONNECT)] and codes[1:3] != REGISTRATION:
        client_case.fail(
            "1100 then 1101 on the same connection after 2106",
            f"requests {codes} on the first connection: the client ignored 2106",
            hint=(first.error if first is not None else None) or "",
        )
    first_requests(client_case, outcome, [RequestCode.RECONNECT, *REGISTRATION], "1102, 1100, 1101")
    backup_ok(client_case, outcome, FILE)
    if outcome.run.by_hand:
        return
    identity = read_me_info(outcome.folder / ME_INFO)
    if identity.client_id == saved.identity.client_id:
        client_case.fail("me.info replaced with the new client id", "me.info keeps the denied id")


@client_case(
    "8.4-client-name-taken",
    level=MUST,
    requirement="On 2101 the client stops: Fatal (the name is taken), no 1101, no me.info, a non-zero "
    "exit status (spec 8.4 step 4).",
)
def test_name_taken(client_case: ClientCase) -> None:
    outcome = client_case.run(Script(taken_names=frozenset({"alice"})), FILE)
    first_requests(client_case, outcome, [RequestCode.REGISTER], "1100 first")
    codes = outcome.requests()
    if codes != [int(RequestCode.REGISTER)]:
        client_case.fail("no request after 2101", f"requests {codes}")
    if not outcome.run.by_hand:
        if (outcome.folder / ME_INFO).exists():
            client_case.fail("no me.info after 2101", "me.info was written")
        if "Fatal" not in outcome.run.output():
            client_case.fail("a message starting 'Fatal'", "no 'Fatal' in the output")
    client_case.check_exit(outcome, success=False, why="the name is taken")


@client_case(
    "8.4-client-denied-then-taken",
    level=SHOULD,
    requirement="If the 1100 after a 2106 gets 2101 and the client holds me.info, it SHOULD send 1101 "
    "with its saved id, name and public key on the same connection, completing an interrupted "
    "registration (spec 8.4 '2106 handling').",
)
def test_denied_then_taken(client_case: ClientCase) -> None:
    saved = client_case.saved_identity()
    known = saved.identity
    script = Script(deny_reconnect=True, taken_names=frozenset({known.name}))
    outcome = client_case.run(script, FILE, identity=saved)
    first_requests(client_case, outcome, [RequestCode.RECONNECT, RequestCode.REGISTER], "1102, then 1100")
    connection = outcome.connections[0]
    follow = connection.requests[2] if len(connection.requests) > 2 else None
    if not isinstance(follow, SendPublicKey):
        client_case.fail("1101 with the saved id and key after 2101", f"requests {connection.codes()}")
    offered = (follow.client_id, follow.public_key)
    if offered != (known.client_id, crypto.public_key_der(known.private_key)):
        client_case.fail("1101 with the id and public key of me.info", "another id or key")
    backup_ok(client_case, outcome, FILE)
