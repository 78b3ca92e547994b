"""Bulk AES-CBC and OAEP unwrapping on every backend (OpenSSL via `cryptography`, pycryptodome):
the vectors of spec/vectors/crypto.json, AES-256 against the `openssl` command line, any split
of the stream, the same refusals word for word."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_vectors import CRYPTO, cases, expand

from backupproto import crypto
from backupproto.errors import CryptoError

OPENSSL = shutil.which("openssl")
AES_CASES = [case for case in cases("crypto") if case.values[0]["type"] == "aes-cbc"]
OAEP_CASES = [case for case in cases("crypto") if case.values[0]["type"] == "oaep"]
KEY_256 = bytes(range(32))


def test_openssl_is_preferred_when_installed() -> None:
    assert crypto.AES_BACKENDS == ("openssl", "pycryptodome")
    assert crypto.DEFAULT_AES_BACKEND == "openssl"
    assert crypto.CbcDecryptor(bytes(16)).backend == "openssl"


@pytest.mark.parametrize("backend", crypto.AES_BACKENDS)
@pytest.mark.parametrize("case", AES_CASES)
def test_aes_vectors_on_every_backend(backend: str, case: dict[str, Any]) -> None:
    key, ciphertext = bytes.fromhex(case["key"]), expand(case["ciphertext"])
    decryptor = crypto.CbcDecryptor(key, backend=backend)
    if case["expect"] != "valid":
        with pytest.raises(CryptoError) as info:
            decryptor.update(ciphertext)
            decryptor.finalize()
        assert info.value.kind.value == case["expect"]
        return
    plaintext = expand(case["plaintext"])
    encryptor = crypto.CbcEncryptor(key, backend=backend)
    assert encryptor.update(plaintext) + encryptor.finalize() == ciphertext
    assert decryptor.update(ciphertext) + decryptor.finalize() == plaintext


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command")
@pytest.mark.parametrize("backend", crypto.AES_BACKENDS)
@pytest.mark.parametrize("size", [0, 15, 16, 17, 100_000])
def test_aes_256_matches_the_openssl_command(backend: str, size: int) -> None:
    plaintext = bytes(index % 251 for index in range(size))
    assert OPENSSL is not None
    expected = subprocess.run(
        [OPENSSL, "enc", "-aes-256-cbc", "-K", KEY_256.hex(), "-iv", "0" * 32],
        input=plaintext,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    encryptor = crypto.CbcEncryptor(KEY_256, backend=backend)
    assert encryptor.update(plaintext) + encryptor.finalize() == expected
    decryptor = crypto.CbcDecryptor(KEY_256, backend=backend)
    assert decryptor.update(expected) + decryptor.finalize() == plaintext


@pytest.mark.parametrize("backend", crypto.AES_BACKENDS)
@pytest.mark.parametrize("case", OAEP_CASES)
def test_oaep_vectors_on_every_backend(backend: str, case: dict[str, Any]) -> None:
    private_key = crypto.import_private_key(bytes.fromhex(CRYPTO["private_key_pkcs8"]))
    wrapped = expand(case["wrapped"])
    if case["expect"] == "valid":
        assert crypto.unwrap_aes_key(private_key, wrapped, backend=backend) == bytes.fromhex(case["aes_key"])
        return
    with pytest.raises(CryptoError) as info:
        crypto.unwrap_aes_key(private_key, wrapped, backend=backend)
    assert info.value.kind.value == case["expect"]


def test_oaep_backends_refuse_alike() -> None:
    """Same kind and message on both backends, for each way a wrapped key can be wrong."""
    private_key = crypto.import_private_key(bytes.fromhex(CRYPTO["private_key_pkcs8"]))
    public_key = private_key.public_key()
    wrong = [
        bytes(128),  # an integer of 0: not OAEP
        b"\xff" * 128,  # larger than the modulus
        b"\x01" * 127,  # one byte short
        crypto.wrap_aes_key(public_key, bytes(32)),  # a 32-byte key where 16 are expected
        crypto.wrap_aes_key(public_key, bytes(16), "sha256"),  # SHA-256 when only SHA-1 is tried
    ]
    for wrapped in wrong:
        messages = []
        for backend in crypto.AES_BACKENDS:
            with pytest.raises(CryptoError) as info:
                crypto.unwrap_aes_key(private_key, wrapped, hash_names=("sha1",), backend=backend)
            messages.append((info.value.kind, str(info.value)))
        assert len(set(messages)) == 1, messages


def not_converted_again(key: crypto.RsaKey) -> None:
    raise AssertionError("converted a second time")


def test_oaep_openssl_keys_are_converted_once_per_key_object() -> None:
    private_key = crypto.import_private_key(bytes.fromhex(CRYPTO["private_key_pkcs8"]))
    public_key = crypto.import_public_key(bytes.fromhex(CRYPTO["public_key_der"]))
    assert public_key in crypto._PUBLIC_TWINS  # the key OpenSSL parsed, kept for wrapping
    assert private_key not in crypto._PRIVATE_TWINS
    wrapped = crypto.wrap_aes_key(public_key, bytes(16))
    assert crypto.unwrap_aes_key(private_key, wrapped) == bytes(16)
    assert private_key in crypto._PRIVATE_TWINS
    converted = crypto._PRIVATE_TWINS.get(private_key, not_converted_again)
    assert crypto.unwrap_aes_key(private_key, wrapped) == bytes(16)
    assert crypto._PRIVATE_TWINS.get(private_key, not_converted_again) is converted
    crypto._PUBLIC_TWINS.get(public_key, not_converted_again)
    fresh = crypto.import_private_key(bytes.fromhex(CRYPTO["private_key_pkcs8"]))
    assert fresh not in crypto._PRIVATE_TWINS  # by key object, not by value
    idents = id(private_key), id(public_key)
    del private_key, public_key
    assert idents[0] not in crypto._PRIVATE_TWINS._twins  # gone with their keys
    assert idents[1] not in crypto._PUBLIC_TWINS._twins


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at these offsets (clamped, sorted): pieces that join back to `data`."""
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0, max_value=2100), max_size=6),
    key_size=st.sampled_from(crypto.AES_KEY_SIZES),
)
def test_backends_agree_on_any_split(data: bytes, cuts: list[int], key_size: int) -> None:
    key = bytes(range(key_size))
    pieces = split(data, cuts)
    results = []
    for backend in crypto.AES_BACKENDS:
        encryptor = crypto.CbcEncryptor(key, backend=backend)
        ciphertext = b"".join(encryptor.update(piece) for piece in pieces) + encryptor.finalize()
        decryptor = crypto.CbcDecryptor(key, backend=backend)
        half = len(ciphertext) // 2
        plain = (
            decryptor.update(ciphertext[:half]) + decryptor.update(ciphertext[half:]) + decryptor.finalize()
        )
        assert plain == data
        results.append(ciphertext)
    assert len(set(results)) == 1


def test_key_sizes() -> None:
    assert len(crypto.new_aes_key()) == 16
    assert len(crypto.new_aes_key(32)) == 32
    with pytest.raises(ValueError, match="16, 32"):
        crypto.new_aes_key(24)
    with pytest.raises(ValueError, match="16 or 32"):
        crypto.CbcDecryptor(bytes(24))
    with pytest.raises(ValueError, match="backend"):
        crypto.CbcEncryptor(bytes(16), backend="rot13")
    with pytest.raises(ValueError, match="backend"):
        crypto.unwrap_aes_key(crypto.generate_private_key(), bytes(128), backend="rot13")


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3100), max_size=6),
    backend=st.sampled_from(crypto.AES_BACKENDS),
)
def test_update_into_gives_the_bytes_of_update(data: bytes, cuts: list[int], backend: str) -> None:
    key = bytes(range(16))
    pieces = split(data, cuts)
    expected = crypto.CbcEncryptor(key, backend=backend)
    ciphertext = b"".join(expected.update(piece) for piece in pieces) + expected.finalize()
    encryptor, decryptor = (
        crypto.CbcEncryptor(key, backend=backend),
        crypto.CbcDecryptor(key, backend=backend),
    )
    out = bytearray(3000 + crypto.UPDATE_INTO_SLACK)
    produced = b"".join(bytes(encryptor.update_into(piece, out)) for piece in pieces) + encryptor.finalize()
    assert produced == ciphertext
    plain = b"".join(bytes(decryptor.update_into(piece, out)) for piece in [ciphertext[:17], ciphertext[17:]])
    assert plain + decryptor.finalize() == data


def test_update_into_needs_room() -> None:
    with pytest.raises(ValueError, match="needs len"):
        crypto.CbcDecryptor(bytes(16)).update_into(bytes(64), bytearray(64))
