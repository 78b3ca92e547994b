"""Every number of a protocol variant in one place: codes, sizes, key lengths.

Only version 3 exists today (`V3`). A variant (other code tables, AES-256, another
send-file layout) is added as another `Dialect` value, not as a fork of the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class RequestCode(IntEnum):
    """Request codes of version 3 (spec section 4)."""

    REGISTER = 1100
    SEND_PUBLIC_KEY = 1101
    RECONNECT = 1102
    SEND_FILE = 1103
    CRC_OK = 1104
    CRC_RETRY = 1105
    CRC_GIVE_UP = 1106


class ResponseCode(IntEnum):
    """Response codes of version 3 (spec section 5)."""

    REGISTERED = 2100
    REGISTRATION_FAILED = 2101
    AES_KEY = 2102
    FILE_RECEIVED = 2103
    ACKNOWLEDGED = 2104
    RECONNECT_APPROVED = 2105
    RECONNECT_DENIED = 2106
    SERVER_ERROR = 2107


@dataclass(frozen=True)
class Dialect:
    """The constants of one protocol variant."""

    version: int = 3
    client_id_size: int = 16
    name_size: int = 255
    public_key_size: int = 160
    rsa_bits: int = 1024
    rsa_exponent: int = 17
    aes_key_size: int = 16
    aes_block_size: int = 16
    max_encrypted_key_size: int = 512
    request_codes: type[RequestCode] = field(default=RequestCode)
    response_codes: type[ResponseCode] = field(default=ResponseCode)

    @property
    def max_name_length(self) -> int:
        """Longest name in characters: the field keeps one byte for the NUL terminator."""
        return self.name_size - 1


V3 = Dialect()
