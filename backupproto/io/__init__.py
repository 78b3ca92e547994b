"""backupproto's I/O layer, beside the sans-I/O core (as aioquic keeps ``asyncio/`` beside ``quic/``).

- `channel`: one blocking TCP connection driving a sans-I/O receiver (an engine, or the
  session splitter): send bytes or events, receive events with timeouts, half-close.
- `listener`: accept TCP connections, one handler thread each.
- `server_process`: start a server program as a subprocess on a free loopback port, wait
  until it listens, stop it.

Nothing in the core imports this package.
"""
