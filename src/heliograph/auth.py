"""Helicone-Auth keys: `sk-hg-…`, known to the gateway by their SHA-256 only.

A key belongs to one project and has a scope; each scope includes the ones before it:

    proxy   send traffic through the gateway, and the write-only logging routes of /api
            (async log, feedback, score, property) for its own project
    read    proxy, plus every read route of /api (and the dashboard)
    admin   read, plus keys, projects, budgets, provider keys, erasure and retention
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import AuthError, Forbidden

KEY_PREFIX = "sk-hg-"
RELOAD_EVERY = 5.0          # revoked keys stop working within this many seconds
MISS_RELOAD_AFTER = 1.0     # an unknown key triggers a reload at most this often


SCOPES = ("proxy", "read", "admin")
DEFAULT_PROJECT = "default"


class KeyExpired(AuthError):
    """A key past its expiry: refused like an unknown one, with a message that says so."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    project_id: str = DEFAULT_PROJECT
    scope: str = "admin"
    expires_at: int | None = None       # epoch ms
    name: str = ""

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"This key's scope is '{self.scope}'; this needs a key of scope '{scope}'"
                            f"{' or admin' if scope == 'read' else ''} ('heliograph keys create --scope {scope}').")


def key_info(row: Mapping[str, Any]) -> KeyInfo:
    """A KeyInfo from a `keys` row (the store's active_keys values)."""
    return KeyInfo(row["id"], row.get("project_id") or DEFAULT_PROJECT, row.get("scope") or "admin",
                   row.get("expires_at"), row.get("name") or "")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCache:
    """Maps key hashes to key ids, reloaded from the store in a thread, never per request.

    One load runs at a time and everyone who needs one shares it: the periodic reload, and every
    request whose key was missing, which then looks again. A key created just before a burst is
    therefore found by the whole burst after one load, and unknown keys start a load at most every
    MISS_RELOAD_AFTER seconds.
    """

    def __init__(self, load: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._load = load
        self._keys: Mapping[str, KeyInfo] = {}
        self._loads = 0                                 # loads begun, the one in flight included
        self._loading: asyncio.Task[None] | None = None
        self._miss_reload_at = -math.inf
        self._names: tuple[Mapping[str, KeyInfo], dict[str, str]] = ({}, {})

    def name_of(self, key_id: str | None) -> str:
        """A key's name by its id ("" if unknown), for log lines; any thread may ask."""
        keys, names = self._names
        if keys is not self._keys:      # rebuilt once per reload that changed the table
            keys = self._keys
            names = {info.id: info.name for info in keys.values()}
            self._names = (keys, names)
        return names.get(key_id or "", "")

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
            self._keys = await asyncio.to_thread(self._load_keys)
        finally:
            self._loading = None    # before the callers wake, so they see this load as finished

    def _load_keys(self) -> dict[str, KeyInfo]:
        return {digest: key_info(row) for digest, row in self._load().items()}

    async def _look_again(self, digest: str) -> KeyInfo | None:
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
            found = self._keys.get(digest)
            if found is not None or number > arrived:
                return found

    async def run_reloads(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            try:
                await self.reload()
            except Exception:  # the store may be locked or down; keep the keys we have
                pass

    async def authenticate(self, header: str | None) -> KeyInfo:
        if not header:
            raise AuthError("Missing Helicone-Auth header. Send 'Helicone-Auth: Bearer <key>' "
                            "with a key from 'heliograph keys create'.")
        scheme, _, secret = header.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise AuthError("Helicone-Auth must be 'Bearer <key>'.")
        digest = hash_key(secret)
        key = self._keys.get(digest)
        if key is None:
            key = await self._look_again(digest)  # perhaps created since the last load
        if key is None:
            raise AuthError("Invalid Helicone-Auth key: it is unknown or has been revoked.")
        if key.expires_at is not None and time.time() * 1000 >= key.expires_at:
            expired = datetime.fromtimestamp(key.expires_at / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise KeyExpired(f"This Heliograph key expired on {expired}; create a new one with 'heliograph keys create'.")
        return key

    def by_hash(self, digest: str) -> KeyInfo | None:
        """The key with this SHA-256, if it is known, not revoked (as of the last reload) and not expired."""
        key = self._keys.get(digest)
        if key is None or (key.expires_at is not None and time.time() * 1000 >= key.expires_at):
            return None
        return key
