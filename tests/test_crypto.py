"""backupproto.crypto: keys as Crypto++ writes them, OAEP key transport, streaming AES-CBC."""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess

import pytest
from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC, RSA
from Crypto.Util.asn1 import DerSequence
from Crypto.Util.Padding import pad
from hypothesis import given, settings
from hypothesis import strategies as st

from backupproto.crypto import (
    AES_BACKENDS,
    CbcDecryptor,
    CbcEncryptor,
    RsaKey,
    encrypted_size,
    export_private_key,
    generate_private_key,
    import_private_key,
    import_public_key,
    new_aes_key,
    public_key_der,
    unwrap_aes_key,
    wrap_aes_key,
)
from backupproto.errors import CryptoError, ErrorKind

OPENSSL = shutil.which("openssl")
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def rsa_2048() -> RsaKey:
    return RSA.generate(2048)


def one_shot(key: bytes, data: bytes) -> bytes:
    return AES.new(key, AES.MODE_CBC, iv=bytes(16)).encrypt(pad(data, 16))


# --- RSA keys -------------------------------------------------------------------------------


def test_public_key_der_is_160_bytes_with_e17(rsa_key: RsaKey) -> None:
    der = public_key_der(rsa_key)
    assert len(der) == 160
    assert rsa_key.e == 17 and rsa_key.size_in_bits() == 1024
    assert der.startswith(bytes.fromhex("30819d300d06092a864886f70d0101010500"))  # SPKI, NULL params
    assert der.endswith(bytes.fromhex("020111"))  # e = 17


def test_public_key_round_trip(rsa_key: RsaKey) -> None:
    key = import_public_key(public_key_der(rsa_key))
    assert (key.n, key.e) == (rsa_key.n, rsa_key.e)
    assert not key.has_private()
    assert import_public_key(bytearray(public_key_der(rsa_key))).n == rsa_key.n


def test_exponent_65537_is_a_valid_key() -> None:
    key = RSA.generate(1024, e=65537)
    der = public_key_der(key)
    assert len(der) == 162  # too long for the wire field: the schema's problem, not ours
    assert import_public_key(der).e == 65537


def expect_bad_public_key(der: bytes, fragment: str) -> None:
    with pytest.raises(CryptoError) as info:
        import_public_key(der)
    assert info.value.kind is ErrorKind.BAD_PUBLIC_KEY
    assert fragment in str(info.value)


def test_rejects_garbage_and_other_keys(rsa_key: RsaKey, rsa_2048: RsaKey) -> None:
    der = public_key_der(rsa_key)
    expect_bad_public_key(b"", "empty")
    expect_bad_public_key(b"garbage", "not a DER SEQUENCE")
    expect_bad_public_key(der[:-1], "SubjectPublicKeyInfo")
    expect_bad_public_key(der + b"\0", "extra data")
    expect_bad_public_key(os.urandom(160).replace(b"\x30", b"\x31"), "not a DER SEQUENCE")
    ec = ECC.generate(curve="p256").public_key().export_key(format="DER")
    expect_bad_public_key(ec, "not an RSA key")
    expect_bad_public_key(export_private_key(rsa_key), "private key")
    pkcs1 = DerSequence([rsa_key.n, rsa_key.e]).encode()  # bare RSAPublicKey, not SPKI
    expect_bad_public_key(pkcs1, "not an X.509 SubjectPublicKeyInfo")
    expect_bad_public_key(public_key_der(rsa_2048), "2048 bits; expected 1024")
    expect_bad_public_key(der.replace(b"\x02\x01\x11", b"\x02\x01\x10"), "exponent 16")


def test_bits_none_accepts_any_size(rsa_2048: RsaKey) -> None:
    assert import_public_key(public_key_der(rsa_2048), bits=None).size_in_bits() == 2048
    assert import_public_key(public_key_der(rsa_2048), bits=2048).size_in_bits() == 2048


def test_private_key_formats(rsa_key: RsaKey) -> None:
    der = export_private_key(rsa_key)
    assert RSA.import_key(der).d == rsa_key.d
    assert der[:4].hex().startswith("3082")  # PKCS#8 PrivateKeyInfo: a SEQUENCE ...
    assert b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01" in der[:30]  # ... with rsaEncryption
    text = base64.b64encode(der).decode()
    wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\n"
    pem = rsa_key.export_key(format="PEM", pkcs=8)
    forms: list[bytes | str] = [der, text, text.encode(), wrapped, "  " + wrapped, pem, pem.decode()]
    forms.append(rsa_key.export_key(format="DER"))  # PKCS#1 too
    for form in forms:
        assert import_private_key(form).d == rsa_key.d


@pytest.mark.parametrize("bad", ["", "!!!not base64", b"\x30\x00", "aGVsbG8=", b"-----BEGIN X"])
def test_private_key_garbage(bad: bytes | str) -> None:
    with pytest.raises(CryptoError) as info:
        import_private_key(bad)
    assert "private key" in str(info.value)


@pytest.mark.parametrize("changed", ["n", "e", "d", "p", "q"])
def test_private_key_whose_numbers_do_not_fit_together_is_refused(rsa_key: RsaKey, changed: str) -> None:
    """A changed number in a PKCS#1 key (n = p*q and e*d = 1 mod lcm(p-1, q-1) no longer hold)."""
    numbers = {name: int(getattr(rsa_key, name)) for name in "nedpq"}
    numbers[changed] += 2
    n, e, d, p, q = (numbers[name] for name in "nedpq")
    der = DerSequence([0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p)]).encode()
    with pytest.raises(CryptoError, match="private key"):
        import_private_key(der)


def test_private_key_read_without_pem_reader_equals_pycryptodome_s(rsa_key: RsaKey) -> None:
    for der in (export_private_key(rsa_key), rsa_key.export_key(format="DER")):
        key = import_private_key(der)
        assert key == RSA.import_key(der)
        assert (key.n, key.e, key.d, key.p, key.q, key.u) == (
            rsa_key.n,
            rsa_key.e,
            rsa_key.d,
            rsa_key.p,
            rsa_key.q,
            rsa_key.u,
        )


def test_private_key_refuses_public_key(rsa_key: RsaKey) -> None:
    with pytest.raises(CryptoError, match="public key"):
        import_private_key(public_key_der(rsa_key))


# --- AES key transport ----------------------------------------------------------------------


def test_new_aes_key() -> None:
    keys = {new_aes_key() for _ in range(8)}
    assert len(keys) == 8 and all(len(key) == 16 for key in keys)


@pytest.mark.parametrize("backend", AES_BACKENDS)
@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_wrap_unwrap(rsa_key: RsaKey, hash_name: str, backend: str) -> None:
    aes_key = new_aes_key()
    wrapped = wrap_aes_key(import_public_key(public_key_der(rsa_key)), aes_key, hash_name)
    assert len(wrapped) == 128
    assert unwrap_aes_key(rsa_key, wrapped, backend=backend) == aes_key
    assert unwrap_aes_key(rsa_key, wrapped, 16, hash_names=(hash_name,), backend=backend) == aes_key


@pytest.mark.parametrize("backend", AES_BACKENDS)
def test_sha1_is_pycryptodome_default_and_sha256_uses_mgf1_sha256(rsa_key: RsaKey, backend: str) -> None:
    aes_key = new_aes_key()
    assert PKCS1_OAEP.new(rsa_key).decrypt(wrap_aes_key(rsa_key.public_key(), aes_key)) == aes_key
    other = PKCS1_OAEP.new(rsa_key.public_key(), hashAlgo=SHA256).encrypt(aes_key)
    assert unwrap_aes_key(rsa_key, other, backend=backend) == aes_key
    ours = wrap_aes_key(rsa_key.public_key(), aes_key, "sha256")
    assert PKCS1_OAEP.new(rsa_key, hashAlgo=SHA256).decrypt(ours) == aes_key


def test_wrap_unknown_hash(rsa_key: RsaKey) -> None:
    with pytest.raises(ValueError):
        wrap_aes_key(rsa_key.public_key(), new_aes_key(), "md5")


@pytest.mark.parametrize("backend", AES_BACKENDS)
def test_unwrap_rejects(rsa_key: RsaKey, rsa_2048: RsaKey, backend: str) -> None:
    cases = [
        (os.urandom(128), "does not decrypt"),
        (b"short", "5 bytes"),
        (wrap_aes_key(rsa_key.public_key(), bytes(32)), "32 bytes"),
        (wrap_aes_key(rsa_key.public_key(), b""), "0 bytes"),
        (wrap_aes_key(RSA.generate(1024, e=17).public_key(), new_aes_key()), "does not decrypt"),
        (wrap_aes_key(rsa_2048.public_key(), new_aes_key()), "256 bytes"),
    ]
    for wrapped, fragment in cases:
        with pytest.raises(CryptoError) as info:
            unwrap_aes_key(rsa_key, wrapped, backend=backend)
        assert info.value.kind is ErrorKind.BAD_CIPHERTEXT
        assert fragment in str(info.value)


# --- AES-128-CBC ----------------------------------------------------------------------------


def test_encrypted_size() -> None:
    assert [encrypted_size(n) for n in (0, 1, 15, 16, 17, 31, 32)] == [16, 16, 16, 32, 32, 32, 48]
    for n in range(100):
        assert encrypted_size(n) == len(one_shot(KEY, bytes(n)))


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
@pytest.mark.parametrize("size", [0, 15, 16, 17, 100])
def test_known_answer_openssl(size: int) -> None:
    plain = bytes(range(size))
    assert OPENSSL is not None
    command = [OPENSSL, "enc", "-aes-128-cbc", "-K", KEY.hex(), "-iv", "00" * 16]
    expected = subprocess.run(command, input=plain, capture_output=True, check=True).stdout
    encryptor = CbcEncryptor(KEY)
    cipher = encryptor.update(plain) + encryptor.finalize()
    assert cipher == expected
    decryptor = CbcDecryptor(KEY)
    assert decryptor.update(cipher) + decryptor.finalize() == plain


def chunks(data: bytes, cuts: list[int]) -> list[memoryview]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [memoryview(data)[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=10),
    dcuts=st.lists(st.integers(0, 320), max_size=10),
)
def test_streaming_equals_one_shot(data: bytes, cuts: list[int], dcuts: list[int]) -> None:
    key = KEY
    encryptor = CbcEncryptor(key)
    pieces = [encryptor.update(chunk) for chunk in chunks(data, cuts)]
    assert all(len(piece) % 16 == 0 for piece in pieces)
    cipher = b"".join(pieces) + encryptor.finalize()
    assert cipher == one_shot(key, data)
    assert len(cipher) == encrypted_size(len(data))
    decryptor = CbcDecryptor(key)
    out = [decryptor.update(chunk) for chunk in chunks(cipher, dcuts)]
    assert sum(map(len, out)) <= max(0, len(cipher) - 16)  # the last block is held back
    assert b"".join(out) + decryptor.finalize() == data


def test_large_chunks_round_trip() -> None:
    key = new_aes_key()
    data = os.urandom(3 * 1024 * 1024 + 5)
    encryptor = CbcEncryptor(key)
    step = 1024 * 1024
    cipher = b"".join(encryptor.update(data[i : i + step]) for i in range(0, len(data), step))
    cipher += encryptor.finalize()
    assert cipher == one_shot(key, data)
    decryptor = CbcDecryptor(key)
    plain = b"".join(decryptor.update(cipher[i : i + step]) for i in range(0, len(cipher), step))
    assert plain + decryptor.finalize() == data


def decrypt_all(key: bytes, cipher: bytes) -> bytes:
    decryptor = CbcDecryptor(key)
    return decryptor.update(cipher) + decryptor.finalize()


@pytest.mark.parametrize("size", [0, 1, 15, 17, 31, 33])
def test_bad_lengths(size: int) -> None:
    with pytest.raises(CryptoError) as info:
        decrypt_all(KEY, os.urandom(size))
    assert info.value.kind is ErrorKind.BAD_CIPHERTEXT
    assert f"{size} bytes" in str(info.value)


@pytest.mark.parametrize("last", [b"\x00", b"\x11", b"\xff", b"\x02\x03", b"\x05\x05\x05\x04\x05"])
def test_bad_padding(last: bytes) -> None:
    raw = AES.new(KEY, AES.MODE_CBC, iv=bytes(16))
    plain = os.urandom(32 - len(last)).replace(last[-1:], b"\x20") + last
    with pytest.raises(CryptoError) as info:
        decrypt_all(KEY, raw.encrypt(plain))
    assert info.value.kind is ErrorKind.BAD_PADDING


def test_wrong_key_is_bad_padding_or_garbage() -> None:
    cipher = one_shot(KEY, b"secret file contents")
    try:
        assert decrypt_all(bytes(16), cipher) != b"secret file contents"
    except CryptoError as error:
        assert error.kind is ErrorKind.BAD_PADDING


def test_misuse() -> None:
    with pytest.raises(ValueError):
        CbcEncryptor(bytes(15))
    encryptor = CbcEncryptor(KEY)
    encryptor.finalize()
    with pytest.raises(ValueError):
        encryptor.update(b"x")
    with pytest.raises(ValueError):
        encryptor.finalize()
