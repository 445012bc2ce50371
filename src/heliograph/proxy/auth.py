"""Helicone-Auth keys: `sk-hg-…`, known to the proxy by their SHA-256 only."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping

from ..errors import AuthError

KEY_PREFIX = "sk-hg-"
RELOAD_EVERY = 5.0          # revoked keys stop working within this many seconds
MISS_RELOAD_AFTER = 1.0     # an unknown key triggers a reload at most this often


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCache:
    """Maps key hashes to key ids, reloaded from the store in a thread, never per request."""

    def __init__(self, load: Callable[[], Mapping[str, str]]) -> None:
        self._load = load
        self._keys: Mapping[str, str] = {}
        self._miss_reload_at = 0.0
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        async with self._lock:
            self._keys = await asyncio.to_thread(self._load)

    async def run_reloads(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            try:
                await self.reload()
            except Exception:  # the store may be locked or down; keep the keys we have
                pass

    async def authenticate(self, header: str | None) -> str:
        if not header:
            raise AuthError("Missing Helicone-Auth header. Send 'Helicone-Auth: Bearer <key>' "
                            "with a key from 'heliograph keys create'.")
        scheme, _, key = header.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthError("Helicone-Auth must be 'Bearer <key>'.")
        digest = hash_key(key)
        key_id = self._keys.get(digest)
        if key_id is None and time.monotonic() - self._miss_reload_at > MISS_RELOAD_AFTER:
            # A key created since the last reload; unknown keys cannot make us reload more often.
            self._miss_reload_at = time.monotonic()
            try:
                await self.reload()
            except Exception:
                pass
            key_id = self._keys.get(digest)
        if key_id is None:
            raise AuthError("Invalid Helicone-Auth key: it is unknown or has been revoked.")
        return key_id
