"""Read a server's `server.db` (or `defensive.db`) the way an operator would (read-only, plain SQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def rows(data_dir: Path, sql: str, *params: Any, database: str = "server.db") -> list[tuple[Any, ...]]:
    """Rows of a query against `data_dir/server.db` (or another `database`), opened read-only."""
    uri = f"file:{data_dir / database}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=10) as db:
        return list(db.execute(sql, params))


def client_row(data_dir: Path, client_id: bytes, database: str = "server.db") -> tuple[Any, ...] | None:
    """(Name, PublicKey, LastSeen, AESKey) of a client."""
    sql = "SELECT Name, PublicKey, LastSeen, AESKey FROM clients WHERE ID = ?"
    found = rows(data_dir, sql, client_id, database=database)
    return found[0] if found else None


def file_rows(data_dir: Path, client_id: bytes, database: str = "server.db") -> dict[str, tuple[str, int]]:
    """FileName -> (PathName, Verified) of a client's files."""
    sql = "SELECT FileName, PathName, Verified FROM files WHERE ID = ?"
    found = rows(data_dir, sql, client_id, database=database)
    return {name: (path, verified) for name, path, verified in found}
