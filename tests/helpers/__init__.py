"""Test helpers: a reference server subprocess and a small blocking client on backupproto.engine."""
