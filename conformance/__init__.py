"""backupproto conformance suite: certifies a server of protocol version 3."""
