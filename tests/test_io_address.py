"""backupproto.address: the one HOST:PORT parser (client, suite, recorder, server-process helper)."""

from __future__ import annotations

import pytest

from backupproto.address import Address, AddressError, parse_address


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:1234", "127.0.0.1", 1234),
        ("localhost:1", "localhost", 1),
        ("[::1]:65535", "::1", 65535),
        ("  example.org:80\n", "example.org", 80),
    ],
)
def test_valid_addresses(text: str, host: str, port: int) -> None:
    assert parse_address(text) == (host, port)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nowhere", "no ':' between host and port"),
        (":1234", "the host before ':' is empty"),
        ("[]:1234", "the host before ':' is empty"),
        ("::1:1234", "an IPv6 host must be written in brackets"),
        ("[::1:1234", "must be closed with ']'"),
        ("my host:1", "white space"),
        ("host:http", "port 'http' is not a number from 1 to 65535"),
        ("host:0", "port '0' is not a number from 1 to 65535"),
        ("host:65536", "port '65536'"),
        ("host:-1", "port '-1'"),
        ("host:", "port ''"),
        ("host:\u0661\u0662", "is not a number"),
    ],
)
def test_invalid_addresses_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    message = str(caught.value)
    assert fragment in message
    assert f"{text.strip()!r} is not HOST:PORT" in message
    assert "for example 127.0.0.1:1234" in message
    assert isinstance(caught.value, ValueError)


def test_port_zero_only_where_allowed() -> None:
    assert parse_address("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
    with pytest.raises(AddressError, match="from 1 to 65535"):
        parse_address("127.0.0.1:0")


@pytest.mark.parametrize(
    ("address", "text"), [(Address("127.0.0.1", 9), "127.0.0.1:9"), (Address("::1", 9), "[::1]:9")]
)
def test_printed_form_parses_back(address: Address, text: str) -> None:
    assert str(address) == text
    assert parse_address(text) == address
