"""The management API under /api: thin handlers — parse, query, serialise.

Every answer is `{"data": …, "error": null}` or `{"data": null, "error": "<message>"}`: bad
input is a 4xx naming what is wrong, an unreachable store a 503, never a stack trace. The routes
are a Starlette app of their own, mounted at /api, so its 404 and 405 use the envelope too; every
route must appear in the OpenAPI document (`openapi.py`; a test checks).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from ..errors import AuthError
from ..auth import KeyCache, KeyExpired
from ..recording.ids import RequestIds
from ..recording.record import RawRecord
from ..storage import FilterError, Store, StoreUnavailable
from ..vault import ProviderKeys

log = logging.getLogger("heliograph.api")

PREFIX = "/api"
_CONVERTER = re.compile(r":\w+}")


class ApiError(Exception):
    """Bad input or a missing thing, answered in the envelope with its status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def envelope(data: Any = None, error: str | None = None, status: int = 200) -> Response:
    return Response(orjson.dumps({"data": data, "error": error}), status_code=status,
                    media_type="application/json")


Handler = Callable[[Request], Awaitable[Response]]


def authenticated(keys: KeyCache, handler: Handler, *, scope: str) -> Handler:
    """`handler` for keys of `scope` or wider (auth.py); the key is `request.state.key`, and
    everything the handler reads or changes is the key's project's."""
    async def wrapper(request: Request) -> Response:
        header = request.headers.get("authorization") or request.headers.get("helicone-auth")
        try:
            key = await keys.authenticate(header)
        except KeyExpired as exc:
            return envelope(error=f"Unauthorized: {exc.message}", status=401)
        except AuthError:
            return envelope(error="Unauthorized: send 'Authorization: Bearer <key>' with a key from "
                                  "'heliograph keys create'.", status=401)
        if not key.allows(scope):
            return envelope(error=f"Forbidden: this route needs a key of scope '{scope}'"
                                  f"{' or admin' if scope == 'read' else ''}; this key's scope is "
                                  f"'{key.scope}'.", status=403)
        request.state.key, request.state.key_id = key, key.id
        return await handler(request)
    wrapper.scope = scope  # type: ignore[attr-defined]   # read by the OpenAPI document
    return wrapper


def route(keys: KeyCache, path: str, handler: Handler, method: str, *, scope: str) -> Route:
    """One /api route for keys of `scope` or wider."""
    return Route(path, authenticated(keys, handler, scope=scope), methods=[method])


async def json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    body = await request.body()
    if not body.strip() and empty_ok:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object.")
    return data


# -- errors, mapped once for every route --------------------------------------------------------

async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return envelope(error=exc.message, status=exc.status)


async def _filter_error(request: Request, exc: Exception) -> Response:
    return envelope(error=f"Bad filter: {exc}", status=400)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("store unavailable for %s: %s", request.url.path, exc)
    return envelope(error="The store is unavailable right now; try again shortly.", status=503)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"No API route {request.url.path}; see /api/openapi.json.",
               405: f"Method {request.method} is not allowed on {request.url.path}."}
    return envelope(error=message.get(exc.status_code, str(exc.detail)), status=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(error="Internal error; the gateway log has the details.", status=500)


def api_app(store: Store, keys: KeyCache, submit: Callable[[RawRecord], None] | None = None,
            ids: RequestIds | None = None, provider_keys: ProviderKeys | None = None) -> Starlette:
    """`submit`: the recorder's, for async logging (without it those routes answer 503);
    `provider_keys`: the gateway's (without it, one with no secret key: nothing can be stored)."""
    from .access import access_routes
    from .alerts import alert_routes
    from .analytics import analytics_routes
    from .asynclog import async_log_routes
    from .budgets import budget_routes
    from .erasure import erasure_routes
    from .openapi import document_scopes, openapi_route
    from .prompts import prompt_routes
    from .provider_keys import provider_key_routes
    from .requests import request_routes
    from .sessions import session_routes

    routes: list[BaseRoute] = [*request_routes(store, keys)]
    routes += [*async_log_routes(keys, submit, ids), *erasure_routes(store, keys)]
    routes += [*analytics_routes(store, keys), *session_routes(store, keys), *access_routes(store, keys)]
    routes += provider_key_routes(store, keys, provider_keys)
    routes += budget_routes(store, keys)
    routes += prompt_routes(store, keys)
    routes += alert_routes(store, keys)
    document_scopes([(PREFIX + _CONVERTER.sub("}", route.path), method, route.endpoint.scope)
                     for route in routes if isinstance(route, Route) and hasattr(route.endpoint, "scope")
                     for method in route.methods or () if method != "HEAD"])
    routes.append(openapi_route())
    return Starlette(routes=routes, exception_handlers={
        ApiError: _api_error, FilterError: _filter_error, StoreUnavailable: _unavailable,
        HTTPException: _http_error, Exception: _internal_error})


def api_routes(store: Store, keys: KeyCache, submit: Callable[[RawRecord], None] | None = None,
               ids: RequestIds | None = None, provider_keys: ProviderKeys | None = None) -> list[BaseRoute]:
    return [Mount(PREFIX, app=api_app(store, keys, submit, ids, provider_keys))]


def mounted_routes(app: Starlette) -> list[tuple[str, set[str]]]:
    """(path, methods) of every route of the API app, with the /api prefix, HEAD left out."""
    found = []
    for route in app.routes:
        if isinstance(route, Route):
            path = _CONVERTER.sub("}", route.path)    # "{user_id:path}" is "{user_id}" in OpenAPI
            found.append((PREFIX + path, set(route.methods or ()) - {"HEAD"}))
    return found
