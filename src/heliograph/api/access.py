"""Keys and projects over the API (admin scope): an admin key administers its own project only.

    POST   /v1/keys          {"name", "scope"?, "expires"?} → the new key, shown once (201)
    GET    /v1/keys          the project's keys, never their secrets
    DELETE /v1/keys/{id}     revoke (another project's key is a 404, exactly like an unknown one)
    POST   /v1/projects      {"name"} → the new project and its first admin key, shown once (201)
    GET    /v1/projects      the key's own project
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..keys import AccessError, create_key, create_project
from ..storage import Store
from . import ApiError, envelope, json_object, route
from .records import iso

KEY_TIMES = ("created_at", "expires_at", "revoked_at")


def _key(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **{name: iso(row.get(name)) for name in KEY_TIMES if name in row}}


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(f"'{name}' must be a non-empty string.")
    return value


def access_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def create_key_(request: Request) -> Response:
        body = await json_object(request)
        name = _text(body, "name")
        scope = body.get("scope", "proxy")
        expires = body.get("expires")
        if expires is not None and not isinstance(expires, str):
            raise ApiError("'expires' must be a duration such as \"30d\" or an ISO date.")
        project = request.state.key.project_id
        try:
            new = await asyncio.to_thread(create_key, store, name or "", project=project, scope=str(scope),
                                          expires=expires)
        except AccessError as exc:
            raise ApiError(str(exc)) from None
        await keys.reload()     # usable at once by this process
        return envelope(_key(asdict(new)), status=201)

    async def list_keys(request: Request) -> Response:
        rows = await asyncio.to_thread(store.list_keys, project=request.state.key.project_id)
        return envelope([_key(row) for row in rows])

    async def revoke_key(request: Request) -> Response:
        key_id: str = request.path_params["key_id"]
        project = request.state.key.project_id
        if await asyncio.to_thread(store.revoke_key, key_id, project=project) == 0:
            raise ApiError(f"No active key {key_id!r}.", 404)
        await keys.reload()
        return envelope({"id": key_id, "revoked": True})

    async def create_project_(request: Request) -> Response:
        name = _text(await json_object(request), "name") or ""
        try:
            project_id = await asyncio.to_thread(create_project, store, name)
            admin = await asyncio.to_thread(create_key, store, f"{name} admin", project=project_id, scope="admin")
        except AccessError as exc:
            raise ApiError(str(exc)) from None
        await keys.reload()
        return envelope({"id": project_id, "name": name, "admin_key": _key(asdict(admin))}, status=201)

    async def list_projects(request: Request) -> Response:
        project = request.state.key.project_id
        rows = await asyncio.to_thread(store.list_projects)
        return envelope([{**row, "created_at": iso(row["created_at"])} for row in rows if row["id"] == project])

    return [
        route(keys, "/v1/keys", create_key_, "POST", scope="admin"),
        route(keys, "/v1/keys", list_keys, "GET", scope="admin"),
        route(keys, "/v1/keys/{key_id}", revoke_key, "DELETE", scope="admin"),
        route(keys, "/v1/projects", create_project_, "POST", scope="admin"),
        route(keys, "/v1/projects", list_projects, "GET", scope="admin"),
    ]
