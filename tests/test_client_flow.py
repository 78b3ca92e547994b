"""reference_client.BackupClient against fake servers (tests/fake_servers.py): every failure the
protocol knows, over real TCP on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from fake_servers import (
    CorruptCrcServer,
    DenyReconnectServer,
    ErrorServer,
    FakeClient,
    FakeServer,
    FlakyServer,
    HangUpServer,
    SilentServer,
)

from backupproto.client_timing import response_timeout
from backupproto.crypto import encrypted_size, generate_private_key
from reference_client import BackupClient, ConfigError, FatalError, FileStatus
from reference_client.config import Identity, read_identity, write_identity

REGISTER, SEND_KEY, RECONNECT, SEND_FILE, CRC_OK, CRC_RETRY, CRC_GIVE_UP = range(1100, 1107)


class Recorder:
    """A Reporter that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress: list[tuple[int, float]] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str) -> None:
        self.lines.append(text)

    def file_started(self, name: str, total: int, now: float) -> None:
        self.lines.append(f"start {name} {total}")

    def file_progress(self, done: int, now: float) -> None:
        self.progress.append((done, now))

    def file_finished(self, now: float) -> None:
        pass

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in self.lines)


def make_client(
    server: FakeServer, folder: Path, recorder: Recorder | None = None, **options: object
) -> BackupClient:
    settings: dict[str, object] = {"retry_delay": 0.0, "connect_timeout": 2.0, "read_timeout": 5.0}
    settings.update(options)
    return BackupClient(server.address, "alice", folder, reporter=recorder, **settings)  # type: ignore[arg-type]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 100 + b"tail")
    return path


def gnu_cksum(path: Path) -> int:
    output = subprocess.run(["cksum", str(path)], capture_output=True, text=True, check=True).stdout
    return int(output.split()[0])


def test_first_run_registers_second_reconnects(tmp_path: Path, data: Path) -> None:
    with FakeServer() as server:
        result = make_client(server, tmp_path).backup(data)
        assert result.status is FileStatus.VERIFIED
        assert server.codes(1) == [REGISTER, SEND_KEY, SEND_FILE, CRC_OK]
        me_info = (tmp_path / "me.info").read_bytes()
        identity = read_identity(tmp_path / "me.info")
        assert list(server.clients) == [identity.client_id]

        result = make_client(server, tmp_path).backup(data)
        assert result.ok
        assert server.codes(2) == [RECONNECT, SEND_FILE, CRC_OK]
        assert (tmp_path / "me.info").read_bytes() == me_info
        stored = server.files[(identity.client_id, "data.bin")]
        assert (stored.content, stored.verified) == (data.read_bytes(), True)
        assert result.crc == stored.crc == gnu_cksum(data)


def test_several_files_on_one_connection(tmp_path: Path) -> None:
    paths = []
    for index, size in enumerate([0, 1, 16, 17, 5000]):
        path = tmp_path / f"f{index}"
        path.write_bytes(bytes([index]) * size)
        paths.append(path)
    recorder = Recorder()
    with FakeServer() as server:
        results = make_client(server, tmp_path, recorder).backup_many(paths)
        assert [r.status for r in results] == [FileStatus.VERIFIED] * 5
        assert server.connections == 1
        assert server.codes() == [REGISTER, SEND_KEY] + [SEND_FILE, CRC_OK] * 5
        client_id = read_identity(tmp_path / "me.info").client_id
        for path in paths:
            assert server.files[(client_id, path.name)].content == path.read_bytes()
    assert recorder.count("start f4 5000") == 1


def test_corrupted_crc_sends_three_times_then_gives_up(tmp_path: Path, data: Path) -> None:
    recorder = Recorder()
    with CorruptCrcServer() as server:
        result = make_client(server, tmp_path, recorder).backup(data)
        assert server.codes() == [
            REGISTER,
            SEND_KEY,
            SEND_FILE,
            CRC_RETRY,
            SEND_FILE,
            CRC_RETRY,
            SEND_FILE,
            CRC_GIVE_UP,
        ]
        assert server.connections == 1
        stored = next(iter(server.files.values()))
        assert stored.verified is False
    assert result.status is FileStatus.CRC_MISMATCH
    assert result.sends == 3 and not result.ok
    assert result.crc == gnu_cksum(data)
    assert result.server_crc == result.crc ^ 0x5A5A5A5A
    assert recorder.count("data.bin: CRC mismatch") == 3
    assert "giving up after 3 sends (1106)" in recorder.lines[-2]


def test_crc_failure_of_one_file_does_not_stop_the_others(tmp_path: Path, data: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_bytes(b"other")

    class CorruptFirstFile(FakeServer):
        def cksum_for(self, real: int) -> int:
            return real + 1 if len(self.files) == 1 else real

    with CorruptFirstFile() as server:
        results = make_client(server, tmp_path).backup_many([data, other])
    assert [r.status for r in results] == [FileStatus.CRC_MISMATCH, FileStatus.VERIFIED]
    assert server.codes()[-2:] == [SEND_FILE, CRC_OK]


def test_error_responses_retry_three_times_then_fatal(tmp_path: Path, data: Path) -> None:
    recorder = Recorder()
    with ErrorServer() as server:
        with pytest.raises(FatalError) as caught:
            make_client(server, tmp_path, recorder).backup(data)
        assert server.connections == 4
        assert server.codes() == [REGISTER] * 4
    assert recorder.count("server responded with an error") == 4
    assert recorder.count("retrying (") == 3
    message = str(caught.value)
    assert "2107" in message and "on all 4 attempts" in message and "registering as 'alice'" in message
    # 2107 to the first request of every connection: a 2023C server would answer 1100 so
    assert "which a 2023C server does not know" in message and "run with --dialect 2023C" in message
    assert "otherwise check the server's log" in message
    assert not (tmp_path / "me.info").exists()


def test_retry_delay_doubles(tmp_path: Path, data: Path) -> None:
    sleeps: list[float] = []
    with ErrorServer() as server, pytest.raises(FatalError):
        make_client(server, tmp_path, retry_delay=0.5, sleep=sleeps.append).backup(data)
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_transient_error_is_recovered_on_a_new_connection(tmp_path: Path, data: Path) -> None:
    recorder = Recorder()
    with FlakyServer(failures=2) as server:
        result = make_client(server, tmp_path, recorder).backup(data)
        assert result.ok
        assert server.connections == 3
        assert server.codes(3) == [REGISTER, SEND_KEY, SEND_FILE, CRC_OK]
    assert recorder.count("server responded with an error") == 2


def test_error_after_registration_completes_it_with_the_saved_key(tmp_path: Path, data: Path) -> None:
    class FailFirstKey(FakeServer):
        failed = False

        def on_public_key(self, request, conn):  # type: ignore[no-untyped-def]
            if not self.failed:
                self.failed = True
                from backupproto.events import ServerError

                return ServerError()
            return super().on_public_key(request, conn)

    with FailFirstKey() as server:
        result = make_client(server, tmp_path).backup(data)
        assert result.ok
        assert server.codes(1) == [REGISTER, SEND_KEY]
        # me.info names a client without a key: 1102 is denied, 1100 finds the name taken (by us),
        # and the saved key completes the registration
        assert server.codes(2) == [RECONNECT, REGISTER, SEND_KEY, SEND_FILE, CRC_OK]
        assert len(server.clients) == 1


def test_reconnect_denied_registers_anew(tmp_path: Path, data: Path) -> None:
    old = Identity("alice", bytes.fromhex("11" * 16), generate_private_key())
    write_identity(tmp_path, old)
    recorder = Recorder()
    with DenyReconnectServer() as server:  # it has never heard of this client
        result = make_client(server, tmp_path, recorder).backup(data)
        assert result.ok
        # 2106, then a new registration on the same connection
        assert server.codes(1) == [RECONNECT, REGISTER, SEND_KEY, SEND_FILE, CRC_OK]
    new = read_identity(tmp_path / "me.info")
    assert new.client_id != old.client_id and new.private_key != old.private_key
    assert (tmp_path / "priv.key").read_text().strip() == (tmp_path / "me.info").read_text().splitlines()[2]
    assert recorder.count("server responded with an error") == 0  # 2106 is not an error
    assert any("2106" in line for line in recorder.lines)


def test_reconnect_denied_and_name_taken_is_fatal(tmp_path: Path, data: Path) -> None:
    old = Identity("alice", bytes.fromhex("11" * 16), generate_private_key())
    write_identity(tmp_path, old)
    with FakeServer() as server:
        server.clients[bytes.fromhex("22" * 16)] = FakeClient("alice", generate_private_key().public_key())
        with pytest.raises(FatalError) as caught:
            make_client(server, tmp_path).backup(data)
        # 2106, 2101, and the saved key offered for the taken name is refused (2107)
        assert server.codes() == [RECONNECT, REGISTER, SEND_KEY]
    message = str(caught.value)
    assert "2106" in message and "2101" in message
    assert "Pick another client name in line 2 of transfer.info" in message
    assert read_identity(tmp_path / "me.info").client_id == old.client_id  # nothing lost


def test_name_taken_at_first_registration_is_fatal(tmp_path: Path, data: Path) -> None:
    with FakeServer() as server:
        server.clients[bytes(range(16))] = FakeClient("alice")
        with pytest.raises(FatalError, match=r"'alice' is already registered .* \(2101"):
            make_client(server, tmp_path).backup(data)
        assert server.codes() == [REGISTER]
    assert not (tmp_path / "me.info").exists()


def test_hang_up_without_answer_is_retried_then_fatal(tmp_path: Path, data: Path) -> None:
    recorder = Recorder()
    with HangUpServer() as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, recorder).backup(data)
    assert server.connections == 4
    assert "closed the connection" in str(caught.value)
    assert recorder.count("server responded with an error") == 4


def test_response_timeout_is_fatal_without_a_retry(tmp_path: Path, data: Path) -> None:
    """Spec 8.4: a server that took the request and stayed silent for the response timeout is
    not asked again: one connection, the error line, then Fatal naming the timeout."""
    recorder = Recorder()
    sleeps: list[float] = []
    with SilentServer() as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, recorder, read_timeout=0.2, retries=3, sleep=sleeps.append).backup(data)
    message = str(caught.value)
    assert "no response from" in message and "within 0.2 s (response timeout)" in message
    assert "(attempt 1, while registering as 'alice'" in message
    assert "a response timeout is not retried" in message
    assert server.connections == 1
    assert sleeps == []
    assert recorder.count("server responded with an error: no response from") == 1
    assert recorder.count("retrying (") == 0


def test_response_timeout_of_a_file_grows_with_its_size() -> None:
    """Spec 2.4: base + ceil(content_size / 20 MiB) seconds; other requests wait the base."""
    assert response_timeout() == 15.0
    assert response_timeout(0, 2.0) == 2.0
    assert response_timeout(1, 2.0) == 3.0
    assert response_timeout(20 * 1024 * 1024, 15.0) == 16.0
    assert response_timeout(20 * 1024 * 1024 + 1, 15.0) == 17.0
    assert response_timeout(4294967280) == 15.0 + 205


def test_unreachable_server(tmp_path: Path, data: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        client = BackupClient(("127.0.0.1", port), "alice", tmp_path, retry_delay=0)
        with pytest.raises(FatalError) as caught:
            client.backup(data)
    message = str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port}" in message and "refused" in message
    assert "failed 4 times" in message and "Check that the server is running" in message


def test_file_too_large_is_refused_before_sending(tmp_path: Path, data: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 10)
    with FakeServer() as server:
        limit = encrypted_size(data.stat().st_size) - 16
        results = make_client(server, tmp_path, max_content_size=limit).backup_many([data, small])
        assert server.codes() == [REGISTER, SEND_KEY, SEND_FILE, CRC_OK]  # only small.txt was sent
    assert [r.status for r in results] == [FileStatus.TOO_LARGE, FileStatus.VERIFIED]
    assert "not sent" in results[0].detail


def test_file_over_the_protocol_limit_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as stream:  # sparse: no disk used
        stream.truncate(4294967024)  # one byte more than the largest plaintext a 1103 carries
    with FakeServer() as server:
        result = make_client(server, tmp_path).backup(huge)
        assert SEND_FILE not in server.codes()
    assert result.status is FileStatus.TOO_LARGE
    assert "4294967023 bytes (the protocol's limit)" in result.detail


def test_server_refusing_a_large_upload_midway_is_reported_as_2107(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01" * (8 << 20))
    recorder = Recorder()
    with FakeServer(max_content_size=1 << 20) as server, pytest.raises(FatalError) as caught:
        make_client(server, tmp_path, recorder, retries=1).backup(big)
    assert "2107" in str(caught.value)
    assert recorder.count("server responded with an error: the server answered 2107") == 2


def test_missing_file_is_a_config_error_before_connecting(tmp_path: Path) -> None:
    with FakeServer() as server:
        with pytest.raises(ConfigError, match="file not found"):
            make_client(server, tmp_path).backup(tmp_path / "nope")
        assert server.connections == 0


def test_bad_me_info_is_a_config_error_before_connecting(tmp_path: Path, data: Path) -> None:
    (tmp_path / "me.info").write_text("alice\nxyz\nAAAA\n")
    with FakeServer() as server:
        with pytest.raises(ConfigError) as caught:
            make_client(server, tmp_path).backup(data)
        assert server.connections == 0
    assert (caught.value.line, caught.value.path.name) == (2, "me.info")


def test_missing_priv_key_is_restored_from_me_info(tmp_path: Path, data: Path) -> None:
    with FakeServer() as server:
        make_client(server, tmp_path).backup(data)
        key_text = (tmp_path / "priv.key").read_text()
        (tmp_path / "priv.key").unlink()
        recorder = Recorder()
        assert make_client(server, tmp_path, recorder).backup(data).ok
    assert (tmp_path / "priv.key").read_text() == key_text
    assert recorder.count(f"{tmp_path / 'priv.key'} was missing") == 1


def test_progress_is_fed_with_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "three-chunks.bin"
    path.write_bytes(b"z" * 2500)
    ticks = iter(range(100))
    recorder = Recorder()
    with FakeServer() as server:
        make_client(server, tmp_path, recorder, chunk_size=1000, clock=lambda: float(next(ticks))).backup(
            path
        )
    assert [done for done, _ in recorder.progress] == [1000, 2000, 2500]
    times = [now for _, now in recorder.progress]
    assert times == sorted(times) and len(set(times)) == 3


def test_file_that_changes_while_read_is_resent(tmp_path: Path) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"a" * 3000)

    class Growing(Recorder):
        def file_progress(self, done: int, now: float) -> None:
            super().file_progress(done, now)
            if len(self.progress) == 1:  # the first send sees the file grow under it
                with path.open("ab") as stream:
                    stream.write(b"more")

    recorder = Growing()
    with FakeServer() as server:
        result = make_client(server, tmp_path, recorder, chunk_size=1000).backup(path)
        client_id = read_identity(tmp_path / "me.info").client_id
        stored = server.files[(client_id, "growing.log")]
    assert server.codes()[2:] == [SEND_FILE, CRC_RETRY, SEND_FILE, CRC_OK]
    assert result.ok and result.sends == 2
    assert stored.content == b"a" * 3000 + b"more"
    assert recorder.count("growing.log: the file changed while it was read") == 1


def test_state_folder_that_cannot_hold_me_info_is_refused_before_connecting(
    tmp_path: Path, data: Path
) -> None:
    with FakeServer() as server:
        with pytest.raises(ConfigError, match=r"not a writable folder; me\.info must be saved here"):
            make_client(server, tmp_path / "no-such-folder").backup(data)
        assert server.connections == 0
