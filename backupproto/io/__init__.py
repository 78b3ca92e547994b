"""backupproto's I/O layer, beside the sans-I/O core (as aioquic keeps ``asyncio/`` beside ``quic/``).

- `channel`: one blocking TCP connection driving a sans-I/O receiver (an engine, the
  session splitter, or `ByteStream`: raw bytes by count for peers whose framing is not
  trusted): send bytes or events, receive events with timeouts, half-close.
- `listener`: accept TCP connections, one handler thread each.
- `server_process`: start a server program as a subprocess on a free loopback port, wait
  until it listens, stop it.
- `cli_cksum`: ``python -m backupproto cksum``: files read through mapped windows, summed
  by worker threads (the program around the pure `backupproto.cksum`).

Nothing in the core imports this package.
"""
