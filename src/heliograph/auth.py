"""Helicone-Auth keys: `sk-hg-…`, known to the proxy by their SHA-256 only."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Mapping

from .errors import AuthError

KEY_PREFIX = "sk-hg-"
RELOAD_EVERY = 5.0          # revoked keys stop working within this many seconds
MISS_RELOAD_AFTER = 1.0     # an unknown key triggers a reload at most this often


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCache:
    """Maps key hashes to key ids, reloaded from the store in a thread, never per request.

    One load runs at a time and everyone who needs one shares it: the periodic reload, and every
    request whose key was missing, which then looks again. A key created just before a burst is
    therefore found by the whole burst after one load, and unknown keys start a load at most every
    MISS_RELOAD_AFTER seconds.
    """

    def __init__(self, load: Callable[[], Mapping[str, str]]) -> None:
        self._load = load
        self._keys: Mapping[str, str] = {}
        self._loads = 0                                 # loads begun, the one in flight included
        self._loading: asyncio.Task[None] | None = None
        self._miss_reload_at = -math.inf

    async def reload(self) -> None:
        """Join the load in flight, or begin one; its error, if any, is raised to every caller."""
        await asyncio.shield(self._loading or self._begin())

    def _begin(self) -> asyncio.Task[None]:
        self._loads += 1
        task = asyncio.create_task(self._run())
        # Read the error here too, so a load whose callers were all cancelled is not reported unread.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._loading = task
        return task

    async def _run(self) -> None:
        try:
            self._keys = await asyncio.to_thread(self._load)
        finally:
            self._loading = None    # before the callers wake, so they see this load as finished

    async def _look_again(self, digest: str) -> str | None:
        """After a miss: the key id once a load begun after this request arrived has finished.

        Joining a load already in flight costs the store nothing; if that load began before this
        request arrived it may predate the key, so one more may begin, within the miss budget.
        """
        arrived = self._loads
        while True:
            loading = self._loading
            if loading is None:
                if self._loads > arrived:
                    return self._keys.get(digest)
                now = time.monotonic()
                if now - self._miss_reload_at < MISS_RELOAD_AFTER:
                    return None
                self._miss_reload_at = now
                loading = self._begin()
            number = self._loads
            try:
                await asyncio.shield(loading)
            except Exception:  # the store may be locked or down; judge by the keys we have
                pass
            key_id = self._keys.get(digest)
            if key_id is not None or number > arrived:
                return key_id

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
        if key_id is None:
            key_id = await self._look_again(digest)  # perhaps created since the last load
        if key_id is None:
            raise AuthError("Invalid Helicone-Auth key: it is unknown or has been revoked.")
        return key_id
