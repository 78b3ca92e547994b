"""Two uploads of one file name at once: Verified=1 only ever on the bytes a 1104 confirmed (spec 9.2).

The server runs in this process so that the rename of the first upload can be held back
(bounded) while the second upload completes: the interleaving that once marked the first
upload's bytes Verified on the second connection's 1104.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from helpers.client import TestClient
from helpers.db import file_rows
from helpers.keys import rsa_key

import reference_server.files
from backupproto.events import Acknowledged, FileReceived, ReconnectApproved
from reference_server import Server

HOLD_SECONDS = 2.0
"""How long the first rename waits for the second upload's 2103 (a bound, not a timing assert)."""


def stored(server: Server, client_id: bytes, file_name: str) -> tuple[bytes, int]:
    path_name, verified = file_rows(server.data_dir, client_id)[file_name]
    return (server.data_dir / path_name).read_bytes(), verified


def test_rename_order_cannot_differ_from_version_order(
    in_process_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First upload's rename held back until the second upload answered 2103 (or a bound passed):
    the second connection's 1104 may verify only the second connection's bytes."""
    server = in_process_server
    key = rsa_key()
    first_renaming = threading.Event()
    second_received = threading.Event()
    real_replace = os.replace
    calls = 0

    def held_replace(source: Any, target: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_renaming.set()
            second_received.wait(HOLD_SECONDS)
        real_replace(source, target)

    with TestClient(server.address) as setup:
        client_id = setup.new_client("racer", key)
    monkeypatch.setattr(reference_server.files.os, "replace", held_replace)
    first, second = TestClient(server.address), TestClient(server.address)
    with first, second:
        for connection in (first, second):
            connection.client_id = client_id
            assert isinstance(connection.reconnect("racer", key), ReconnectApproved)
        first_answer: list[object] = []
        first_upload = threading.Thread(
            target=lambda: first_answer.append(first.send_file("same.bin", b"A" * 1000)), daemon=True
        )
        first_upload.start()
        assert first_renaming.wait(10)
        assert isinstance(second.send_file("same.bin", b"B" * 1000), FileReceived)
        second_received.set()
        first_upload.join(10)
        assert isinstance(first_answer[0], FileReceived)
        assert isinstance(second.crc_ok("same.bin"), Acknowledged)
    data, verified = stored(server, client_id, "same.bin")
    assert not (verified and data != b"B" * 1000), "Verified=1 on bytes no 1104 confirmed"


@pytest.mark.parametrize(
    "rounds", [pytest.param(20, id="20-rounds"), pytest.param(2000, id="2000-rounds", marks=pytest.mark.slow)]
)
def test_racing_uploads_never_verify_unconfirmed_bytes(in_process_server: Server, rounds: int) -> None:
    """Two connections upload one name at once; only the second confirms. Bounded rounds."""
    server = in_process_server
    key = rsa_key()
    with TestClient(server.address) as setup:
        client_id = setup.new_client("crowd", key)
    for round_number in range(rounds):
        contents = [bytes([65 + round_number % 26]) * 700, bytes([97 + round_number % 26]) * 900]
        data, verified = race_once(server, client_id, key, contents)
        assert not (verified and data != contents[1]), f"round {round_number}: unconfirmed bytes verified"


def race_once(server: Server, client_id: bytes, key: Any, contents: list[bytes]) -> tuple[bytes, int]:
    """Both connections upload `race.bin` at once; the second confirms with 1104."""
    connections = [TestClient(server.address), TestClient(server.address)]
    try:
        for connection in connections:
            connection.client_id = client_id
            assert isinstance(connection.reconnect("crowd", key), ReconnectApproved)
        start = threading.Barrier(2, timeout=10)
        answers: list[object] = [None, None]

        def upload(index: int) -> None:
            start.wait()
            answers[index] = connections[index].send_file("race.bin", contents[index])

        threads = [threading.Thread(target=upload, args=(index,), daemon=True) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert all(isinstance(answer, FileReceived) for answer in answers), answers
        connections[1].crc_ok("race.bin")
    finally:
        for connection in connections:
            connection.close()
    return stored(server, client_id, "race.bin")
