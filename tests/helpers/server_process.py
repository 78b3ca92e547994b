"""The tests' server processes: `backupproto.io.server_process.ServerProcess` (one helper for all)."""

from backupproto.io.server_process import ServerProcess

__all__ = ["ServerProcess"]
