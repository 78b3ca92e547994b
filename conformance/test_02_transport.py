# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Section 2: connections carry several exchanges; who closes and when; many clients at once."""

from __future__ import annotations

import threading

from backupproto.events import Register, Registered, RegistrationFailed
from conformance.case import MUST, CaseContext, case
from conformance.flows import ZERO_ID, confirm, keyed_session, payload, register, send_and_check, unique_name


@case(
    "2.1-several-requests-one-connection",
    level=MUST,
    requirement="A connection starts in state CONNECTED (section 8) and carries any number of request/response "
    "exchanges.",
)
def test_several_requests(case_context: CaseContext) -> None:
    """1100, 1101, then two files each confirmed, all on one connection."""
    session = keyed_session(case_context)
    for index in range(2):
        name = unique_name(f"f{index}")
        send_and_check(session, name, payload(100 + index, index))
        confirm(session, name)


@case(
    "2.3-connection-open-after-response",
    level=MUST,
    requirement="The server MUST NOT close the connection after any other response: 2101 and 2106 leave it open "
    "so that the client can continue (section 8).",
)
def test_open_after_response(case_context: CaseContext) -> None:
    """After 2100 the connection stays open and silent; after 2101 too."""
    wire = case_context.connect()
    _client_id, name = register(wire)
    wire.expect_silence(0.5, because="2100 was the whole response; nothing else is due")
    if wire.peer_closed:
        wire.fail(
            "the connection stays open after 2100 REGISTERED (the client sends 1101 next)",
            "the server closed the connection after one response: one request per connection",
        )
    other = case_context.connect()
    other.request(Register(ZERO_ID, name), RegistrationFailed)
    other.expect_silence(0.5, because="2101 was the whole response")
    if other.peer_closed:
        other.fail("the connection stays open after 2101 (spec 2.3)", "the server closed it")
    register(other)


@case(
    "2.2-early-bytes-next-request",
    level=MUST,
    requirement="a server MUST NOT treat bytes that arrive before it has written a response as an error in "
    "themselves; it reads them as the next request.",
)
def test_early_bytes(case_context: CaseContext) -> None:
    """Two 1100 sent in one segment (the first name taken): 2101, then 2100."""
    wire = case_context.connect()
    _, taken = register(case_context.connect("first registration"))
    first = wire.schemas.build_request(Register.code, ZERO_ID, {"name": taken})
    second = wire.schemas.build_request(Register.code, ZERO_ID, {"name": unique_name()})
    wire.send_bytes(first + second)
    wire.expect(RegistrationFailed, waiting_for="2101 for the first 1100 (its name is taken)")
    wire.expect(Registered, waiting_for="2100 for the second 1100, read after the first was answered")


@case(
    "9.1-concurrent-clients",
    level=MUST,
    requirement="A failure on one connection MUST NOT affect other connections: the server keeps serving them "
    "and keeps listening.",
)
def test_concurrent_clients(case_context: CaseContext) -> None:
    """20 clients at once (every fifth sends garbage first): every good one completes a file transfer."""
    errors: list[BaseException] = []
    start = threading.Barrier(20, timeout=case_context.timeout_s)

    def client(index: int) -> None:
        try:
            start.wait()
            if index % 5 == 0:
                bad = case_context.connect(f"client {index} (garbage)")
                bad.send_bytes(bytes(range(23)) * 2)
                bad.expect_error_and_close(allow_silent_close=True, because="garbage header")
                return
            session = keyed_session(case_context, f"client {index}")
            name = unique_name(f"c{index}")
            send_and_check(session, name, payload(1000 + index * 37, index))
            confirm(session, name)
        except BaseException as error:  # pytest's Failed is a BaseException
            errors.append(error)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(case_context.timeout_s * 6)
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        case_context.fail("20 concurrent clients finish", "some clients were still running (hung)")
