"""Reference server of the encrypted backup protocol, version 3 (`python -m reference_server`).

Design note
-----------
Wire: every byte is parsed and built by `backupproto.engine.ServerConnection` (sans-I/O);
this package only moves bytes between sockets and the engine and decides what each
well-formed request does (`session.Session`).

Dialects (spec/dialects.md, ``--dialect``, default 2023A): the engine speaks the dialect's
codes and layouts and checks 2024's packets; this package adds what the spec leaves to the
program. The AES key has the dialect's size (32 bytes in 2024A/C). The port without
``port.info`` and the database file (``server.db`` or ``defensive.db``) are the dialect's.
The database records the dialect that created it (table ``settings``; a database older
than the table is 2023A's) and a server of another dialect refuses to start on it, as it
refuses a data dir holding the other database file: clients registered in one dialect hold
keys of another size and speak other codes, and silently starting an empty second database
beside them would look like lost backups. 2022C: where others answer 2107 the server sends
nothing, half-closes, drains (as after 2107) and closes; a returning client re-sends 1101
with its saved id, name and key: unknown id, other name, bad key or a key other than the
stored one close the connection, the same key gets 2102 with a fresh AES key (17.4).
2024A/C: the engine hands on the packets' content as one stream, so the upload decrypts one
CBC stream across packets; after the last packet the program checks the padding
(``bad_padding``) and the plaintext length against ``orig_file_size``
(``bad_orig_file_size``), either failure answers 1607 and stores nothing (the temp file is
removed; a verified earlier version stays). A request whose code belongs to another dialect
is ``unknown_code`` (SERVER_ERROR of our dialect, or 2022C's close) and the log line names
the dialect(s) its header fits (`backupproto.detect`): "the client likely speaks 2024C".

Concurrency: one asyncio event loop (``Server.serve_forever``) runs the accept loop and one
coroutine per connection (`session.Session`), the way aioquic layers ``asyncio/`` over its
sans-I/O core. The loop moves bytes, keeps time and does what costs microseconds: parsing,
1103's header (checks in memory) and a small file's content, held in memory as it arrives
(a file of at most 16 KiB, `session.SMALL_FILE`). No file-system call runs on the loop:
creating a file can wait for the file system's journal while other threads fsync, and on
the loop that wait stalled every connection (py-spy at 100 clients: a fifth of the loop's
time in the temp file's ``open``, before the change). At its end a small file is
decrypted, CRC'd and its padding and size checked in memory, on the loop (16 KiB at most:
microseconds); nothing is on disk yet. A large file's temp file is created in the pool
before its content pump starts. Every database step runs on one store thread
(`store_thread.StoreThread`): requests 1100-1102 and 1104-1106 (SQLite, RSA) and each
upload's install (a large file's temp file is fsync'd in the pool first, many at once). The
store thread takes every job waiting when it wakes, runs them in turn with their commits
deferred, commits once, then hands what must follow the commit to the pool: a small file's
temp file (created, written, fsync'd) and every rename with its folder fsync, in one job
per client (those of different clients at once, those of one client in order, also across
batches). It waits for that work up to 50 ms and wakes all the sessions whose results are
ready in one call; work still running then reports its own session, so a slow
file-system call (an ``open`` waiting for the journal, a slow rename) delays only its
session. Removal of expired versions follows in the pool (freeing 1 GiB takes about 0.2 s
on ext4 with discard: no 2104 waits for it). One thread wake-up and one COMMIT per batch,
where a pool cost a hand-off, a lock convoy and a commit per step (small sessions: server
CPU per session 3.3-4.4 ms -> 1.7-3.0 ms, benchmarks/README.md); writing a small file after
its row, in the job that renames it, saves a trip to the pool and back per upload (1.14x the
sessions/s at 100 clients). No fsync of a file runs on the store thread: with a slow disk
(4 ms per fsync while others wrote) one thread doing every session's fsyncs in turn capped
the server near 75 sessions/s. Everything else that blocks or burns CPU runs in one thread
pool (32 threads).
Bytes of requests arrive through `wire.Wire`, a buffered protocol: the kernel writes them
straight into the connection's buffer (16 KiB, doubling up to 256 KiB, dropped while
idle), one copy out per read. An idle connection costs a coroutine, a transport and an
engine: about 5 KiB, no thread (10,000 idle connections measured at +52 MiB).

File content of larger files (`content.ContentPump`): once a 1103's content starts, the
session stops the loop's reading of that socket (`Wire.hold`) and one pool job reads the
socket itself (non-blocking ``recv`` of up to 256 KiB, ``poll`` while it is empty), feeds
the engine and hands each chunk to the upload: AES-CBC decryption (OpenSSL through
`cryptography`, into a reused buffer), cksum and the write, all in that thread, with no
Python copy and no trip through the loop per chunk. The job gives its thread back when the
socket has been quiet for 50 ms (the loop then waits for bytes as for any message, with
the same deadlines, and starts a new job when they come: a slow client holds no thread)
and after 0.25 s of work (it queues itself again behind the pool's other jobs, so big
uploads cannot keep every pool thread from registrations and verdicts). The job checks the
message deadline and the stall timeout below before every wait. Shutdown ends a waiting
job by shutting the socket's reading side (``shutdown(SHUT_RD)``), never by closing the
socket under it; the session closes the socket only after the job has returned. Several
uploads run on several pool threads; OpenSSL, recv, poll and write release the GIL, so
both cores work. CPU per GiB received on the 2-vCPU VM: about 0.5 s (before: 1.2-1.6 s
with a pool hand-off and a copy per read and page-cache writes).

Deadlines (spec 2.4, 13.11), all per connection: at a message boundary ``--idle-timeout``
(60 s; close silently). Once a message's first byte has arrived, the whole message must
arrive within ``--read-timeout`` (30 s), extended by 1 s per ``--min-rate`` bytes (16384)
of 1103 content received, so content must keep up that rate on average; and, as before,
no read inside a message may wait longer than ``--read-timeout`` (the stall timeout);
else 2107 and close. A per-byte timer alone would let one byte every 20 s hold a
connection for ever. Sends are bounded by ``--read-timeout`` too. `wire.Wire` keeps these
deadlines itself: one timer per wait, armed only when a read finds no bytes or a send
must wait for the transport's buffer to drain (where ``asyncio.timeout`` around every read
and send cost a context manager and a timer each).

Limits (`limits.ConnectionTable`): at most ``--max-connections`` (256) connections and
``--max-per-address`` (128) per IP address. At a limit the server closes the connection
idle for longest (at a message boundary for at least ``--min-idle-to-drop``, 1 s) to make
room; only if none is idle is the new connection refused (closed at once, spec 10). Idle
connections are kept oldest-first, so the choice is O(1). Refusals, drops and accept
errors are counted and logged as one summary line per ``--summary-interval`` (10 s) and at
shutdown, never a line per connection. ``accept()`` failing with EMFILE/ENFILE pauses
accepting for 0.2 s instead of spinning; at start the soft open-file limit is raised
toward the hard one to fit ``--max-connections``.

Memory: a small file (at most 16 KiB) is held whole until its end; a larger file passes in
pieces of at most 256 KiB (one recv): decrypted into the upload's reused buffer
(`backupproto.crypto.CbcDecryptor.update_into`), CRC'd and written, so a 4 GiB file costs
the same memory as a 16-byte one (a few MiB per upload in flight: the received piece, the
two staging buffers of direct writes (2 MiB and a piece each), the connection's receive
buffer; peak server RSS 46-52 MiB at 1 GiB with 1 MiB writes, 59.7-60.0 MiB with 2 MiB
writes over a benchmark that ends with two 1 GiB uploads at once, 39 MiB idle; with 1 MiB
pieces 55-63 MiB and no less CPU, so 256 KiB).

Storage (`store`, `files`; spec 9.2 and 11): SQLite ``server.db`` (or ``defensive.db``) with
the tables ``clients``, ``files``, ``versions`` and ``settings`` (WAL journal,
synchronous=FULL, bound parameters only) plus clients and files in memory for lookups; one
lock keeps both in step. Group commit: each change runs in a savepoint of the open
transaction (a one-statement change needs none), then waits for a COMMIT: on the store
thread, the one COMMIT after its batch (`Store.deferring`); from any other thread the first
waiter commits every change written meanwhile. So concurrent sessions share one fsync, no
response leaves before the commit holding its change, and a failed COMMIT fails every
change in it (2107) and reloads memory from the database. Owner-only: the data
dir is made 0700 and ``server.db`` 0600 (its -wal/-shm inherit that mode) whatever the
umask; client folders, ``.tmp``, ``.versions`` 0700, files 0600.

Files live in ``<data-dir>/<client id hex>/`` (created with the client's first file) under
their own names, which the wire grammar makes single safe path components; the resolved path
is still checked to lie directly in the client folder. On a case-folding file system or on
Windows the names are mapped injectively (SHA-256 hex) instead; ``files.PathName`` records
the mapping. An upload goes to ``<data-dir>/.tmp/<random>`` (no client folder or file name
can be ``.tmp``). Where the file system takes direct I/O (O_DIRECT: ext4, xfs, ...) the
plaintext is staged in a page-aligned buffer and written in 2 MiB runs of whole 4 KiB blocks
that the disk reads from our memory: no copy into the page cache and no writeback later (a
fifth of the kernel CPU of page-cache writes on the VM). A direct write waits for the disk,
so the upload's writer thread does it while the pump decrypts into a second staging buffer
(one write in flight, in file order; its error reaches the pump at its next step). The last
partial block goes through the page cache. Elsewhere (tmpfs, macOS, Windows, or a direct
write refused with EINVAL, which switches the file to the page cache mid-way without losing
a byte) writes go through the page cache and writeback starts in the background every 32
MiB. Either way the file is fsync'd before its row is committed, so what a crash leaves is
the same. At the end, under the file's lock (one of 64, by client id and file name), in this
order: fsync the temp file; if the current row is Verified, hard-link the verified file into
``.versions/<client id hex>/<random>`` and fsync that folder; commit the ``files`` row with
Verified=0 (and the ``versions`` row) and remember the upload's version tag; rename over the
final name and fsync the folder; answer 2103. A small file (`files.SmallUpload`) takes the
same steps, except that its temp file is created, written and fsync'd after the commit, just
before the rename. A failure after the commit and before the rename (a full disk while a
small file is written, a refused rename) is undone before the 2107
(`FileStore.undo_install`): the row goes back to what it was, since the final path still
holds those bytes, and the copy kept for the upload goes; after the rename the row stays
Verified=0. A 1104 takes the same lock, sets Verified=1 only if the remembered tag is still
this connection's upload, then drops kept versions beyond ``--keep-versions`` (rows
committed, then files unlinked). Because tag, row and rename of one upload happen under one
lock, two uploads of one name can never commit in one order and rename in the other. On the
store thread the rename waits for its batch's COMMIT (after the lock); that one thread runs
every install and 1104 in turn, and the renames of one client run in the order of its row
updates, also across batches, so the order holds there too, and a 1104 can only name an
upload whose 2103 (sent after its rename) it followed.

What a crash (kill -9, power loss) at each step leaves, and what start-up does:
- while content arrives, or before the temp file's fsync: a temp file (a small file's
  content is still in memory: nothing); start-up deletes it (and any folder in ``.tmp``);
  the previous file and row are untouched.
- after the hard link, before the commit: an extra link in ``.versions`` without a row;
  start-up removes it. The file and its row are unchanged (still Verified).
- after the commit, before the rename (for a small file also before or while its temp file
  is written): the row says Verified=0 (and the kept version has its row) while the final
  path still holds the previous bytes (or, for a new file, nothing: the row stays with
  Verified=0, spec 9.2 rule 5); verification is under-stated, never over-stated; the
  client's retry replaces it.
- after the rename, before 2103 or 1104: the new file, Verified=0 (spec 9.2 rule 6).
- after the 1104 commit (and maybe its 2104), before old versions are unlinked: files in
  ``.versions`` without rows; start-up removes them.
- a ``versions`` row whose file is gone is deleted at start-up; a ``files`` row whose file
  is gone is kept with Verified=0 (spec 9.2 rule 5). Every repair is logged.
In memory only, and so lost by a crash: version tags (a 1104 after a restart cannot
match: the file stays unverified) and the failed-decryption counts.

Failed decryptions (`lockout.DecryptionFailures`, spec 13.3): every 1103 whose padding
check fails counts against its client id; after ``--max-decrypt-failures`` (5) within
``--decrypt-lockout`` (900 s) that id's 1102 and 1103 get 2107 for 900 s, logged once.
With the kept verified version, a forged upload (1 try in 256 passes the padding) can no
longer destroy a backup in seconds; the residual risk is in spec 13.3.

Failures: 2101 only for a taken name and 2106 for a refused reconnect (the connection
stays open), 2107 and close for everything else: malformed or out-of-turn messages, bad
keys, bad padding, limits, deadlines, lockouts, storage failures, internal errors. After a
2107 the server half-closes and discards input for up to 2 s / 64 KiB so that the client
reads the 2107 rather than a connection reset (spec 2.3). A failure never touches what was
stored. A full disk is reported as SQLite says it ("database or disk is full").

Host: the default is 127.0.0.1, not 0.0.0.0. A reference server runs mostly in tests and
conformance runs on one machine, and the protocol's security is weak (zero IV, no
authentication of the client beyond its id and name, spec 13), so serving the network is
a choice the operator makes explicitly with ``--host 0.0.0.0``.

Shutdown (SIGINT/SIGTERM): stop accepting, log the last summary line, abort every
connection (in-flight uploads are aborted and their temp files removed), wait up to 5 s for
the sessions, finish the pool's work, close the database, exit 0.
"""

from __future__ import annotations

from .config import ServerConfig
from .server import Server

__all__ = ["Server", "ServerConfig"]
