"""Helicone's request endpoints: query, one record, feedback, scores, properties.

    POST /v1/request/query               filter tree, sort, offset, limit → records
    GET  /v1/request/{id}                one record (?includeRawStream=true: a stream's SSE too)
    POST /v1/request/{id}/feedback       {"rating": bool} → score helicone-score-feedback 1/0
    POST /v1/request/{id}/score          {"scores": {name: int | bool}}
    PUT  /v1/request/{id}/property       {"key": k, "value": v} or {k: v, …}

Records reach the store a moment after the response (the recorder batches), so the updating
endpoints wait up to RECORD_GRACE_SECONDS for an unknown id before answering 404: a client that
sends feedback right after its completion is not refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..storage import RequestQuery, Store
from ..storage.filters import (
    ALL,
    FEEDBACK_SCORE,
    INT64_MAX,
    Branch,
    Condition,
    Node,
    parse_filter,
    parse_sort,
)
from ..storage.filters import TABLES as FILTER_TABLES
from ..storage.queries import DEFAULT_LIMIT, MAX_LIMIT
from . import ApiError, envelope, json_object, route
from .records import render_request

RECORD_GRACE_SECONDS = 2.0
MAX_NAME_LENGTH = 256
MAX_ENTRIES = 100


def _int(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(f"'{name}' must be an integer from {low} to {high}, got {value!r}.")
    return value


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(f"'{name}' must be true or false, got {value!r}.")
    return value


def parse_query_body(body: Mapping[str, Any], *, project: str) -> RequestQuery:
    """Helicone's RequestQueryParams; unknown members (isPartOfExperiment…) are ignored."""
    node: Node = parse_filter(body.get("filter", "all"))
    columns = FILTER_TABLES["request_response_rmt"]
    # isCached / isScored narrow the result only when true; clients send false by default.
    if _flag(body, "isCached", False):
        node = _and(node, Condition(columns["cached"], "equals", True))
    if _flag(body, "isScored", False):
        node = _and(node, Condition(columns["scored"], "equals", True))
    return RequestQuery(project=project, filter=node, sort=parse_sort(body.get("sort")),
                        limit=_int(body, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                        offset=_int(body, "offset", 0, 0, INT64_MAX),
                        include_bodies=_flag(body, "includeInputs", True))


def _and(left: Node, right: Node) -> Node:
    return right if left == ALL else Branch(left, "and", right)


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH or "\x00" in value:
        raise ApiError(f"{what} must be a non-empty string of at most {MAX_NAME_LENGTH} characters, got {value!r}.")
    return value


def parse_scores(body: Mapping[str, Any]) -> dict[str, int]:
    scores = body.get("scores")
    if not isinstance(scores, dict) or not scores:
        raise ApiError('Send {"scores": {"<name>": <integer or boolean>, …}} with at least one score.')
    if len(scores) > MAX_ENTRIES:
        raise ApiError(f"At most {MAX_ENTRIES} scores per call.")
    parsed = {}
    for name, value in scores.items():
        _name(name, "A score name")
        if isinstance(value, bool):
            value = int(value)
        elif not isinstance(value, int):
            raise ApiError(f"Score {name!r} must be an integer or a boolean, got {value!r}"
                           f"{' (floats are not accepted; scale it to an integer)' if isinstance(value, float) else ''}.")
        elif abs(value) > INT64_MAX:
            raise ApiError(f"Score {name!r} is out of range (a 64-bit integer).")
        parsed[name] = value
    return parsed


def parse_properties(body: Mapping[str, Any]) -> dict[str, str]:
    """`{"key": k, "value": v}` (Helicone's API) or a plain map `{k: v, …}` (Helicone's docs)."""
    if set(body) == {"key", "value"} and isinstance(body["key"], str):
        pairs = {body["key"]: body["value"]}
    else:
        pairs = dict(body)
    if not pairs:
        raise ApiError('Send {"key": "<name>", "value": "<text>"} or a map {"<name>": "<text>", …}.')
    if len(pairs) > MAX_ENTRIES:
        raise ApiError(f"At most {MAX_ENTRIES} properties per call.")
    for key, value in pairs.items():
        _name(key, "A property name")
        if not isinstance(value, str) or "\x00" in value:
            raise ApiError(f"Property {key!r} must have a text value, got {value!r}.")
    return pairs


def _query_flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ApiError(f"'{name}' must be true or false, got {value!r}.")
    return value == "true"


def _request_id(request: Request) -> str:
    request_id: str = request.path_params["request_id"]
    if "\x00" in request_id:
        raise ApiError(f"No request with id {request_id!r}.", 404)
    return request_id


async def _update(update: Callable[[str, Any], bool], request_id: str, payload: Any) -> Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_GRACE_SECONDS
    while not await asyncio.to_thread(update, request_id, payload):
        if loop.time() >= deadline:
            raise ApiError(f"No request with id {request_id!r}.", 404)
        await asyncio.sleep(0.1)
    return envelope(status=201)


def request_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def query(request: Request) -> Response:
        parsed = parse_query_body(await json_object(request, empty_ok=True), project=request.state.key.project_id)
        rows = await asyncio.to_thread(store.query_requests, parsed)
        rendered = [render_request(row) for row in rows]
        if not parsed.include_bodies:
            for record in rendered:
                del record["request_body"], record["response_body"]
        return envelope(rendered)

    async def get_one(request: Request) -> Response:
        request_id = _request_id(request)
        raw_stream = _query_flag(request, "includeRawStream")
        row = await asyncio.to_thread(store.get_request, request_id, project=request.state.key.project_id)
        if row is None:
            raise ApiError(f"No request with id {request_id!r}.", 404)
        return envelope(render_request(row, raw_stream=raw_stream))

    async def feedback(request: Request) -> Response:
        request_id = _request_id(request)
        rating = (await json_object(request)).get("rating")
        if not isinstance(rating, bool):
            raise ApiError(f'Send {{"rating": true}} or {{"rating": false}}, got rating {rating!r}.')
        return await _update(partial(store.set_scores, project=request.state.key.project_id), request_id,
                             {FEEDBACK_SCORE: int(rating)})

    async def score(request: Request) -> Response:
        request_id = _request_id(request)
        return await _update(partial(store.set_scores, project=request.state.key.project_id), request_id,
                             parse_scores(await json_object(request)))

    async def property_(request: Request) -> Response:
        request_id = _request_id(request)
        return await _update(partial(store.set_properties, project=request.state.key.project_id), request_id,
                             parse_properties(await json_object(request)))

    return [
        route(keys, "/v1/request/query", query, "POST", scope="read"),
        route(keys, "/v1/request/{request_id}", get_one, "GET", scope="read"),
        # Write-only logging routes: an application's own `proxy` key may use them.
        route(keys, "/v1/request/{request_id}/feedback", feedback, "POST", scope="proxy"),
        route(keys, "/v1/request/{request_id}/score", score, "POST", scope="proxy"),
        route(keys, "/v1/request/{request_id}/property", property_, "PUT", scope="proxy"),
    ]
