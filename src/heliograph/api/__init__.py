"""The management API under /api: thin handlers — parse, query, serialise.

Every answer is `{"data": …, "error": null}` or `{"data": null, "error": "<message>"}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import AuthError
from ..proxy.auth import KeyCache
from ..storage import Store
from .records import render_request


def envelope(data: Any = None, error: str | None = None, status: int = 200) -> Response:
    return Response(orjson.dumps({"data": data, "error": error}), status_code=status,
                    media_type="application/json")


Handler = Callable[[Request], Awaitable[Response]]


def authenticated(keys: KeyCache, handler: Handler) -> Handler:
    async def wrapper(request: Request) -> Response:
        header = request.headers.get("authorization") or request.headers.get("helicone-auth")
        try:
            request.state.key_id = await keys.authenticate(header)
        except AuthError:
            return envelope(error="Unauthorized: send 'Authorization: Bearer <key>' with a key from "
                                  "'heliograph keys create'.", status=401)
        return await handler(request)
    return wrapper


def api_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def get_request(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        row = await asyncio.to_thread(store.get_request, request_id)
        if row is None:
            return envelope(error=f"No request with id {request_id!r}.", status=404)
        return envelope(render_request(row))

    return [
        Route("/api/v1/request/{request_id}", authenticated(keys, get_request), methods=["GET"]),
    ]
