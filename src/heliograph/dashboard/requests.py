"""/requests: the request log as a table, its filters in the query string, live tail and export.

    GET /requests          table; keyset pages (cursor=<created_at ms>.<id>) for the time order,
                           numbered pages (page=N) for the other sorts
    GET /requests/tail     SSE: `row` events carrying each new matching row's <tr>
    GET /requests/export   the current filter as CSV or JSONL (format=csv|jsonl), streamed

Query parameters (all optional; the same on the three routes): user, session, model, provider,
status (200, 4xx, 5xx, error), name (request name), prompt, version (prompt version), prop
(key=value, repeatable), cached=1, cost_min/cost_max (USD), latency_min/latency_max (ms), range
(1h, 24h, 7d, 30d), from/to (ISO time, UTC unless it says), q (free text in the bodies), sort, dir,
limit (rows a page, PAGE_ROWS by default).

The filter is built from the same checked tree as the API's (storage/filters.py), so the page is
the API's query, rendered. Free text: bodies are stored compressed, so `q` scans the newest rows
matching the other filters, at most TEXT_SCAN_ROWS of them, and says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..api.records import render_request
from ..bodies import unpack
from ..export import BODY_FIELDS, Format, iter_export, iter_write, records
from ..storage import FilterError, RequestQuery
from ..storage.filters import ALL, SORT_COLUMNS, TABLES, Branch, Condition, Node, SortKey, parse_sort
from .web import Ctx, Dashboard, render, url_with, view

PAGE_ROWS = 50
MAX_PAGE_ROWS = 500
TEXT_SCAN_ROWS = 5000
TEXT_SCAN_PAGE = 250
TAIL_POLL_SECONDS = 1.0
TAIL_LOOKBACK_MS = 120_000       # rows recorded late (long streams) still reach the tail
TAIL_MAX_SECONDS = 3600          # the browser reconnects after this
TAIL_BATCH = 200                 # newest rows a poll sends at most (a live view, not an export)
IMPLICIT_RANGE = "24h"           # for sorts other than time, when no time range is given
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SORTS = {"created_at": "Time", "latency": "Latency", "cost": "Cost", "total_tokens": "Tokens",
         "time_to_first_token": "TTFT", "status": "Status", "model": "Model", "user_id": "User"}
COLUMNS = TABLES["request_response_rmt"]
HIDDEN_PROPERTIES = ("helicone-session-id", "helicone-session-path", "helicone-session-name")


@dataclass(slots=True)
class View:
    node: Node = ALL
    sort: tuple[SortKey, ...] = ()
    sort_name: str = "created_at"
    descending: bool = True
    chips: list[tuple[str, str, str]] = field(default_factory=list)    # (label, value, param to drop)
    errors: list[str] = field(default_factory=list)
    text: str = ""
    implicit_range: str = ""        # a range applied because the sort needs one

    @property
    def keyset(self) -> bool:
        return self.sort_name == "created_at"


def _and(node: Node, other: Node) -> Node:
    return other if node == ALL else Branch(node, "and", other)


def _number(raw: str, what: str, errors: list[str]) -> float | None:
    try:
        return float(raw)
    except ValueError:
        errors.append(f"{what} must be a number, got {raw!r}.")
        return None


def _time(raw: str, errors: list[str]) -> int | None:
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        errors.append(f"{raw!r} is not a time such as 2026-01-31T14:00.")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_view(params: Any, now_ms: int | None = None) -> View:
    """The filter, sort and chips of a query string; a bad value is reported, not a 500."""
    v = View()
    get = params.get
    text_fields = (("user", "user_id", "User"), ("session", "session_id", "Session"), ("model", "model", "Model"),
                   ("provider", "provider", "Provider"), ("name", "request_name", "Name"),
                   ("prompt", "prompt_id", "Prompt"), ("version", "prompt_version", "Version"))
    for param, column, label in text_fields:
        value = (get(param) or "").strip()
        if value:
            v.node = _and(v.node, Condition(COLUMNS[column], "equals", value))
            v.chips.append((label, value, param))
    status = (get("status") or "").strip().lower()
    if status:
        status_col = COLUMNS["status"]
        if status in ("2xx", "3xx", "4xx", "5xx"):
            low = int(status[0]) * 100
            v.node = _and(v.node, Branch(Condition(status_col, "gte", low), "and", Condition(status_col, "lt", low + 100)))
        elif status == "error":
            v.node = _and(v.node, Branch(Condition(status_col, "lt", 200), "or", Condition(status_col, "gte", 400)))
        elif status == "success":
            v.node = _and(v.node, Branch(Condition(status_col, "gte", 200), "and", Condition(status_col, "lt", 300)))
        elif status.isdigit():
            v.node = _and(v.node, Condition(status_col, "equals", int(status)))
        else:
            v.errors.append(f"Status must be a code, 2xx, 4xx, 5xx, success or error; got {status!r}.")
        v.chips.append(("Status", status, "status"))
    for raw in params.getlist("prop") if hasattr(params, "getlist") else []:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            if raw.strip():
                v.errors.append(f"A property filter is key=value; got {raw!r}.")
            continue
        v.node = _and(v.node, Condition(COLUMNS["properties"], "equals", value.strip(), key.strip().lower()))
        v.chips.append((key.strip(), value.strip(), "prop"))
    if get("cached") in ("1", "true", "yes"):
        v.node = _and(v.node, Condition(COLUMNS["cached"], "equals", True))
        v.chips.append(("Cache", "hit", "cached"))
    for param, column, op, label in (("cost_min", "cost", "gte", "Cost ≥ $"), ("cost_max", "cost", "lte", "Cost ≤ $"),
                                     ("latency_min", "latency", "gte", "Latency ≥ ms"),
                                     ("latency_max", "latency", "lte", "Latency ≤ ms")):
        raw = (get(param) or "").strip()
        if raw:
            number = _number(raw, label, v.errors)
            if number is not None:
                v.node = _and(v.node, Condition(COLUMNS[column], op, number))
                v.chips.append((label, raw, param))
    created = COLUMNS["request_created_at"]
    window = (get("range") or "").strip()
    if window in RANGES:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        v.node = _and(v.node, Condition(created, "gte", now - RANGES[window] * 1000))
        v.chips.append(("Last", window, "range"))
    elif window and window != "all":
        v.errors.append(f"Range must be one of {', '.join(RANGES)} or all; got {window!r}.")
    for param, op, label in (("from", "gte", "From"), ("to", "lt", "To")):
        raw = (get(param) or "").strip()
        if raw:
            moment = _time(raw, v.errors)
            if moment is not None:
                v.node = _and(v.node, Condition(created, op, moment))
                v.chips.append((label, raw, param))
    v.text = (get("q") or "").strip()
    if v.text:
        v.chips.append(("Text", v.text, "q"))
    sort_name = get("sort") or "created_at"
    direction = (get("dir") or "desc").lower()
    if sort_name not in SORT_COLUMNS or direction not in ("asc", "desc"):
        v.errors.append(f"Cannot sort by {sort_name!r} {direction!r}.")
        sort_name, direction = "created_at", "desc"
    v.sort_name, v.descending = sort_name, direction == "desc"
    if sort_name != "created_at" and not window and not get("from") and not get("to"):
        # Another order has no index to walk: over all time it sorts every row (0.7 s at 1 M). A day
        # is read from the created_at index; a longer range is a choice the person makes.
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        v.node = _and(v.node, Condition(created, "gte", now - RANGES[IMPLICIT_RANGE] * 1000))
        v.implicit_range = IMPLICIT_RANGE
    try:
        v.sort = parse_sort({sort_name: direction})
    except FilterError as exc:
        v.errors.append(str(exc))
        v.sort = parse_sort(None)
    return v


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    at, _, request_id = raw.partition(".")
    if not at.isdigit() or not request_id:
        return None
    return int(at), request_id


def cursor_of(row: dict[str, Any]) -> str:
    return f"{row['created_at']}.{row['id']}"


def _text_in(row: dict[str, Any], needle: str) -> bool:
    for name in ("request_body", "response_body"):
        blob = row.get(name)
        if blob is not None and needle in unpack(blob).decode("utf-8", "replace").lower():
            return True
    return False


def fetch(ctx: Ctx, v: View, *, cursor: tuple[int, str] | None, page: int, limit: int) -> tuple[list[dict[str, Any]], bool, int]:
    """Up to `limit` raw rows, whether there are more, and how many rows a text search scanned."""
    store = ctx.store
    if not v.text:
        query = RequestQuery(project=ctx.project, filter=v.node, sort=v.sort, limit=limit + 1,
                             offset=0 if v.keyset else page * limit, include_bodies=False,
                             cursor=cursor if v.keyset else None)
        rows = store.query_requests(query)
        return rows[:limit], len(rows) > limit, 0
    needle, found, scanned, offset = v.text.lower(), [], 0, page * limit if not v.keyset else 0
    after = cursor if v.keyset else None
    skipped = 0
    while scanned < TEXT_SCAN_ROWS:
        query = RequestQuery(project=ctx.project, filter=v.node, sort=v.sort, limit=TEXT_SCAN_PAGE,
                             offset=0 if v.keyset else scanned, include_bodies=True, cursor=after)
        rows = store.query_requests(query)
        scanned += len(rows)
        for row in rows:
            if _text_in(row, needle):
                if skipped < offset:
                    skipped += 1
                    continue
                row.pop("request_body", None)
                row.pop("response_body", None)
                found.append(row)
                if len(found) > limit:
                    return found[:limit], True, scanned
        if len(rows) < TEXT_SCAN_PAGE:
            break
        if v.keyset:
            after = (rows[-1]["created_at"], rows[-1]["id"])
    return found, False, scanned


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    """What the table shows of a stored row: the API's record, less the session headers in properties."""
    record = render_request(row)
    record["shown_properties"] = {k: v for k, v in record["properties"].items()
                                  if k.lower() not in HIDDEN_PROPERTIES}
    record["created_ms"] = row["created_at"]
    return record


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@view("read")
async def requests_page(request: Request, ctx: Ctx) -> Response:
    v = parse_view(request.query_params)
    cursor = parse_cursor(request.query_params.get("cursor"))
    try:
        page = max(0, int(request.query_params.get("page") or 0))
    except ValueError:
        page = 0
    try:
        limit = min(MAX_PAGE_ROWS, max(1, int(request.query_params.get("limit") or PAGE_ROWS)))
    except ValueError:
        limit = PAGE_ROWS
    rows: list[dict[str, Any]] = []
    more, scanned, total = False, 0, None
    if not v.errors:
        try:
            rows, more, scanned = await ctx.call(fetch, ctx, v, cursor=cursor, page=page, limit=limit)
        except FilterError as exc:
            v.errors.append(str(exc))
    if not rows and v.node == ALL and not v.text and cursor is None and page == 0:
        total = await ctx.call(ctx.store.count_requests, project=ctx.project)
    next_url = None
    if more and rows:
        next_url = (_url(request, cursor=cursor_of(rows[-1])) if v.keyset
                    else _url(request, page=str(page + 1)))
    now_ms = int(time.time() * 1000)
    tail_qs = request.url.query
    return render(request, ctx, "requests.html", rows=[table_row(r) for r in rows], view=v, next_url=next_url,
                  first_url=_url(request) if (cursor or page) else None, scanned=scanned,
                  scan_cap=TEXT_SCAN_ROWS, empty_project=total == 0, base=base_url(request),
                  tail_url=f"/requests/tail?{_drop(tail_qs, 'cursor', 'page')}&since={now_ms - TAIL_LOOKBACK_MS}",
                  live=not cursor and not page and v.keyset and v.descending,
                  sorts=SORTS, export_qs=_drop(tail_qs, "cursor", "page", "sort", "dir"))


def _drop(query: str, *names: str) -> str:
    return urlencode([(k, val) for k, val in parse_qsl(query, keep_blank_values=False) if k not in names])


def _url(request: Request, **changes: str) -> str:
    return url_with(request, **changes)


@view("read")
async def tail(request: Request, ctx: Ctx) -> Response:
    """New rows matching the filter as SSE `row` events (HTML of a <tr>); the page drops ones it shows."""
    v = parse_view(request.query_params)
    if v.errors:
        return Response("\n".join(v.errors), status_code=400, media_type="text/plain")
    try:
        since = int(request.query_params.get("since") or 0)
    except ValueError:
        since = 0
    since = max(since, int(time.time() * 1000) - TAIL_LOOKBACK_MS)
    template = ctx.dashboard.templates.get_template("_request_row.html")

    async def events() -> AsyncIterator[str]:
        seen: dict[str, int] = {}          # id → created_at of the rows sent, within the window
        started = time.monotonic()
        newest_first = parse_sort({"created_at": "desc"})
        yield "retry: 2000\n\n"
        while time.monotonic() - started < TAIL_MAX_SECONDS:
            if await request.is_disconnected():
                return
            if await ctx.dashboard.context(request) is None:     # logged out, or the key revoked
                yield "event: end\ndata: logged out\n\n"
                return
            # A moving window: rows recorded late (a long stream) still arrive; the query stays small.
            lower = max(since, int(time.time() * 1000) - TAIL_LOOKBACK_MS)
            node = _and(v.node, Condition(COLUMNS["request_created_at"], "gte", lower))
            query = RequestQuery(project=ctx.project, filter=node, limit=TAIL_BATCH, sort=newest_first,
                                 include_bodies=bool(v.text))
            try:
                rows = await ctx.call(ctx.store.query_requests, query)
            except Exception:       # the store may be busy; the next poll tries again
                rows = []
            for row in reversed(rows):
                if row["id"] in seen or (v.text and not _text_in(row, v.text.lower())):
                    continue
                seen[row["id"]] = row["created_at"]
                html = template.render(r=table_row(row), request=request, ctx=ctx)
                data = "\n".join(f"data: {line}" for line in html.strip().splitlines())
                yield f"event: row\nid: {row['id']}\n{data}\n\n"
            seen = {k: at for k, at in seen.items() if at >= lower}
            yield ": keep-alive\n\n"
            await asyncio.sleep(TAIL_POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


@view("read")
async def export(request: Request, ctx: Ctx) -> Response:
    v = parse_view(request.query_params)
    if v.errors:
        return Response("\n".join(v.errors), status_code=400, media_type="text/plain")
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in ("csv", "jsonl"):
        return Response("format must be csv or jsonl", status_code=400, media_type="text/plain")
    with_bodies = request.query_params.get("bodies") in ("1", "true")
    kind: Format = "csv" if fmt == "csv" else "jsonl"
    if v.text:
        chunks = iter_write(_text_matches(records(ctx.store, v.node, project=ctx.project, with_bodies=True),
                                          v.text.lower(), with_bodies), kind, with_bodies=with_bodies)
    else:
        chunks = iter_export(ctx.store, kind, v.node, project=ctx.project, with_bodies=with_bodies)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(chunks, media_type=media, headers={
        "content-disposition": f'attachment; filename="heliograph-requests-{stamp}.{fmt}"'})


def _text_matches(rendered: Iterator[dict[str, Any]], needle: str, with_bodies: bool) -> Iterator[dict[str, Any]]:
    """Records whose bodies contain `needle` (an export reads every row: no scan limit here)."""
    for record in rendered:
        bodies = [record.pop(name) for name in BODY_FIELDS]
        if any(body is not None and needle in (body if isinstance(body, str) else orjson.dumps(body).decode()).lower()
               for body in bodies):
            if with_bodies:
                record.update(zip(BODY_FIELDS, bodies))
            yield record


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    return [
        Route("/requests", requests_page),
        Route("/requests/tail", tail),
        Route("/requests/export", export),
    ]

