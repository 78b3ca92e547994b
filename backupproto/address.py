"""The one ``HOST:PORT`` parser of backupproto (pure: no name resolution, no socket).

``127.0.0.1:1234``, ``localhost:1234``, ``[::1]:1234`` (an IPv6 host in brackets). Used for
the client's ``transfer.info`` and ``--server``, the suite's ``--bp-target``, the recorder's
``--listen`` / ``--target`` and the ``listening on HOST:PORT`` line servers print.
"""

from __future__ import annotations

from typing import NamedTuple

EXAMPLES = "for example 127.0.0.1:1234 or [::1]:1234"


class AddressError(ValueError):
    """Text that is not ``HOST:PORT``; the message says which part is wrong and shows the form."""

    def __init__(self, text: str, problem: str) -> None:
        super().__init__(f"{text!r} is not HOST:PORT: {problem} ({EXAMPLES})")
        self.text = text
        self.problem = problem


class Address(NamedTuple):
    """A host (name or IP, IPv6 without brackets) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, *, allow_port_zero: bool = False) -> Address:
    """``HOST:PORT`` -> `Address`; `AddressError` (a ValueError) saying what is wrong.

    Surrounding white space is ignored. The port is 1..65535, or 0..65535 with
    `allow_port_zero` (a listening address where 0 means "any free port").
    """
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise AddressError(value, "no ':' between host and port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise AddressError(value, "an IPv6 host opened with '[' must be closed with ']' before ':PORT'")
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(value, "an IPv6 host must be written in brackets")
    if not host:
        raise AddressError(value, "the host before ':' is empty")
    if any(ch.isspace() or ch in "[]" for ch in host):
        raise AddressError(value, f"host {host!r} contains white space or brackets")
    lowest = 0 if allow_port_zero else 1
    if not port_text.isascii() or not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise AddressError(value, f"port {port_text!r} is not a number from {lowest} to 65535")
    return Address(host, int(port_text))
