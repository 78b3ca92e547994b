"""Reference server of the encrypted backup protocol, version 3 (`python -m reference_server`).

Design note
-----------
Wire: every byte is parsed and built by `backupproto.engine.ServerConnection` (sans-I/O);
this package only moves bytes between sockets and the engine and decides what each
well-formed request does (`session.Session`).

Concurrency: one thread per connection, at most ``--max-connections`` (256) at once, plus
the accepting thread, plus one writer thread per upload in progress. The work is blocking
I/O (socket, file writes, fsync, SQLite) and AES/CRC in C code that releases the GIL, so
threads are the simplest correct choice; an event loop would have to push every file
write, fsync and database commit to a thread pool anyway. The session thread decrypts and
CRCs while the upload's writer thread writes the plaintext (a bounded queue of 4 chunks),
so disk writes overlap decryption on a second core. Each connection has its own timeouts
(``--idle-timeout`` before a request: close silently; ``--read-timeout`` while a message
is under way: 2107 and close; also bounds each send), so a slow or hostile client holds
one thread and nothing else. A connection above the limit is accepted and closed at once
without reading from it (spec 10); clients treat that like a 2107 and retry later.

Memory: a file passes in pieces of at most 1 MiB (one recv): decrypted
(`backupproto.crypto.CbcDecryptor`), CRC'd (`backupproto.cksum.Cksum`) and queued for the
writer, so a 4 GiB file costs the same memory as a 16-byte one (at most ~4 MiB of queued
plaintext per upload).

Storage (`store`, `files`; spec 9.2 and 11): SQLite ``server.db`` with the tables
``clients`` and ``files`` (WAL journal, synchronous=FULL, one transaction per change, bound
parameters only) plus the same rows in memory for lookups; one lock keeps both in step.
Files live in ``<data-dir>/<client id hex>/`` (created with the client's first file)
under their own names, which the wire grammar makes single safe path components; the
resolved path is still checked to lie directly in the client folder. On a case-folding
file system or on Windows the names are mapped injectively (SHA-256 hex) instead;
``files.PathName`` records the mapping. An upload goes to ``<data-dir>/.tmp/<random>``
(no client folder or file name can be ``.tmp``), is fsync'd, its row is committed with
Verified=0, and only then is it renamed over the final name and the folder fsync'd. So a
crash leaves the old or the new version in place, never a partial one, and Verified=1 is
only ever set by a 1104 for the version this connection wrote (an in-memory version tag
per file catches a replacement by another connection in between). At startup, leftover
temp files are deleted and rows whose file is missing are kept with Verified=0; each
repair is logged.

Failures: 2101 only for a taken name and 2106 for a refused reconnect (the connection
stays open), 2107 and close for everything else: malformed or out-of-turn messages, bad
keys, bad padding, limits, storage failures, internal errors. After a 2107 the server
half-closes and discards input for up to 2 s / 64 KiB so that the client reads the 2107
rather than a connection reset (spec 2.3). A failure never touches what was stored.

Host: the default is 127.0.0.1, not 0.0.0.0. A reference server runs mostly in tests and
conformance runs on one machine, and the protocol's security is weak (zero IV, no
authentication of the client beyond its id and name, spec 13), so serving the network is
a choice the operator makes explicitly with ``--host 0.0.0.0``.

Shutdown (SIGINT/SIGTERM): stop accepting, shut every connection down (in-flight uploads
are aborted and their temp files removed), wait up to 5 s for the sessions, close the
database, exit 0.
"""

from __future__ import annotations

from .config import ServerConfig
from .server import Server

__all__ = ["Server", "ServerConfig"]
