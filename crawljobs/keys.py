"""API keys: made here, shown once, stored only as a SHA-256 hash.

Keys are 32 random bytes, so a plain SHA-256 is enough (no slow hash is needed against guessing).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from pathlib import Path

from crawljobs import store

KEY_PREFIX = "cj_"
FIRST_KEY_FILE = "api-key"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def create_key(conninfo: str, *, name: str, tenant: str | None = None) -> str:
    """Create a key for ``tenant`` (default: the key's name) and return the key itself."""
    key = generate_key()
    store.insert_api_key(
        conninfo,
        key_id=uuid.uuid4(),
        tenant=tenant or name,
        name=name,
        key_hash=hash_key(key),
        key_prefix=key[:10],
    )
    return key


def ensure_first_key(conninfo: str, data_dir: Path) -> str:
    """The key of the zero-setup start: made on first start, kept (mode 0600) in ``data_dir/api-key``."""
    path = data_dir / FIRST_KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    key = create_key(conninfo, name="default", tenant="default")
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key
