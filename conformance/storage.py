"""Read-only look at a server's data folder: its database (spec 11.2: server.db, or the run's dialect's
name, dialects 18.5) and the stored files (spec 11.1)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .case import CaseContext


def _db(context: CaseContext, data_dir: Path) -> Path:
    name = context.dialect.database_name
    path = data_dir / name
    if not path.is_file():
        expected = f"{path} (spec 11, dialects 18.5: the database {name} beside the server)"
        context.fail(expected, "no such file")
    return path


def query(context: CaseContext, data_dir: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on server.db (spec 11.2 table and column names)."""
    path = _db(context, data_dir)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            return list(db.execute(sql, params))
    except sqlite3.Error as error:
        name = context.dialect.database_name
        context.fail(f"{name} with the tables of spec 11.2 (query: {sql})", f"sqlite error: {error}")


_TRUE = {1, "1", "true", "t", "yes", b"\x01", b"1"}
_FALSE = {0, "0", "false", "f", "no", b"\x00", b"0"}


def verified_flag(value: object) -> int | None:
    """A Verified value as real servers store it (INTEGER 0/1, TEXT 'TRUE'/'true'/'1', BLOB) as 0/1;
    None when it reads as neither."""
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, bool | int | str | bytes):
        if key in _TRUE:
            return 1
        if key in _FALSE:
            return 0
    return None


def file_row(
    context: CaseContext, data_dir: Path, client_id: bytes, file_name: str
) -> tuple[str, int] | None:
    """(PathName, Verified as 0/1) of a file, or None; fails if Verified reads as neither."""
    rows = query(
        context,
        data_dir,
        "SELECT PathName, Verified FROM files WHERE ID = ? AND FileName = ?",
        (client_id, file_name),
    )
    if not rows:
        return None
    path, verified = rows[0]
    flag = verified_flag(verified)
    if flag is None:
        context.fail(
            "files.Verified readable as a boolean: INTEGER 0/1, TEXT 'TRUE'/'FALSE' or '1'/'0' (spec 11.2)",
            f"Verified = {verified!r}",
        )
    return str(path), flag


def column_type(context: CaseContext, data_dir: Path, table: str, column: str, key: tuple[Any, ...]) -> str:
    """SQLite's storage class (``typeof``) of a column of the row with this primary key."""
    where = "ID = ? AND FileName = ?" if table == "files" else "ID = ?"
    rows = query(context, data_dir, f"SELECT typeof({column}), {column} FROM {table} WHERE {where}", key)
    return f"{rows[0][0]} {rows[0][1]!r}" if rows else ""


def stored_content(context: CaseContext, data_dir: Path, client_id: bytes, file_name: str) -> bytes:
    """The bytes stored for a file (via files.PathName, relative to the storage root)."""
    row = file_row(context, data_dir, client_id, file_name)
    if row is None:
        context.fail(
            f"a files row for ID {client_id.hex()} and FileName {file_name!r} (spec 11.2)",
            f"no such row in {context.dialect.database_name}",
        )
    path = data_dir / row[0]
    if not path.is_file():
        context.fail(f"the stored file {path} (files.PathName {row[0]!r}, spec 11.1)", "no such file")
    return path.read_bytes()
