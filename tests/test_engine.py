"""Sans-I/O engine (spec section 8): every state x every message, whole and byte by byte."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupproto.dialect import RequestCode, ResponseCode
from backupproto.engine import ClientConnection, ServerConnection
from backupproto.errors import ErrorKind, LocalProtocolError, RemoteProtocolError
from backupproto.events import (
    NEED_DATA,
    PAUSED,
    Acknowledged,
    AesKey,
    ConnectionClosed,
    CrcGiveUp,
    CrcOk,
    CrcRetry,
    Event,
    FileChunk,
    FileEnd,
    FileReceived,
    Reconnect,
    ReconnectApproved,
    ReconnectDenied,
    Register,
    Registered,
    RegistrationFailed,
    Request,
    Response,
    SendFile,
    SendPublicKey,
    ServerError,
)
from backupproto.schemas import V3_SCHEMAS as S
from backupproto.states import State

CID = bytes(range(16))
KEY_DER = bytes.fromhex("3003020101")
FILE = "f.bin"

# Spec 8.2, written out independently of backupproto.states.
EXPECTED_ALLOWED = {
    State.CONNECTED: {RequestCode.REGISTER, RequestCode.RECONNECT, RequestCode.SEND_PUBLIC_KEY},
    State.REGISTERED: {RequestCode.SEND_PUBLIC_KEY},
    State.KEYED: {RequestCode.SEND_FILE},
    State.VERIFYING: {RequestCode.CRC_OK, RequestCode.CRC_RETRY, RequestCode.CRC_GIVE_UP},
    State.RESENDING: {RequestCode.SEND_FILE},
}
# Spec 8.3: (request, response) -> next state; 2107 answers anything and closes.
EXPECTED_ANSWERS = {
    (RequestCode.REGISTER, ResponseCode.REGISTERED): State.REGISTERED,
    (RequestCode.REGISTER, ResponseCode.REGISTRATION_FAILED): State.CONNECTED,
    (RequestCode.SEND_PUBLIC_KEY, ResponseCode.AES_KEY): State.KEYED,
    (RequestCode.RECONNECT, ResponseCode.RECONNECT_APPROVED): State.KEYED,
    (RequestCode.RECONNECT, ResponseCode.RECONNECT_DENIED): State.CONNECTED,
    (RequestCode.SEND_FILE, ResponseCode.FILE_RECEIVED): State.VERIFYING,
    (RequestCode.CRC_OK, ResponseCode.ACKNOWLEDGED): State.KEYED,
    (RequestCode.CRC_GIVE_UP, ResponseCode.ACKNOWLEDGED): State.KEYED,
}


def sample_request(code: RequestCode) -> Request:
    return {
        RequestCode.REGISTER: Register(CID, "alice"),
        RequestCode.SEND_PUBLIC_KEY: SendPublicKey(CID, "alice", KEY_DER),
        RequestCode.RECONNECT: Reconnect(CID, "alice"),
        RequestCode.SEND_FILE: SendFile(CID, 32, FILE),
        RequestCode.CRC_OK: CrcOk(CID, FILE),
        RequestCode.CRC_RETRY: CrcRetry(CID, FILE),
        RequestCode.CRC_GIVE_UP: CrcGiveUp(CID, FILE),
    }[code]


def sample_response(code: ResponseCode) -> Response:
    return {
        ResponseCode.REGISTERED: Registered(CID),
        ResponseCode.REGISTRATION_FAILED: RegistrationFailed(),
        ResponseCode.AES_KEY: AesKey(CID, b"k" * 128),
        ResponseCode.FILE_RECEIVED: FileReceived(CID, 32, FILE, 7),
        ResponseCode.ACKNOWLEDGED: Acknowledged(CID),
        ResponseCode.RECONNECT_APPROVED: ReconnectApproved(CID, b"k" * 128),
        ResponseCode.RECONNECT_DENIED: ReconnectDenied(CID),
        ResponseCode.SERVER_ERROR: ServerError(),
    }[code]


def padded(text: str) -> bytes:
    """A 255-byte name field, written out by hand."""
    return text.encode("ascii") + bytes(255 - len(text))


# Spec 3-4, written out by hand: header (client_id, version 3, code, payload_size) and payload.
HAND_WRITTEN_REQUESTS = {
    RequestCode.REGISTER: CID + bytes.fromhex("03 4c04 ff000000") + padded("alice"),
    RequestCode.SEND_PUBLIC_KEY: CID
    + bytes.fromhex("03 4d04 9f010000")
    + padded("alice")
    + KEY_DER
    + bytes(155),
    RequestCode.RECONNECT: CID + bytes.fromhex("03 4e04 ff000000") + padded("alice"),
    RequestCode.SEND_FILE: CID + bytes.fromhex("03 4f04 23010000 20000000") + padded(FILE) + bytes(32),
    RequestCode.CRC_OK: CID + bytes.fromhex("03 5004 ff000000") + padded(FILE),
    RequestCode.CRC_RETRY: CID + bytes.fromhex("03 5104 ff000000") + padded(FILE),
    RequestCode.CRC_GIVE_UP: CID + bytes.fromhex("03 5204 ff000000") + padded(FILE),
}


def request_bytes(request: Request) -> bytes:
    fields = {k: v for k, v in vars(request).items() if k != "client_id"}
    if isinstance(request, SendFile):
        fields["content"] = bytes(request.content_size)
    return S.build_request(request.code, request.client_id, fields)


# The path to each state: (request, response or None) pairs.
PATHS: dict[State, list[tuple[Request, Response | None]]] = {
    State.CONNECTED: [],
    State.REGISTERED: [(Register(CID, "alice"), Registered(CID))],
    State.KEYED: [(Reconnect(CID, "alice"), ReconnectApproved(CID, b"k" * 128))],
}
PATHS[State.VERIFYING] = [*PATHS[State.KEYED], (SendFile(CID, 32, FILE), FileReceived(CID, 32, FILE, 7))]
PATHS[State.RESENDING] = [*PATHS[State.VERIFYING], (CrcRetry(CID, FILE), None)]


def drain(conn: ServerConnection | ClientConnection) -> list[Event]:
    """Every event available now (until NEED_DATA, PAUSED or the end); bounded."""
    events: list[Event] = []
    for _ in range(100_000):
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
    raise AssertionError("no end of events")


def feed(conn: ServerConnection | ClientConnection, data: bytes, one_byte_at_a_time: bool) -> list[Event]:
    if not one_byte_at_a_time:
        conn.receive_data(data)
        return drain(conn)
    events: list[Event] = []
    for index in range(len(data)):
        conn.receive_data(data[index : index + 1])
        events += drain(conn)
    return events


def server_in(state: State) -> ServerConnection:
    server = ServerConnection()
    for request, response in PATHS[state]:
        feed(server, request_bytes(request), False)
        if response is not None:
            server.send(response)
    assert server.state is state
    return server


def client_in(state: State) -> ClientConnection:
    client = ClientConnection()
    for request, response in PATHS[state]:
        client.send(request)
        if isinstance(request, SendFile):
            client.send(FileChunk(bytes(request.content_size)))
            client.send(FileEnd())
        if response is not None:
            feed(client, S.build_response(response.code, vars(response)), False)
    assert client.state is state
    return client


STATES = list(EXPECTED_ALLOWED)


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("state", "code"), list(itertools.product(STATES, RequestCode)))
def test_server_state_x_request(state: State, code: RequestCode, byte_by_byte: bool) -> None:
    server = server_in(state)
    request = sample_request(code)
    data = request_bytes(request)
    if code in EXPECTED_ALLOWED[state]:
        events = feed(server, data, byte_by_byte)
        assert events[0] == request
        if isinstance(request, SendFile):
            assert b"".join(e.data for e in events if isinstance(e, FileChunk)) == bytes(32)
            assert isinstance(events[-1], FileEnd)
        if code is RequestCode.CRC_RETRY:
            assert server.state is State.RESENDING and server.conversation.pending is None
        else:
            assert server.conversation.pending == request
    else:
        with pytest.raises(RemoteProtocolError) as info:
            feed(server, data, byte_by_byte)
        assert info.value.kind is ErrorKind.UNEXPECTED_MESSAGE
        with pytest.raises(RemoteProtocolError):  # the error is latched
            server.next_event()
        assert server.send(ServerError()) == bytes.fromhex("033b0800000000")
        assert server.state is State.CLOSED


@pytest.mark.parametrize(("state", "code"), list(itertools.product(STATES, RequestCode)))
def test_client_state_x_request(state: State, code: RequestCode) -> None:
    client = client_in(state)
    request = sample_request(code)
    if code in EXPECTED_ALLOWED[state]:
        data = client.send(request)
        if isinstance(request, SendFile):
            data += client.send(FileChunk(bytes(32))) + client.send(FileEnd())
        assert data == HAND_WRITTEN_REQUESTS[code]
    else:
        with pytest.raises(LocalProtocolError):
            client.send(request)


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(
    ("request_code", "response_code"), list(itertools.product(RequestCode, ResponseCode))
)
def test_client_pending_x_response(
    request_code: RequestCode, response_code: ResponseCode, byte_by_byte: bool
) -> None:
    state = next(s for s in STATES if request_code in EXPECTED_ALLOWED[s])
    client = client_in(state)
    request = sample_request(request_code)
    client.send(request)
    if isinstance(request, SendFile):
        client.send(FileChunk(bytes(32)))
        client.send(FileEnd())
    response = sample_response(response_code)
    data = S.build_response(response.code, vars(response))
    expected = EXPECTED_ANSWERS.get((request_code, response_code))
    if response_code is ResponseCode.SERVER_ERROR:
        expected = State.CLOSED
    if expected is None:
        with pytest.raises(RemoteProtocolError) as info:
            feed(client, data, byte_by_byte)
        assert info.value.kind is ErrorKind.UNEXPECTED_MESSAGE
    else:
        assert feed(client, data, byte_by_byte) == [response]
        assert client.state is expected


@pytest.mark.parametrize(
    ("request_code", "response_code"), list(itertools.product(RequestCode, ResponseCode))
)
def test_server_pending_x_response(request_code: RequestCode, response_code: ResponseCode) -> None:
    state = next(s for s in STATES if request_code in EXPECTED_ALLOWED[s])
    server = server_in(state)
    feed(server, request_bytes(sample_request(request_code)), False)
    response = sample_response(response_code)
    expected = EXPECTED_ANSWERS.get((request_code, response_code))
    if response_code is ResponseCode.SERVER_ERROR:
        expected = State.CLOSED
    if expected is None:
        with pytest.raises(LocalProtocolError):
            server.send(response)
    else:
        server.send(response)
        assert server.state is expected


def test_response_must_echo_the_request() -> None:
    client = client_in(State.KEYED)
    client.send(SendFile(CID, 32, FILE))
    client.send(FileChunk(bytes(32)))
    client.send(FileEnd())
    # 2103 whose content_size is the plaintext size (a known deviation): hand-written bytes.
    wrong = bytes.fromhex("03370817010000") + CID + bytes.fromhex("1f000000")
    wrong += FILE.encode() + bytes(255 - len(FILE)) + bytes(4)
    with pytest.raises(RemoteProtocolError) as info:
        feed(client, wrong, False)
    assert (info.value.field, info.value.offset) == ("content_size", 23)


def test_other_client_id_on_a_bound_connection() -> None:
    server = server_in(State.KEYED)
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, request_bytes(SendFile(bytes(16), 32, FILE)), False)
    assert info.value.field == "client_id"


def test_verdict_must_name_the_open_file() -> None:
    server = server_in(State.VERIFYING)
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, request_bytes(CrcOk(CID, "other")), False)
    assert info.value.field == "file_name"


def test_invalid_header_is_refused_before_its_payload_arrives() -> None:
    server = ServerConnection()
    header = CID + bytes.fromhex("034c0400010000")  # 1100 with payload_size 256
    server.receive_data(header)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.kind is ErrorKind.PAYLOAD_SIZE_MISMATCH


def test_server_limit_on_content_size() -> None:
    server = ServerConnection(max_content_size=1024)
    header = CID + bytes.fromhex("034f04") + (259 + 2048).to_bytes(4, "little")
    server.receive_data(header)
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.kind is ErrorKind.PAYLOAD_TOO_LARGE


def test_truncated_stream_and_clean_close() -> None:
    server = ServerConnection()
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)
    server = server_in(State.KEYED)
    data = request_bytes(SendFile(CID, 32, FILE))
    server.receive_data(data[:-5])
    drain(server)
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.kind is ErrorKind.TRUNCATED


def test_client_sees_close_while_waiting() -> None:
    client = client_in(State.CONNECTED)
    client.send(Register(CID, "alice"))
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.kind is ErrorKind.CONNECTION_CLOSED


def test_client_content_count_is_checked() -> None:
    client = client_in(State.KEYED)
    client.send(SendFile(CID, 32, FILE))
    client.send(FileChunk(bytes(16)))
    with pytest.raises(LocalProtocolError):
        client.send(FileEnd())
    with pytest.raises(LocalProtocolError):
        client.send(FileChunk(bytes(17)))


def test_large_file_streams_in_chunks() -> None:
    server = server_in(State.KEYED)
    size = 4 * 1024 * 1024
    header = CID + bytes.fromhex("03 4f04") + (259 + size).to_bytes(4, "little")  # by hand
    server.receive_data(header + size.to_bytes(4, "little") + FILE.encode() + bytes(255 - len(FILE)))
    assert isinstance(server.next_event(), SendFile)
    largest = 0
    received = 0
    chunk = bytes(65536)
    for _ in range(size // len(chunk)):
        server.receive_data(chunk)
        for event in drain(server):
            if isinstance(event, FileChunk):
                largest = max(largest, len(event.data))
                received += len(event.data)
    assert received == size and largest == len(chunk)
    assert server.conversation.pending is not None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STATES), st.binary(max_size=600), st.booleans())
def test_server_garbage_raises_only_remote_protocol_error(state: State, data: bytes, close: bool) -> None:
    server = server_in(state)
    try:
        server.receive_data(data)
        if close:
            server.receive_data(b"")
        drain(server)
    except RemoteProtocolError:
        assert server.send(ServerError()) == bytes.fromhex("03 3b08 00000000")
        assert server.state is State.CLOSED
    else:
        assert server.state is state or server.conversation.pending is not None or close


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(RequestCode)), st.binary(max_size=400))
def test_client_garbage_raises_only_remote_protocol_error(code: RequestCode, data: bytes) -> None:
    state = next(s for s in STATES if code in EXPECTED_ALLOWED[s])
    client = client_in(state)
    request = sample_request(code)
    client.send(request)
    if isinstance(request, SendFile):
        client.send(FileChunk(bytes(32)))
        client.send(FileEnd())
    try:
        client.receive_data(data)
        client.receive_data(b"")
        drain(client)
    except RemoteProtocolError:
        pass


def test_content_is_handed_on_without_copies_and_boundaries_are_known() -> None:
    server = server_in(State.KEYED)
    assert server.at_message_boundary
    header = request_bytes(SendFile(CID, 48, FILE))[: 23 + 259]
    server.receive_data(header[:5])
    assert not server.at_message_boundary  # a header has started: stalled, not idle
    server.receive_data(header[5:])
    assert isinstance(server.next_event(), SendFile)
    assert not server.at_message_boundary  # content is due
    first = bytes(range(32))
    server.receive_data(first)
    event = server.next_event()
    assert isinstance(event, FileChunk) and event.data is first
    # the rest of the content and the start of the next request arrive together
    verdict = request_bytes(CrcOk(CID, FILE))
    server.receive_data(b"\xee" * 16 + verdict[:10])
    assert server.next_event() == FileChunk(b"\xee" * 16)
    assert isinstance(server.next_event(), FileEnd)
    server.send(FileReceived(CID, 48, FILE, 1))
    assert not server.at_message_boundary
    server.receive_data(verdict[10:])
    assert server.next_event() == CrcOk(CID, FILE)
    server.send(Acknowledged(CID))
    assert server.at_message_boundary


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(st.sampled_from(STATES), st.lists(st.binary(min_size=1, max_size=300), max_size=6), st.booleans())
def test_long_fuzz_server_raises_only_remote_protocol_error(
    state: State, pieces: list[bytes], close: bool
) -> None:
    """The long run (--run-slow): garbage in any state and in any split never escapes as another error."""
    server = server_in(state)
    try:
        for piece in pieces:
            server.receive_data(piece)
            drain(server)
        if close:
            server.receive_data(b"")
            drain(server)
    except RemoteProtocolError as error:
        assert error.kind in set(ErrorKind)
        assert server.send(ServerError()) == bytes.fromhex("033b0800000000")


# -- the engine keeps its contract (issue 9) ------------------------------------------------


def test_a_response_that_cannot_be_built_is_a_local_error_and_leaves_the_state() -> None:
    server = server_in(State.CONNECTED)
    feed(server, request_bytes(Register(CID, "alice")), False)
    with pytest.raises(LocalProtocolError) as info:
        server.send(Registered(b"short"))
    assert info.value.field == "client_id"
    assert server.state is State.CONNECTED
    assert server.conversation.pending == Register(CID, "alice")


def test_a_request_that_cannot_be_built_is_a_local_error_and_leaves_the_state() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError) as info:
        client.send(Register(b"\x01" * 17, "alice"))
    assert info.value.field == "client_id"
    assert client.state is State.CONNECTED and client.conversation.pending is None


def test_a_local_error_is_latched() -> None:
    server = server_in(State.CONNECTED)
    feed(server, request_bytes(Register(CID, "alice")), False)
    with pytest.raises(LocalProtocolError):
        server.send(AesKey(CID, b"k" * 128))  # does not answer 1100
    with pytest.raises(LocalProtocolError):
        server.send(Registered(CID))  # even a right answer: the connection is in error
    with pytest.raises(LocalProtocolError):
        server.next_event()
    # the one way out: 2107, written out by hand
    assert server.send(ServerError()) == bytes.fromhex("03 3b08 00000000")
    assert server.state is State.CLOSED
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(CrcOk(CID, FILE))
    with pytest.raises(LocalProtocolError):
        client.send(Register(CID, "alice"))


def test_waiting_for_our_own_response_is_paused_not_need_data() -> None:
    server = server_in(State.CONNECTED)
    server.receive_data(request_bytes(Register(CID, "alice")))
    assert server.next_event() == Register(CID, "alice")
    assert server.next_event() is PAUSED
    assert PAUSED is not NEED_DATA
    server.send(Registered(CID))
    assert server.next_event() is NEED_DATA


def test_bytes_piling_up_while_paused_are_bounded() -> None:
    server = ServerConnection(max_buffer_size=1000)
    server.receive_data(request_bytes(Register(CID, "alice")))
    assert server.next_event() == Register(CID, "alice")
    server.receive_data(bytes(600))
    assert server.next_event() is PAUSED
    server.receive_data(bytes(401))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.kind is ErrorKind.BUFFER_FULL
    assert "1001" in str(info.value) and "1000" in str(info.value)
    assert server.send(ServerError()) == bytes.fromhex("03 3b08 00000000")


def test_file_content_does_not_count_against_the_buffer_bound() -> None:
    server = ServerConnection(max_buffer_size=1000)
    server.receive_data(request_bytes(Reconnect(CID, "alice")))
    server.next_event()
    server.send(ReconnectApproved(CID, b"k" * 128))
    size = 64 * 1024
    header = CID + bytes.fromhex("03 4f04") + (259 + size).to_bytes(4, "little")
    prefix = size.to_bytes(4, "little") + FILE.encode() + bytes(255 - len(FILE))
    server.receive_data(header + prefix + bytes(size))  # all in one piece
    events = drain(server)
    assert events[0] == SendFile(CID, size, FILE)
    assert sum(len(e.data) for e in events if isinstance(e, FileChunk)) == size
    assert isinstance(events[-1], FileEnd)
    assert server.next_event() is PAUSED
