"""Sessions: `/sessions` (a sortable, searchable, paged list) and `/sessions/{id}` (the trace tree).

    GET /sessions?q=&sort=&dir=&range=&page=    store.sessions(SessionQuery), as POST /api/v1/session/query
    GET /sessions/{id}                          store.session(id, project=), as GET /api/v1/session/{id}

The tree is built by the store from Helicone-Session-Path; here it is flattened into rows (a node,
then its own requests, then its children) with each row's offset and length on the session's
timeline, which the template draws as SVG bars (the CSP forbids inline styles, so no CSS widths).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..storage.sessions import FOREVER, SESSION_SORTS, SessionQuery
from .request_detail import not_found
from .web import Ctx, render, view

PAGE_SIZE = 50
MAX_PAGE = 10_000
RANGES = {"1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000, "all": None}
SORT_LABELS = {"last_seen": "Last seen", "first_seen": "First seen", "requests": "Requests", "cost": "Cost",
               "duration": "Duration", "name": "Name"}
TIMELINE_WIDTH = 1000        # SVG user units of a waterfall bar's track
MAX_ROWS = 2_000             # waterfall rows drawn; the rest is summarised


def routes(dashboard: Any) -> list[Route]:
    return [Route("/sessions", sessions_page, methods=["GET"]),
            Route("/sessions/{session_id:path}", session_page, methods=["GET"])]


@dataclass(frozen=True, slots=True)
class ListState:
    """A list page's state, from and back to its query string."""
    sort: str
    descending: bool
    page: int
    range: str

    def start(self, now_ms: int) -> int:
        span = RANGES[self.range]
        return 0 if span is None else now_ms - span


def list_state(request: Request, sorts: Any, default_sort: str) -> ListState:
    params = request.query_params
    sort = params.get("sort", default_sort)
    if sort not in sorts:
        sort = default_sort
    try:
        page = min(max(int(params.get("page", "1")), 1), MAX_PAGE)
    except ValueError:
        page = 1
    span = params.get("range", "all")
    return ListState(sort, params.get("dir", "desc") != "asc", page, span if span in RANGES else "all")


@view("read")
async def sessions_page(request: Request, ctx: Ctx) -> Response:
    state = list_state(request, SESSION_SORTS, "last_seen")
    search = (request.query_params.get("q") or "").replace("\x00", "").strip() or None
    query = SessionQuery(project=ctx.project, start=state.start(int(time.time() * 1000)), end=FOREVER,
                         search=search, sort=state.sort, descending=state.descending,
                         offset=(state.page - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1)
    rows = await ctx.call(ctx.store.sessions, query)
    return render(request, ctx, "sessions.html", sessions=rows[:PAGE_SIZE], more=len(rows) > PAGE_SIZE,
                  state=state, search=search or "", sorts=SORT_LABELS, ranges=list(RANGES))


@view("read")
async def session_page(request: Request, ctx: Ctx) -> Response:
    session_id: str = request.path_params["session_id"]
    found = None if "\x00" in session_id else await ctx.call(ctx.store.session, session_id, project=ctx.project)
    if found is None:
        return not_found(request, ctx, "session", session_id)
    rows = waterfall(found["tree"]) if found["tree"] is not None else []
    return render(request, ctx, "session.html", s=found, rows=rows[:MAX_ROWS], hidden=max(0, len(rows) - MAX_ROWS),
                  width=TIMELINE_WIDTH)


def waterfall(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The tree as rows, depth first: a path node, its requests, then its child nodes.

    Each row has `depth`, `x` and `w` (its start and length on the session's timeline, in
    TIMELINE_WIDTH units; a zero-length request still gets a visible sliver)."""
    start, end = float(tree["started_at"]), float(tree["ended_at"])
    scale = TIMELINE_WIDTH / (end - start) if end > start else 0.0
    rows: list[dict[str, Any]] = []

    def place(row: dict[str, Any], begin: float, length: float) -> dict[str, Any]:
        x = (begin - start) * scale
        row["x"], row["w"] = round(x, 2), round(max(length * scale, 2.0), 2)
        row["x"] = min(row["x"], TIMELINE_WIDTH - row["w"])
        row["offset_ms"] = begin - start
        return row

    def visit(node: dict[str, Any], depth: int) -> None:
        if node["path"] != "/":
            rows.append(place({"kind": "node", "depth": depth, "name": node["name"], "path": node["path"],
                               "requests": node["request_count"], "cost": node["cost"],
                               "duration_ms": node["duration_ms"]},
                              float(node["started_at"]), float(node["duration_ms"])))
            depth += 1
        for r in node["requests"]:
            rows.append(place({"kind": "request", "depth": depth, "id": r["request_id"], "model": r["model"],
                               "status": r["status"], "cost": r["cost"], "duration_ms": r["latency_ms"],
                               "name": r["request_name"], "tokens": r["total_tokens"],
                               "error": r["status"] is None or r["status"] >= 400},
                              float(r["created_at"]), float(r["latency_ms"])))
        for child in node["children"]:
            visit(child, depth)

    visit(tree, 0)
    return rows
