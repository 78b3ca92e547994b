"""reference_client.config: transfer.info / me.info / priv.key reading and writing, one-line errors
naming file and line."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from Crypto.PublicKey import RSA

from backupproto.client_files import (
    ClientFileError,
    format_me_info,
    format_private_key,
    parse_me_info,
    parse_private_key,
)
from backupproto.crypto import generate_private_key
from reference_client.config import (
    Identity,
    Server,
    load_transfer_info,
    read_identity,
    read_private_key_file,
    write_identity,
)
from reference_client.errors import ConfigError

KEY = generate_private_key()
KEY_B64 = base64.b64encode(KEY.export_key(format="DER", pkcs=8)).decode()
ID_HEX = "3f2a9c1e7b4d4e8a9c610d5e8f7a2b14"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_bytes(text.encode("latin-1"))
    return path


def test_transfer_info_three_lines(folder: Path) -> None:
    path = write(folder, "transfer.info", "127.0.0.1:1234\nalice\na.txt\n")
    info = load_transfer_info(path)
    assert info.server == Server("127.0.0.1", 1234)
    assert info.name == "alice"
    assert [item.path for item in info.files] == [folder / "a.txt"]
    assert [item.file_name for item in info.files] == ["a.txt"]


def test_transfer_info_several_files_crlf_blank_lines_and_ipv6(folder: Path) -> None:
    path = write(
        folder, "transfer.info", "  [::1]:99 \r\n alice \r\na.txt\r\n\r\n" + str(folder / "b.bin") + "\r\n"
    )
    info = load_transfer_info(path)
    assert info.server == Server("::1", 99)
    assert str(info.server) == "[::1]:99"
    assert info.name == "alice"
    assert [(item.file_name, item.line) for item in info.files] == [("a.txt", 3), ("b.bin", 5)]


def test_options_replace_lines(folder: Path) -> None:
    # transfer.info is not needed when every line is given; bad lines that are overridden do not matter
    info = load_transfer_info(
        folder / "missing.info", server="h:1", name="bob", files=[str(folder / "a.txt")]
    )
    assert (info.server, info.name, info.files[0].file_name) == (Server("h", 1), "bob", "a.txt")
    path = write(folder, "transfer.info", "nonsense\n\nnothing-here.txt\n")
    info = load_transfer_info(path, server="h:2", name="carol", files=[str(folder / "b.bin")])
    assert (info.server.port, info.name, info.files[0].file_name) == (2, "carol", "b.bin")


@pytest.mark.parametrize(
    ("line_1", "expected"),
    [("localhost", Server("localhost", 1256)), ("[::1]", Server("::1", 1256)), ("h:9", Server("h", 9))],
)
def test_a_host_alone_gets_the_dialects_default_port(folder: Path, line_1: str, expected: Server) -> None:
    path = write(folder, "transfer.info", f"{line_1}\nalice\na.txt\n")
    assert load_transfer_info(path, default_port=1256).server == expected
    assert load_transfer_info(path, server=line_1, default_port=1256).server == expected


TRANSFER_CASES = [
    # (id, transfer.info text or None for a missing file, expected line, message fragment)
    ("missing file", None, None, "file not found"),
    ("empty file", "", 1, "missing server address"),
    ("no colon", "localhost\nalice\na.txt\n", 1, "is not HOST:PORT"),
    ("port not a number", "127.0.0.1:http\nalice\na.txt\n", 1, "port 'http'"),
    ("port zero", "127.0.0.1:0\nalice\na.txt\n", 1, "from 1 to 65535"),
    ("port too big", "127.0.0.1:65536\nalice\na.txt\n", 1, "from 1 to 65535"),
    ("no host", ":1234\nalice\na.txt\n", 1, "the host before"),
    ("missing name line", "127.0.0.1:1234\n", 2, "missing client name"),
    ("empty name", "127.0.0.1:1234\n   \na.txt\n", 2, "the client name is empty"),
    (
        "name of 101 characters",
        "127.0.0.1:1234\n" + "n" * 101 + "\na.txt\n",
        2,
        "101 characters; at most 100",
    ),
    ("name with a tab", "127.0.0.1:1234\nal\tice\na.txt\n", 2, "cannot be sent"),
    ("no file line", "127.0.0.1:1234\nalice\n", 3, "no file to back up"),
    ("missing listed file", "127.0.0.1:1234\nalice\na.txt\n\nnope.txt\n", 5, "file not found"),
    ("folder listed", "127.0.0.1:1234\nalice\n.\n", 3, "not a regular file"),
    ("unsendable file name", "127.0.0.1:1234\nalice\nb:c\n", 3, "cannot be sent"),
    ("duplicate file name", "127.0.0.1:1234\nalice\na.txt\n./a.txt\n", 4, "also sent from line 3"),
    ("not ascii", "127.0.0.1:1234\nal\xe9\na.txt\n", 2, "0xe9 is not ASCII"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [case[1:] for case in TRANSFER_CASES],
                         ids=[case[0] for case in TRANSFER_CASES])  # fmt: skip
def test_transfer_info_errors_name_file_and_line(
    folder: Path, text: str | None, line: int | None, fragment: str
) -> None:
    (folder / "b:c").write_bytes(b"x")
    path = folder / "transfer.info"
    if text is not None:
        write(folder, "transfer.info", text)
    with pytest.raises(ConfigError) as caught:
        load_transfer_info(path)
    error = caught.value
    assert (error.path, error.line) == (path, line)
    assert fragment in error.message
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(error).startswith(prefix)
    assert "\n" not in str(error)


def test_name_of_100_characters_is_accepted(folder: Path) -> None:
    path = write(folder, "transfer.info", "127.0.0.1:1234\n" + "n" * 100 + "\na.txt\n")
    assert load_transfer_info(path).name == "n" * 100


def test_missing_file_given_as_argument_names_the_argument(folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"^nope\.txt: file not found"):
        load_transfer_info(folder / "transfer.info", server="h:1", name="n", files=["nope.txt"])


# --- me.info ---------------------------------------------------------------------------------


def test_me_info_round_trip_and_exact_layout(tmp_path: Path) -> None:
    client_id = bytes.fromhex(ID_HEX)
    write_identity(tmp_path, Identity("alice", client_id, KEY))
    assert (tmp_path / "me.info").read_text() == f"alice\n{ID_HEX}\n{KEY_B64}\n"
    assert (tmp_path / "priv.key").read_text() == f"{KEY_B64}\n"
    for name in ("me.info", "priv.key"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    identity = read_identity(tmp_path / "me.info")
    assert (identity.name, identity.client_id, identity.private_key) == ("alice", client_id, KEY)
    assert read_private_key_file(tmp_path / "priv.key") == KEY


def test_me_info_accepts_uppercase_id_split_base64_and_pkcs1(tmp_path: Path) -> None:
    pkcs1 = base64.b64encode(KEY.export_key(format="DER", pkcs=1)).decode()
    wrapped = "\n".join(pkcs1[i : i + 64] for i in range(0, len(pkcs1), 64))
    path = write(tmp_path, "me.info", f"alice\r\n{ID_HEX.upper()}\r\n{wrapped}\r\n")
    identity = read_identity(path)
    assert identity.client_id.hex() == ID_HEX
    assert identity.private_key == KEY


def test_priv_key_accepts_pem(tmp_path: Path) -> None:
    path = tmp_path / "priv.key"
    path.write_bytes(KEY.export_key(format="PEM", pkcs=8))
    assert read_private_key_file(path) == KEY


SMALL_KEY_B64 = base64.b64encode(RSA.generate(2048, e=65537).export_key(format="DER", pkcs=8)).decode()

ME_INFO_CASES = [
    ("empty", "", 1, "empty file"),
    ("empty name", f"\n{ID_HEX}\n{KEY_B64}\n", 1, "the client name is empty"),
    ("missing id", "alice\n", 2, "missing client id"),
    ("short id", f"alice\n{ID_HEX[:-1]}\n{KEY_B64}\n", 2, "is not 32 hex characters"),
    ("id not hex", f"alice\n{'g' * 32}\n{KEY_B64}\n", 2, "is not 32 hex characters"),
    ("id with dashes", "alice\n3f2a9c1e-7b4d-4e8a-9c61-0d5e8f7a2b14\n{KEY_B64}\n", 2, "32 hex"),
    ("missing key", f"alice\n{ID_HEX}\n", 3, "missing private key"),
    ("bad base64 character", f"alice\n{ID_HEX}\n{KEY_B64[:40]}!{KEY_B64[41:]}\n", 3, "'!' is not a base64"),
    ("bad character on line 4", f"alice\n{ID_HEX}\n{KEY_B64[:64]}\n{KEY_B64[64:70]}*\n", 4, "'*'"),
    ("truncated base64", f"alice\n{ID_HEX}\n{KEY_B64[:-3]}\n", 3, "not valid base64"),
    ("base64 of garbage", f"alice\n{ID_HEX}\n{base64.b64encode(b'0' * 60).decode()}\n", 3, "private key"),
    ("2048-bit key", f"alice\n{ID_HEX}\n{SMALL_KEY_B64}\n", 3, "RSA-2048; the protocol needs RSA-1024"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [case[1:] for case in ME_INFO_CASES],
                         ids=[case[0] for case in ME_INFO_CASES])  # fmt: skip
def test_me_info_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, "me.info", text)
    with pytest.raises(ConfigError) as caught:
        read_identity(path)
    assert (caught.value.path, caught.value.line) == (path, line)
    assert fragment in caught.value.message
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(caught.value)


def test_write_identity_replaces_atomically(tmp_path: Path) -> None:
    write_identity(tmp_path, Identity("alice", bytes(16), KEY))
    other = generate_private_key()
    write_identity(tmp_path, Identity("alice", bytes.fromhex(ID_HEX), other))
    identity = read_identity(tmp_path / "me.info")
    assert (identity.client_id.hex(), identity.private_key) == (ID_HEX, other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.info", "priv.key"]


# --- the pure text parsers of backupproto.client_files (shared with the recorder) -----------


def test_me_info_text_parses_without_a_file() -> None:
    identity = parse_me_info(f"alice\n{ID_HEX}\n{KEY_B64[:80]}\n{KEY_B64[80:]}\n")
    assert (identity.name, identity.client_id.hex(), identity.private_key) == ("alice", ID_HEX, KEY)


def test_me_info_text_errors_carry_the_line() -> None:
    with pytest.raises(ClientFileError) as caught:
        parse_me_info(f"alice\n{ID_HEX[:-2]}\n{KEY_B64}\n")
    assert caught.value.line == 2 and "is not 32 hex characters" in caught.value.detail


def test_written_texts_read_back() -> None:
    text = format_me_info(Identity("bob", bytes.fromhex(ID_HEX), KEY))
    assert text == f"bob\n{ID_HEX}\n{KEY_B64}\n"
    assert parse_me_info(text).client_id == bytes.fromhex(ID_HEX)
    assert parse_private_key(format_private_key(KEY)) == KEY


def test_priv_key_text_in_pem() -> None:
    pem = KEY.export_key(format="PEM", pkcs=8).decode()
    assert parse_private_key(pem) == KEY


def test_transfer_info_text_is_server_name_then_one_file_per_line(tmp_path: Path) -> None:
    from backupproto.client_files import format_transfer_info

    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    text = format_transfer_info("127.0.0.1:1234", "alice", ["a.txt", str(tmp_path / "b.bin")])
    assert text == f"127.0.0.1:1234\nalice\na.txt\n{tmp_path / 'b.bin'}\n"
    info = load_transfer_info(write(tmp_path, "transfer.info", text))
    assert info.server == Server("127.0.0.1", 1234) and info.name == "alice"
    assert [file.path.name for file in info.files] == ["a.txt", "b.bin"]
