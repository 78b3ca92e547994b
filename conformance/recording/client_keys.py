"""The recorded client's private keys, read from its folder (``--client-dir``) to unwrap AES keys."""

from __future__ import annotations

from pathlib import Path

from backupproto import crypto
from backupproto.client_files import ME_INFO, PRIV_KEY, ClientFileError, parse_me_info, parse_private_key


def read_client_keys(folder: Path, public_keys: list[bytes]) -> tuple[list[crypto.RsaKey], str | None]:
    """The private keys in priv.key / me.info of `folder` and of its direct sub-folders (one client
    folder each); if a 1101 passed (`public_keys`), only the keys that belong to one of them.
    Second item: why no key was found (None when some were)."""
    keys: list[crypto.RsaKey] = []
    errors: list[str] = []
    folders = [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else [folder]
    for place in folders:
        for key, origin in _keys_of(place, errors):
            if public_keys and crypto.public_key_der(key) not in public_keys:
                errors.append(f"{origin}: not the key of the public key sent in 1101")
                continue
            if all(key != known for known in keys):
                keys.append(key)
    return keys, None if keys else "no usable private key in --client-dir: " + "; ".join(errors)


def _keys_of(place: Path, errors: list[str]) -> list[tuple[crypto.RsaKey, Path]]:
    """The keys of one client folder: priv.key, and the key lines of me.info."""
    found: list[tuple[crypto.RsaKey, Path]] = []
    priv, me = place / PRIV_KEY, place / ME_INFO
    for path, parse in ((priv, parse_private_key), (me, lambda text: parse_me_info(text).private_key)):
        if not path.exists():
            continue
        try:
            found.append((parse(path.read_text(encoding="ascii")), path))
        except (OSError, UnicodeDecodeError, ClientFileError) as error:
            errors.append(f"{path}: {error}")
    if not found and not priv.exists() and not me.exists():
        errors.append(f"{place}: no priv.key or me.info")
    return found
