"""Replay of recorded sessions (spec/sessions.md 6 and 7), a tool of the suite.

`replay_against_server` plays a session's client half against a server and checks every
response (`client_half`); `ReplayServer` plays the server half so that a client can be checked
(`server_half`). Values that change from run to run (client ids the server picks, wrapped AES
keys, file ciphertexts, client names) follow the rules of spec/sessions.md 4 (`content`);
everything else must match. A difference raises `ReplayMismatch` (`report`) naming the message
index, the expected and the actual message, decoded. `cli` is ``python -m conformance replay-server``.
"""

from .client_half import ServerReplay, replay_against_server
from .content import content_chunks, fresh_name
from .report import NotReplayable, ReplayMismatch, ReplayReport
from .server_half import ReplayServer

__all__ = [
    "NotReplayable",
    "ReplayMismatch",
    "ReplayReport",
    "ReplayServer",
    "ServerReplay",
    "content_chunks",
    "fresh_name",
    "replay_against_server",
]
