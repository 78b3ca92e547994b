"""The server's settings, and the port rule of the facts: `port.info`, else the dialect's default port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from backupproto.dialect import V3, Dialect
from backupproto.schemas import V3_SCHEMAS

DEFAULT_PORT: Final = V3.default_port
"""The port used when `port.info` is missing or bad, in 2023A (each dialect has its own)."""

PORT_INFO: Final = "port.info"
MAX_CONTENT_SIZE: Final[int] = V3_SCHEMAS.max_content_size
"""The protocol's largest content_size (encrypted bytes of one file): 4294967024."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything `Server` needs; the defaults are the limits of spec section 10."""

    data_dir: Path
    dialect: Dialect = V3
    """The dialect spoken: codes, layouts, AES key size and database file name."""
    host: str = "127.0.0.1"
    port: int = 0
    max_connections: int = 256
    idle_timeout: float = 60.0
    read_timeout: float = 30.0
    """The deadline of a whole message (header and fixed payload) once its first byte arrived."""
    max_file_size: int = MAX_CONTENT_SIZE
    min_rate: float = 16 * 1024
    """Bytes/s that 1103 content must keep up on average (each byte extends the deadline)."""
    max_per_address: int = 128
    """Connections from one IP address at once (0: no cap)."""
    min_idle_to_drop: float = 1.0
    """At a limit, a connection idle this long (or longer) is dropped to make room."""
    summary_interval: float = 10.0
    """Seconds between summary lines of refused and dropped connections (when there were any)."""
    keep_versions: int = 1
    """Older verified versions kept per file after a newer one is verified (spec 9.2 rule 7)."""
    max_decrypt_failures: int = 5
    """Failed decryptions (bad padding) of one client id that start a lockout (spec 13.3)."""
    decrypt_lockout: float = 900.0
    """Seconds a locked-out client id is refused 1102 and 1103; also how long failures count."""
    shutdown_grace: float = 5.0
    """How long shutdown waits for sessions to wind down before it stops waiting."""


def port_from_file(data_dir: Path, default: int = DEFAULT_PORT) -> tuple[int, str | None]:
    """The port written in `data_dir/port.info`, or (`default`, a one-line warning saying why not)."""
    path = data_dir / PORT_INFO
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default, f"{path} not found; using the default port {default}"
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return default, f"cannot read {path} ({reason}); using the default port {default}"
    lines = raw.splitlines()
    text = lines[0].strip() if lines else b""
    rest = [line for line in lines[1:] if line.strip()]
    if not text.isdigit() or rest or len(text) > 5 or not 1 <= int(text) <= 65535:
        shown = raw[:40].decode("ascii", "backslashreplace")
        return default, (
            f"{path} holds {shown!r}, not a port number 1..65535 on one line; "
            f"using the default port {default}"
        )
    return int(text), None
