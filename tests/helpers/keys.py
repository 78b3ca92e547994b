"""RSA-1024 keys for tests, generated once per process (generation costs ~0.1 s each)."""

from __future__ import annotations

from functools import cache

from backupproto.crypto import RsaKey, generate_private_key


@cache
def rsa_key(index: int = 0) -> RsaKey:
    """The `index`-th test key (e=17, as the reference client makes them)."""
    return generate_private_key()
