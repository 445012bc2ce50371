"""Analytics and property endpoints: parse, query (storage/analytics.py), render times as ISO 8601.

    POST /v1/analytics/query       {filter, timeFilter, bucket, groupBy, limit} → summary, groups, series
    GET  /v1/property              property keys with request counts and cost   (?start=&end=)
    GET  /v1/property/{key}        per value: requests, cost, tokens, latency   (?start=&end=&limit=)

Times in: ISO 8601 (`{"start", "end"}`), or Helicone's `startTimeUnixMs`/`endTimeUnixMs` and
`startTimeUnixSeconds`/`endTimeUnixSeconds`. Without a time filter: the last 24 hours (analytics)
or all time (properties, sessions, users).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..storage import Store
from ..storage.analytics import GROUPS, MAX_BUCKETS, PROPERTY_GROUP, AnalyticsQuery
from ..storage.filters import iso_ms, parse_filter
from ..storage.rollup_schema import LEVEL_MS
from ..storage.sessions import FOREVER
from . import ApiError, envelope, json_object, route
from .records import iso

DAY_MS = 86_400_000
MAX_GROUPS = 1000
_UNITS = {"UnixMs": 1, "UnixSeconds": 1000}


def parse_time(value: Any, where: str) -> int:
    """An ISO 8601 text (UTC when no offset is given) → epoch ms."""
    ms = iso_ms(value)
    if ms is not None:
        return ms
    raise ApiError(f"'{where}' must be an ISO 8601 time such as \"2025-01-31T12:00:00Z\", got {value!r}.")


def parse_time_filter(raw: Any, default_span_ms: int | None) -> tuple[int, int]:
    """[start, end) in ms from a time filter; `default_span_ms` None means all time when absent."""
    now = int(time.time() * 1000)
    if raw is None:
        return (0, FOREVER) if default_span_ms is None else (now - default_span_ms, now)
    if not isinstance(raw, dict):
        raise ApiError(f"'timeFilter' must be an object such as {{\"start\": \"…\", \"end\": \"…\"}}, got {raw!r}.")
    bounds: list[int] = []
    for edge in ("start", "end"):
        if edge in raw:
            bounds.append(parse_time(raw[edge], f"timeFilter.{edge}"))
            continue
        for suffix, scale in _UNITS.items():
            name = f"{edge}Time{suffix}"
            if name in raw:
                value = raw[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise ApiError(f"'timeFilter.{name}' must be a non-negative number, got {value!r}.")
                bounds.append(int(value * scale))
                break
        else:
            bounds.append(0 if edge == "start" else (now if default_span_ms is not None else FOREVER))
    start, end = bounds
    if start >= end:
        raise ApiError(f"'timeFilter' is empty: start ({iso(start)}) must be before end ({iso(end)}).")
    return start, min(end, FOREVER)


def parse_int(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(f"'{name}' must be an integer from {low} to {high}, got {value!r}.")
    return value


def parse_analytics(body: Mapping[str, Any], *, project: str) -> AnalyticsQuery:
    node = parse_filter(body.get("filter", "all"))
    start, end = parse_time_filter(body.get("timeFilter"), DAY_MS)
    bucket = body.get("bucket", "hour")
    if bucket is not None and bucket not in LEVEL_MS:
        raise ApiError(f"'bucket' must be \"minute\", \"hour\", \"day\" or null, got {bucket!r}.")
    if bucket is not None and (end - start) / LEVEL_MS[bucket] > MAX_BUCKETS:
        raise ApiError(f"'bucket' {bucket!r} over this timeFilter makes more than {MAX_BUCKETS} buckets: "
                       "use a coarser bucket or a shorter range.")
    group_by = body.get("groupBy")
    valid_group = group_by is None or group_by in GROUPS or (
        isinstance(group_by, str) and group_by.startswith(PROPERTY_GROUP) and len(group_by) > len(PROPERTY_GROUP))
    if not valid_group:
        raise ApiError(f"'groupBy' must be null, one of {', '.join(GROUPS)}, or \"property:<key>\"; got {group_by!r}.")
    if isinstance(group_by, str) and group_by.startswith(PROPERTY_GROUP):
        group_by = group_by.lower()      # property keys are stored lower-cased
    return AnalyticsQuery(start, end, node, bucket, group_by, parse_int(body, "limit", 100, 1, MAX_GROUPS),
                          project=project)


def render_analytics(query: AnalyticsQuery, result: dict[str, Any]) -> dict[str, Any]:
    rendered = {"start": iso(query.start), "end": iso(query.end), "bucket": query.bucket,
                "groupBy": query.group_by, **result}
    for row in rendered.get("series", ()):
        row["time"] = iso(row["time"])
    return rendered


def _query_times(request: Request) -> tuple[int, int]:
    params = request.query_params
    start = parse_time(params["start"], "start") if "start" in params else 0
    end = parse_time(params["end"], "end") if "end" in params else FOREVER
    if start >= end:
        raise ApiError("'start' must be before 'end'.")
    return start, end


def analytics_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def analytics(request: Request) -> Response:
        query = parse_analytics(await json_object(request, empty_ok=True), project=request.state.key.project_id)
        result = await asyncio.to_thread(store.analytics, query)
        return envelope(render_analytics(query, result))

    async def property_keys(request: Request) -> Response:
        start, end = _query_times(request)
        return envelope(await asyncio.to_thread(store.property_keys, project=request.state.key.project_id,
                                                start=start, end=end))

    async def property_values(request: Request) -> Response:
        key: str = request.path_params["key"]
        if not key.strip() or "\x00" in key:
            raise ApiError(f"A property key must be non-empty text, got {key!r}.")
        start, end = _query_times(request)
        limit = parse_int(dict(request.query_params), "limit", 100, 1, MAX_GROUPS)
        return envelope(await asyncio.to_thread(store.property_values, key, project=request.state.key.project_id,
                                                start=start, end=end, limit=limit))

    return [
        route(keys, "/v1/analytics/query", analytics, "POST", scope="read"),
        route(keys, "/v1/property", property_keys, "GET", scope="read"),
        route(keys, "/v1/property/{key:path}", property_values, "GET", scope="read"),
    ]
