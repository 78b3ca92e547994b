"""The reference server over real TCP: registration, keys, files, CRC verdicts, reconnects."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers.client import TestClient
from helpers.db import client_row, file_rows
from helpers.keys import rsa_key
from helpers.server_process import ServerProcess

from backupproto.cksum import Cksum
from backupproto.crypto import public_key_der
from backupproto.events import (
    Acknowledged,
    AesKey,
    ConnectionClosed,
    FileReceived,
    ReconnectApproved,
    ReconnectDenied,
    Registered,
    RegistrationFailed,
    SendPublicKey,
    ServerError,
)


def gnu_cksum(path: Path) -> int:
    """The CRC printed by the real `cksum` binary."""
    out = subprocess.run(["cksum", str(path)], capture_output=True, check=True, text=True, timeout=60)
    return int(out.stdout.split()[0])


def stored_path(server: ServerProcess, client_id: bytes, file_name: str) -> Path:
    path_name, _ = file_rows(server.data_dir, client_id)[file_name]
    return server.data_dir / path_name


def test_register_then_key_exchange(reference_server: ServerProcess) -> None:
    key = rsa_key()
    with TestClient(reference_server.address) as client:
        response = client.register("alice")
        assert isinstance(response, Registered)
        assert response.client_id != bytes(16)
        name, public_key, last_seen, aes_key = client_row(reference_server.data_dir, response.client_id) or ()
        assert (name, public_key, aes_key) == ("alice", None, None)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", last_seen)

        response = client.send_public_key("alice", key)
        assert isinstance(response, AesKey)
        assert len(response.encrypted_aes_key) == 128
        row = client_row(reference_server.data_dir, client.client_id)
        assert row is not None
        assert row[1] == public_key_der(key).ljust(160, b"\0")
        assert row[3] == client.aes_key and len(row[3]) == 16


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1 << 20])
def test_file_sizes_stored_and_crc(shared_reference_server: ServerProcess, size: int) -> None:
    server = shared_reference_server
    data = bytes((index * 7 + size) % 251 for index in range(size))
    with TestClient(server.address) as client:
        client_id = client.new_client(f"sizes-{size}", rsa_key())
        received = client.send_file("file.bin", data)
        assert isinstance(received, FileReceived)
        assert (received.client_id, received.file_name) == (client_id, "file.bin")
        assert received.content_size == (size // 16 + 1) * 16
        path = stored_path(server, client_id, "file.bin")
        assert path.read_bytes() == data
        assert received.cksum == gnu_cksum(path) == Cksum(data).value
        assert file_rows(server.data_dir, client_id)["file.bin"][1] == 0
        assert isinstance(client.crc_ok("file.bin"), Acknowledged)
        assert file_rows(server.data_dir, client_id)["file.bin"] == (f"{client_id.hex()}/file.bin", 1)
        assert path.parent.name == client_id.hex()


def test_several_files_on_one_connection(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as client:
        client_id = client.new_client("several", rsa_key())
        for index in range(5):
            client.backup(f"part {index}.txt", b"x" * index * 100)
        assert {name: verified for name, (_, verified) in file_rows(server.data_dir, client_id).items()} == {
            f"part {index}.txt": 1 for index in range(5)
        }


@pytest.mark.slow
def test_64_mib_file(reference_server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    with source.open("wb") as stream:
        for index in range(64):
            stream.write(bytes([index]) * (1 << 20))
    with TestClient(reference_server.address, timeout=120) as client:
        client_id = client.new_client("big", rsa_key())
        received = client.send_file("big.bin", source)
        assert isinstance(received, FileReceived)
        assert received.cksum == gnu_cksum(source)
        assert stored_path(reference_server, client_id, "big.bin").stat().st_size == 64 << 20


def test_crc_retry_replaces_the_file(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as client:
        client_id = client.new_client("retry", rsa_key())
        first = client.send_file("doc.txt", b"first version")
        assert isinstance(first, FileReceived)
        client.crc_retry("doc.txt")  # 1105 has no response: the 1103 follows directly
        second = client.send_file("doc.txt", b"second version, longer")
        assert isinstance(second, FileReceived)
        assert second.cksum == Cksum(b"second version, longer").value
        assert stored_path(server, client_id, "doc.txt").read_bytes() == b"second version, longer"
        assert file_rows(server.data_dir, client_id)["doc.txt"][1] == 0
        assert isinstance(client.crc_ok("doc.txt"), Acknowledged)
        assert file_rows(server.data_dir, client_id)["doc.txt"][1] == 1


def test_give_up_keeps_the_file_unverified(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as client:
        client_id = client.new_client("give-up", rsa_key())
        for attempt in range(3):
            assert isinstance(client.send_file("g.txt", b"attempt %d" % attempt), FileReceived)
            if attempt < 2:
                client.crc_retry("g.txt")
        assert isinstance(client.crc_give_up("g.txt"), Acknowledged)
        assert file_rows(server.data_dir, client_id)["g.txt"][1] == 0
        assert stored_path(server, client_id, "g.txt").read_bytes() == b"attempt 2"
        client.backup("next.txt", b"the connection goes on")  # KEYED again after 2104


def test_new_version_resets_verified(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as client:
        client_id = client.new_client("versions", rsa_key())
        client.backup("v.txt", b"one")
        assert isinstance(client.send_file("v.txt", b"two"), FileReceived)
        assert file_rows(server.data_dir, client_id)["v.txt"][1] == 0


def test_reconnect_gets_a_fresh_aes_key(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    key = rsa_key()
    with TestClient(server.address) as first:
        client_id = first.new_client("bob", key)
        first.backup("a.txt", b"before")
        first_key = first.aes_key
    with TestClient(server.address) as second:
        second.client_id = client_id
        response = second.reconnect("bob", key)
        assert isinstance(response, ReconnectApproved)
        assert response.client_id == client_id
        assert second.aes_key is not None and second.aes_key != first_key
        assert client_row(server.data_dir, client_id)[3] == second.aes_key  # type: ignore[index]
        second.backup("b.txt", b"after")
    assert set(file_rows(server.data_dir, client_id)) == {"a.txt", "b.txt"}


@pytest.mark.parametrize("case", ["unknown id", "wrong name", "no public key"])
def test_reconnect_denied_keeps_connection(shared_reference_server: ServerProcess, case: str) -> None:
    server = shared_reference_server
    key = rsa_key()
    with TestClient(server.address) as setup:
        assert isinstance(setup.register(f"carol-{case}"), Registered)
        if case != "no public key":
            assert isinstance(setup.send_public_key(f"carol-{case}", key), AesKey)
        known_id = setup.client_id
    with TestClient(server.address) as client:
        client.client_id = bytes(range(16)) if case == "unknown id" else known_id
        name = "somebody else" if case == "wrong name" else f"carol-{case}"
        response = client.reconnect(name, key)
        assert response == ReconnectDenied(client.client_id)
        # the connection stays open in CONNECTED: the client registers anew (spec 8.4)
        assert isinstance(client.register(f"carol-{case}-new"), Registered)
        assert isinstance(client.send_public_key(f"carol-{case}-new", key), AesKey)


def test_duplicate_name_gets_2101_and_connection_stays_usable(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as first:
        assert isinstance(first.register("dave"), Registered)
    with TestClient(server.address) as second:
        assert second.register("dave") == RegistrationFailed()
        assert isinstance(second.register("Dave"), Registered)  # names are case-sensitive
        assert isinstance(second.send_public_key("Dave", rsa_key()), AesKey)
        second.backup("x", b"y")


def test_public_key_is_set_once(shared_reference_server: ServerProcess) -> None:
    server = shared_reference_server
    with TestClient(server.address) as first:
        client_id = first.new_client("erin", rsa_key())
    stored = client_row(server.data_dir, client_id)
    with TestClient(server.address) as second:
        second.client_id = client_id
        assert second.request(SendPublicKey(client_id, "erin", public_key_der(rsa_key(1)))) == ServerError()
        assert isinstance(second.receive(), ConnectionClosed)
    assert client_row(server.data_dir, client_id)[1] == stored[1]  # type: ignore[index]


def test_key_sent_on_a_later_connection(shared_reference_server: ServerProcess) -> None:
    """1101 in CONNECTED: a client registered earlier whose key never arrived (spec 4.2)."""
    server = shared_reference_server
    with TestClient(server.address) as first:
        assert isinstance(first.register("frank"), Registered)
        client_id = first.client_id
    with TestClient(server.address) as second:
        second.client_id = client_id
        assert isinstance(second.send_public_key("frank", rsa_key()), AesKey)
        second.backup("f", b"data")


def test_each_request_is_logged(reference_server: ServerProcess) -> None:
    with TestClient(reference_server.address) as client:
        client_id = client.new_client("logged", rsa_key())
        client.backup("l.txt", b"log me")
    reference_server.stop()
    log = reference_server.log()
    for code in ("1100 REGISTER", "1101 SEND_PUBLIC_KEY", "1103 SEND_FILE", "1104 CRC_OK"):
        assert re.search(rf"INFO .*{code}.*->", log), code
    assert client_id.hex() in log
