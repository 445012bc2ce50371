"""Heliograph keys and projects: keys are created once, shown once, stored as a SHA-256 hash.

Every key belongs to one project and has a scope (auth.py); a deployment starts with project
`default`. The CLI and the admin API both create them here.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .auth import DEFAULT_PROJECT, KEY_PREFIX, SCOPES, hash_key
from .storage import Store

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$")


class AccessError(ValueError):
    """A key or project request that cannot be honoured; the message says why, in words."""


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    name: str
    key: str
    scope: str = "proxy"
    project_id: str = DEFAULT_PROJECT
    expires_at: int | None = None


def parse_expiry(text: str | None, now_ms: int | None = None) -> int | None:
    """`30d`, `12h`, `90m`, `2w` from now, or an ISO 8601 date/time (UTC when no offset); None: never."""
    if text is None or not text.strip() or text.strip().lower() == "never":
        return None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if match := _DURATION.match(text):
        amount = int(match.group(1))
        if amount == 0:
            raise AccessError("an expiry of 0 would make a key that never works; give e.g. 30d")
        return now + amount * _UNIT_MS[match.group(2)]
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AccessError(f"expires must be a duration such as 30d, 12h, 2w or an ISO date, got {text!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    expires = int(at.timestamp() * 1000)
    if expires <= now:
        raise AccessError(f"expires {text!r} is in the past")
    return expires


def resolve_project(store: Store, id_or_name: str | None) -> str:
    """A project's id from its id or name; AccessError naming the known ones otherwise."""
    wanted = id_or_name or DEFAULT_PROJECT
    for project in store.list_projects():
        if wanted in (project["id"], project["name"]):
            return str(project["id"])
    names = ", ".join(p["name"] for p in store.list_projects())
    raise AccessError(f"no project {wanted!r} (projects: {names}); create it with 'heliograph projects create NAME'")


def create_key(store: Store, name: str, *, project: str | None = None, scope: str = "proxy",
               expires: str | None = None) -> NewKey:
    if not name.strip():
        raise AccessError("a key needs a name")
    if scope not in SCOPES:
        raise AccessError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    project_id = resolve_project(store, project)
    expires_at = parse_expiry(expires)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    store.create_key(key_id, name, hash_key(key), key[:len(KEY_PREFIX) + 6], project_id=project_id, scope=scope,
                     expires_at=expires_at)
    return NewKey(key_id, name, key, scope, project_id, expires_at)


def create_project(store: Store, name: str) -> str:
    name = name.strip()
    if not _PROJECT_NAME.match(name):
        raise AccessError("a project name is 1-63 letters, digits, spaces, '.', '_' or '-', starting with a "
                          f"letter or digit; got {name!r}")
    if any(name == p["name"] for p in store.list_projects()):
        raise AccessError(f"a project named {name!r} exists already")
    project_id = "proj_" + secrets.token_hex(6)
    store.create_project(project_id, name)
    return project_id


def rename_project(store: Store, id_or_name: str, new_name: str) -> str:
    project_id = resolve_project(store, id_or_name)
    new_name = new_name.strip()
    if not _PROJECT_NAME.match(new_name):
        raise AccessError(f"{new_name!r} is not a project name (1-63 letters, digits, spaces, '.', '_', '-')")
    if any(new_name == p["name"] and p["id"] != project_id for p in store.list_projects()):
        raise AccessError(f"a project named {new_name!r} exists already")
    store.rename_project(project_id, new_name)
    return project_id
