"""Where the protocol specification is: shipped in the package, or beside it in a checkout.

The wheel carries ``spec/`` as ``backupproto/spec/`` (``protocol.md``, ``sessions.md``,
``sessions.schema.json``, ``vectors/``); every failure message cites it.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

SPEC_DOCUMENTS = ("protocol.md", "dialects.md", "sessions.md", "sessions.schema.json")
"""The documents of the spec folder (besides the ``vectors/`` folder)."""


def spec_root() -> Traversable:
    """The spec folder: the installed copy, else the checkout's (editable install, source tree)."""
    shipped = files(__package__ or "backupproto") / "spec"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parent.parent / "spec"
