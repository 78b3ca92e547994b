"""Session files on disk (spec/sessions.md): save, load, load a folder, read a plaintext side file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from backupproto.sessions import INLINE_LIMIT, Plaintext, Session, SessionError, from_json, to_json


def save(session: Session, path: Path) -> None:
    """Write the session file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".part")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(to_json(session), handle, indent=1)
        handle.write("\n")
    temporary.replace(path)


def load(path: Path) -> Session:
    """Read and validate a session file; SessionError says what is wrong and where."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SessionError(f"cannot read session file {path}: {error}") from None
    try:
        return from_json(document, base_dir=path.parent)
    except SessionError as error:
        raise SessionError(f"{path}: {error}") from None


def load_folder(folder: Path) -> list[Session]:
    """Every session (`*.json`) of a folder, sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionError(f"session folder {folder} does not exist")
    return [load(path) for path in sorted(folder.glob("*.json"))]


def plaintext_chunks(plain: Plaintext, size: int = INLINE_LIMIT) -> Iterator[bytes]:
    """A recorded plaintext in pieces, read from its side file if it is one (constant memory)."""
    if plain.data is not None:
        yield plain.data
        return
    if plain.file is None:
        raise SessionError("plaintext has neither data nor file")
    path = (plain.base_dir or Path()) / plain.file
    try:
        with path.open("rb") as handle:
            while piece := handle.read(size):
                yield piece
    except OSError as error:
        raise SessionError(f"cannot read plaintext side file {path}: {error}") from None
