# ruff: noqa: E501 - requirement texts are quoted from spec/protocol.md
"""Live fuzzing (hypothesis): malformed and valid-but-unusual frames sent to the target.

Bounded: --bp-fuzz-examples N examples per case (default 150; the valid case runs N/3) and a time
budget per case; no shrinking (a live server is not deterministic enough to shrink against),
no example database; --bp-seed makes the generated frames repeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from backupproto.crypto import CbcEncryptor
from backupproto.events import FileReceived, ServerError
from backupproto.schemas import Schemas, schemas_for
from conformance.case import MUST, CaseContext, Closed, case, hex_preview
from conformance.flows import (
    Session,
    check_file_received,
    check_listening,
    confirm,
    gnu_cksum,
    probe,
    register,
    send_key,
)

BUDGET_S = 40.0
PROBE_EVERY = 25
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_FILE_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="/\\:")


def _settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, examples),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def run_as_server_checks(run: Callable[[], None]) -> None:
    """Run a hypothesis test of the server; when an input failed once and then passed on replay
    (hypothesis: Flaky), the inconsistency is the server's (it hung, slowed down or changed its
    answer), not the suite's: report the first failure as the case's."""
    try:
        run()
    except Flaky as flaky:
        inner = [
            error for error in getattr(flaky, "exceptions", ()) if isinstance(error, pytest.fail.Exception)
        ]
        first = str(inner[0]) if inner else str(flaky)
        raise pytest.fail.Exception(
            f"{first}\ndiagnosis: the server answered this input differently when it was tried again "
            "(hypothesis reports it as flaky): the server behaves inconsistently (it hung, slowed down or "
            "changed its answer); the failure above is its first occurrence",
            pytrace=False,
        ) from None


@st.composite
def malformed_frames(draw: st.DrawFn, schemas: Schemas) -> bytes:
    """A request header with any mix of valid and invalid fields, and a payload that may not fit it."""
    version = draw(st.sampled_from([3, 3, 3, 3, 0, 2, 4, 255]))
    code = draw(st.one_of(st.sampled_from(sorted(schemas.dialect.requests.values())), st.integers(0, 0xFFFF)))
    name = draw(st.binary(max_size=schemas.dialect.max_name_length))
    body = draw(
        st.one_of(
            st.binary(max_size=600),
            st.just(name.ljust(schemas.dialect.name_size, b"\x00")),
            st.just(
                name.ljust(schemas.dialect.name_size, b"\x00")
                + draw(
                    st.binary(
                        min_size=schemas.dialect.public_key_size, max_size=schemas.dialect.public_key_size
                    )
                )
            ),
            st.just(
                draw(st.integers(0, 0xFFFFFFFF)).to_bytes(4, "little")
                + name.ljust(schemas.dialect.name_size, b"\x00")
            ),
        )
    )
    mode = draw(st.sampled_from(["exact", "exact", "near", "any"]))
    if mode == "exact":
        size = len(body)
    elif mode == "near":
        size = max(0, len(body) + draw(st.integers(-3, 3)))
    else:
        size = draw(st.integers(0, 0xFFFFFFFF))
    client_id = draw(st.sampled_from([bytes(16), b"\xff" * 16, bytes(range(16))]))
    return schemas.build_request_header(client_id, code, size, version) + body


@case(
    "9.1-fuzz-malformed-requests",
    level=MUST,
    requirement="Answers any request the server cannot accept or carry out: a malformed request, an unknown code or version, a request out of turn, a name or key that fails validation, a limit exceeded, or an internal failure (disk full, database error). Empty payload. The server closes the connection after it (section 2.3).",
)
def test_fuzz_malformed(case_context: CaseContext, fuzz_examples: int, conformance_seed: int) -> None:
    """Each frame on its own connection, then half-close: only well-formed responses, 2107 then close, or a close."""
    deadline = time.monotonic() + BUDGET_S
    count = [0]
    previous: list[bytes] = []

    @seed(conformance_seed)
    @_settings(fuzz_examples)
    @given(frame=malformed_frames(schemas_for(case_context.dialect)))
    def run(frame: bytes) -> None:
        if time.monotonic() > deadline:
            return
        count[0] += 1
        context = CaseContext(
            case_context.info, case_context.target, case_context.timeout_s, dialect=case_context.dialect
        )
        check_listening(
            context,
            "the server keeps listening after every fuzzed frame (spec 9.1)",
            f"{count[0] - 1} frames",
            hint=f"the frame sent just before: {hex_preview(previous[-1]) if previous else '(none)'}",
        )
        previous[:] = [frame]
        try:
            wire = context.connect("fuzz")
            wire.send_bytes(frame)
            wire.shutdown_write()
            for _ in range(3):
                try:
                    received = wire.receive(waiting_for="a well-formed response, or a close")
                except Closed:
                    break
                if isinstance(received.event, ServerError):
                    wire.expect_closed(after="2107 SERVER_ERROR")
                    break
            if count[0] % PROBE_EVERY == 0:
                probe(context, after=f"{count[0]} fuzzed frames")
        finally:
            context.close()

    run_as_server_checks(run)
    probe(case_context, after=f"{count[0]} fuzzed frames")


@st.composite
def unusual_clients(draw: st.DrawFn) -> tuple[str, str, bytes, list[int]]:
    """A valid but unusual name and file name, a small file, and how to cut the 1103 into pieces."""
    name = draw(st.text(_PRINTABLE, min_size=1, max_size=200))
    core = draw(st.text(_FILE_CHARS, max_size=230))
    data = draw(st.binary(max_size=3000))
    cuts = draw(st.lists(st.integers(1, 400), max_size=6))
    return name, f"f{core}x", data, cuts


@case(
    "9.1-fuzz-valid-unusual",
    level=MUST,
    requirement="`cksum` is the POSIX cksum of the decrypted plaintext (section 6).",
)
def test_fuzz_valid(case_context: CaseContext, fuzz_examples: int, conformance_seed: int) -> None:
    """Unusual valid names (spaces, quotes, 200 chars), file names and sizes, the 1103 in odd pieces: all served."""
    deadline = time.monotonic() + BUDGET_S / 2
    suffix = [0]

    @seed(conformance_seed)
    @_settings(fuzz_examples // 3)
    @given(client=unusual_clients())
    def run(client: tuple[str, str, bytes, list[int]]) -> None:
        if time.monotonic() > deadline:
            return
        name, file_name, data, cuts = client
        suffix[0] += 1
        name = f"{name}-{conformance_seed}-{suffix[0]}-{time.monotonic_ns()}"[-254:]
        context = CaseContext(
            case_context.info, case_context.target, case_context.timeout_s, dialect=case_context.dialect
        )
        try:
            wire = context.connect("unusual client")
            client_id, _ = register(wire, name)
            session = Session(wire, client_id, name, send_key(wire, client_id, name))
            encryptor = CbcEncryptor(session.aes_key)
            content = encryptor.update(data) + encryptor.finalize()
            framer = wire.content_framer(
                client_id, {"content_size": len(content), "file_name": file_name}, len(data)
            )
            frame = framer(b"") + framer(content)
            start = 0
            for cut in [*cuts, len(frame)]:
                wire.send_bytes(frame[start : start + cut], f"bytes {start}.. of a 1103 of {len(data)} bytes")
                start += cut
                if start >= len(frame):
                    break
            if start < len(frame):
                wire.send_bytes(frame[start:], f"bytes {start}.. of a 1103")
            reply = wire.expect(FileReceived, client_id=client_id)
            check_file_received(session, reply, file_name, len(data), gnu_cksum([data]), data)
            confirm(session, file_name)
        finally:
            context.close()

    run_as_server_checks(run)
    probe(case_context, after="the unusual clients")
