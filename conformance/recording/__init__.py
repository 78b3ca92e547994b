"""Recording sessions (spec/sessions.md 5), a tool of the suite: the proxy (`proxy`), the recording
of one connection (`connection`, `decryption`, `client_keys`), session files on disk (`files`)
and the ``python -m conformance record`` subcommand (`cli`)."""

from .connection import ConnectionRecorder
from .files import load, load_folder, plaintext_chunks, save
from .proxy import Recorder

__all__ = ["ConnectionRecorder", "Recorder", "load", "load_folder", "plaintext_chunks", "save"]
