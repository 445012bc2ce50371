"""Session and user endpoints (Helicone's /v1/session and /v1/user groups).

    POST /v1/session/query         {search, nameEquals, timeFilter, sort, offset, limit} → sessions
    GET  /v1/session/{session_id}  one session: totals and the tree built from Helicone-Session-Path
    POST /v1/user/query            {userIds, timeFilter, sort, offset, limit} → per-user usage
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..storage import Store
from ..storage.sessions import SESSION_SORTS, USER_SORTS, SessionQuery, UserQuery
from . import ApiError, envelope, json_object, route
from .analytics import parse_int, parse_time_filter
from .records import iso

MAX_LIMIT = 1000
MAX_USER_IDS = 1000
_SESSION_TIMES = ("created_at", "latest_request_created_at", "ended_at")
_USER_TIMES = ("first_active", "last_active")


def _sort(body: Mapping[str, Any], allowed: tuple[str, ...] | Mapping[str, str], default: str) -> tuple[str, bool]:
    raw = body.get("sort")
    if raw is None:
        return default, True
    if isinstance(raw, str):
        raw = {raw: "desc"}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ApiError(f"'sort' must be an object with one field, such as {{\"{default}\": \"desc\"}}; got {raw!r}.")
    (field, direction), = raw.items()
    if field not in allowed:
        raise ApiError(f"cannot sort by {field!r} (sortable: {', '.join(allowed)}).")
    if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
        raise ApiError(f"sort direction for {field!r} must be \"asc\" or \"desc\", got {direction!r}.")
    return field, direction.lower() == "desc"


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise ApiError(f"'{name}' must be text, got {value!r}.")
    return value


def parse_session_query(body: Mapping[str, Any], *, project: str) -> SessionQuery:
    start, end = parse_time_filter(body.get("timeFilter"), None)
    sort, descending = _sort(body, SESSION_SORTS, "last_seen")
    return SessionQuery(project=project, start=start, end=end, search=_text(body, "search"), name=_text(body, "nameEquals"),
                        sort=sort, descending=descending, offset=parse_int(body, "offset", 0, 0, 2**62),
                        limit=parse_int(body, "limit", 100, 1, MAX_LIMIT))


def parse_user_query(body: Mapping[str, Any], *, project: str) -> UserQuery:
    start, end = parse_time_filter(body.get("timeFilter"), None)
    user_ids = body.get("userIds") or []
    if not isinstance(user_ids, list) or not all(isinstance(u, str) and "\x00" not in u for u in user_ids):
        raise ApiError(f"'userIds' must be a list of user id strings, got {user_ids!r}.")
    if len(user_ids) > MAX_USER_IDS:
        raise ApiError(f"'userIds' may list at most {MAX_USER_IDS} ids.")
    sort, descending = _sort(body, USER_SORTS, "last_active")
    return UserQuery(project=project, start=start, end=end, user_ids=tuple(dict.fromkeys(user_ids)), sort=sort, descending=descending,
                     offset=parse_int(body, "offset", 0, 0, 2**62), limit=parse_int(body, "limit", 100, 1, MAX_LIMIT))


def _with_iso(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    for field in fields:
        if field in row:
            row[field] = iso(row[field])
    return row


def render_tree(node: dict[str, Any]) -> dict[str, Any]:
    node["started_at"], node["ended_at"] = iso(int(node["started_at"])), iso(int(node["ended_at"]))
    for row in node["requests"]:
        row["created_at"] = iso(row["created_at"])
        row.pop("session_path", None)
    for child in node["children"]:
        render_tree(child)
    return node


def session_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def sessions(request: Request) -> Response:
        query = parse_session_query(await json_object(request, empty_ok=True), project=request.state.key.project_id)
        rows = await asyncio.to_thread(store.sessions, query)
        return envelope([_with_iso(row, _SESSION_TIMES) for row in rows])

    async def session(request: Request) -> Response:
        session_id: str = request.path_params["session_id"]
        found = None if "\x00" in session_id else await asyncio.to_thread(store.session, session_id,
                                                                           project=request.state.key.project_id)
        if found is None:
            raise ApiError(f"No session with id {session_id!r}.", 404)
        if found["tree"] is not None:
            render_tree(found["tree"])
        return envelope(_with_iso(found, _SESSION_TIMES))

    async def users(request: Request) -> Response:
        query = parse_user_query(await json_object(request, empty_ok=True), project=request.state.key.project_id)
        rows = await asyncio.to_thread(store.users, query)
        return envelope([_with_iso(row, _USER_TIMES) for row in rows])

    return [
        route(keys, "/v1/session/query", sessions, "POST", scope="read"),
        route(keys, "/v1/session/{session_id}", session, "GET", scope="read"),
        route(keys, "/v1/user/query", users, "POST", scope="read"),
    ]
