"""Whether a run is in client mode, for the suite's header and summary (no import of the rest)."""

from __future__ import annotations

import pytest


def client_under_test(config: pytest.Config) -> str | None:
    """``client `CMD``` or the listen address in client mode; None when the suite tests a server."""
    command = config.getoption("bp_client_cmd", None)
    if command:
        return f"client `{command}`"
    listen = config.getoption("bp_client_listen", None)
    if listen:
        return f"a client started by hand, connecting to {listen}"
    return None
