"""Heliograph keys: created once, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .auth import KEY_PREFIX, hash_key
from .storage import Store


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    name: str
    key: str


def create_key(store: Store, name: str) -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    store.create_key(key_id, name, hash_key(key), key[:len(KEY_PREFIX) + 6])
    return NewKey(key_id, name, key)
