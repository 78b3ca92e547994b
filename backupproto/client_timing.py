"""The client's RECOMMENDED timing of spec 2.4 and 8.4, in one place: the reference client's
defaults and the bounds of the suite's client cases are derived from these figures.

Pure numbers and arithmetic: no clock is read here.
"""

from __future__ import annotations

import math
from typing import Final

CONNECT_TIMEOUT_S: Final = 10.0
"""Spec 2.4: give up a connection attempt after this long (an attempt that fails is retried)."""
RESPONSE_TIMEOUT_S: Final = 15.0
"""Spec 2.4: wait this long for a response after the last byte of a request (not retried)."""
FLUSH_BYTES_PER_S: Final = 20 * (1 << 20)
"""Spec 2.4: the response timeout of a SEND_FILE grows by 1 s per this many bytes of content_size
(the server writes the file to disk before it answers)."""
RETRIES: Final = 3
"""Spec 8.4: retries after the first attempt (four attempts in all)."""
RETRY_DELAY_S: Final = 1.0
"""Spec 8.4: the wait before the first retry, doubling before each next one (1, 2, 4 s)."""


def response_timeout(content_size: int = 0, base_s: float = RESPONSE_TIMEOUT_S) -> float:
    """Seconds to wait for the response to a request whose content is `content_size` bytes (0 for
    every request but SEND_FILE): `base_s` + ceil(content_size / FLUSH_BYTES_PER_S)."""
    return base_s + math.ceil(content_size / FLUSH_BYTES_PER_S)
