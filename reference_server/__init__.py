"""Reference server of the encrypted backup protocol, version 3 (`python -m reference_server`).

Design note
-----------
Wire: every byte is parsed and built by `backupproto.engine.ServerConnection` (sans-I/O);
this package only moves bytes between sockets and the engine and decides what each
well-formed request does (`session.Session`).

Concurrency: one thread per connection, at most ``--max-connections`` (256) at once, plus
the accepting thread. The work is blocking I/O (socket, file writes, fsync, SQLite) and
AES/CRC in C code that releases the GIL, so threads are the simplest correct choice; an
event loop would have to push every file write, fsync and database commit to a thread pool
anyway. Each connection has its own timeouts (``--idle-timeout`` between requests,
``--read-timeout`` while a message is under way, also for sends), so a slow or hostile
client holds one thread and nothing else. The connection above the limit is accepted,
answered 2107 at once without reading its request, and closed: the client sees the
protocol's "server error" rather than a hang, and retries later as clients do on 2107.

Memory: a file passes in chunks of at most 256 KiB (recv size): decrypted
(`backupproto.crypto.CbcDecryptor`), CRC'd (`backupproto.cksum.Cksum`) and written as it
arrives, so a 4 GiB file costs the same memory as a 16-byte one.

Storage (`store`, `files`): SQLite ``server.db`` (tables ``clients`` and ``files`` as in spec
11, WAL journal, synchronous=FULL, one transaction per change) plus the same rows in
memory for lookups; one lock keeps both in step. Files live in ``<data-dir>/<client id
hex>/`` under a name derived from the client's file name by SHA-256 (never a client-chosen
string); ``files.PathName`` is ``<client id hex>/<stored name>``. An upload goes to a
``.part-*`` temp file in the client folder, is fsync'd, its row is written with
Verified=0, and then it is renamed over the final name. So a crash leaves the old or the
new version in place, never a partial one, and Verified=1 is only ever set by a 1104 for
the content in place. At startup, temp files are deleted and rows whose file is missing
are dropped (each repair is logged).

Failures: 2101 only for a taken name (the connection stays usable), 2106 for a refused
reconnect, 2107 and close for everything else: malformed or out-of-turn messages, bad
keys, bad padding, limits, storage failures. After a 2107 the server half-closes and
discards input for up to 2 s so that the client reads the 2107 rather than a reset. An
idle timeout closes silently (nothing to answer); a stalled message gets 2107.

Host: the default is 127.0.0.1, not 0.0.0.0. A reference server runs mostly in tests and
conformance runs on one machine, and the protocol's security is weak (zero IV, no
authentication of the client beyond its id and name), so serving the network is a choice
the operator makes explicitly with ``--host 0.0.0.0``.

Shutdown (SIGINT/SIGTERM): stop accepting, shut every connection down (in-flight uploads
are aborted and their temp files removed), wait up to 5 s for the sessions, close the
database, exit 0.
"""

from __future__ import annotations

from .config import ServerConfig
from .server import Server

__all__ = ["Server", "ServerConfig"]
