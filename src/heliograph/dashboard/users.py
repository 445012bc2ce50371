"""Users: `/users` (sortable, paged) and `/users/{id}` (totals, cost over time, requests, erase).

    GET  /users?sort=&dir=&range=&page=     store.users(UserQuery), as POST /api/v1/user/query
    GET  /users/{id}?page=                  the user's totals, daily (or hourly) cost from the
                                            analytics rollups, and their requests, newest first
    POST /users/{id}/erase                  (admin) store.erase_user, as DELETE /api/v1/user/{id};
                                            the form must repeat the user id in `confirm`

The erase route comes before the page's `{id:path}` route, so an id ending in "/erase" can still be
shown (GET) while only a POST erases.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..api.erasure import MAX_USER_ID_LENGTH
from ..api.records import render_request
from ..storage import RequestQuery
from ..storage.analytics import AnalyticsQuery
from ..storage.filters import parse_filter
from ..storage.rollup_schema import LEVEL_MS
from ..storage.sessions import FOREVER, USER_SORTS, UserQuery
from .charts import Series, line_chart
from .request_detail import not_found
from .sessions import RANGES, list_state
from .web import Ctx, message, render, view

PAGE_SIZE = 50
SORT_LABELS = {"last_active": "Last active", "first_active": "First active", "total_requests": "Requests",
               "cost": "Cost", "total_tokens": "Tokens", "active_for": "Active days", "user_id": "User"}
MAX_CHART_BUCKETS = 400


def routes(dashboard: Any) -> list[Route]:
    return [Route("/users", users_page, methods=["GET"]),
            Route("/users/{user_id:path}/erase", erase_user, methods=["POST"]),
            Route("/users/{user_id:path}", user_page, methods=["GET"])]


@view("read")
async def users_page(request: Request, ctx: Ctx) -> Response:
    state = list_state(request, USER_SORTS, "last_active")
    query = UserQuery(project=ctx.project, start=state.start(int(time.time() * 1000)), end=FOREVER,
                      sort=state.sort, descending=state.descending,
                      offset=(state.page - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1)
    rows = await ctx.call(ctx.store.users, query)
    return render(request, ctx, "users.html", users=rows[:PAGE_SIZE], more=len(rows) > PAGE_SIZE, state=state,
                  sorts=SORT_LABELS, ranges=list(RANGES))


def _page(request: Request) -> int:
    try:
        return min(max(int(request.query_params.get("page", "1")), 1), 10_000)
    except ValueError:
        return 1


@view("read")
async def user_page(request: Request, ctx: Ctx) -> Response:
    user_id: str = request.path_params["user_id"]
    if not user_id or "\x00" in user_id:
        return not_found(request, ctx, "user", user_id)
    found = await ctx.call(ctx.store.users, UserQuery(project=ctx.project, user_ids=(user_id,)))
    page = _page(request)
    node = parse_filter({"request_response_rmt": {"user_id": {"equals": user_id}}})
    rows = await ctx.call(ctx.store.query_requests, RequestQuery(
        project=ctx.project, filter=node, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, include_bodies=False))
    if not found and not rows:
        return not_found(request, ctx, "user", user_id)
    user = found[0] if found else None
    chart = await cost_chart(ctx, node, user) if user else None
    records = [render_request(row) for row in rows[:PAGE_SIZE]]
    return render(request, ctx, "user.html", user_id=user_id, user=user, chart=chart, requests=records,
                  more=len(rows) > PAGE_SIZE, page=page, erase_url=f"/users/{quote(user_id, safe='')}/erase")


async def cost_chart(ctx: Ctx, node: Any, user: dict[str, Any]) -> Any:
    """Cost per day over the user's active span (per hour when it is under two days)."""
    first, last = int(user["first_active"]), int(user["last_active"])
    bucket = "hour" if last - first < 2 * LEVEL_MS["day"] else "day"
    size = LEVEL_MS[bucket]
    start = first // size * size
    end = max(last // size * size + size, start + size)
    start = max(start, end - MAX_CHART_BUCKETS * size)
    result = await ctx.call(ctx.store.analytics, AnalyticsQuery(project=ctx.project, start=start, end=end,
                                                                filter=node, bucket=bucket, brief=True))
    by_time = {int(point["time"]): point["cost"] for point in result.get("series", [])}
    times = list(range(start, end, size))
    values: list[float | None] = [by_time.get(t, 0.0) for t in times]
    return line_chart([Series("cost", values)], times, unit="usd", title=f"Cost per {bucket}", bucket_ms=size,
                      height=160)


@view("admin")
async def erase_user(request: Request, ctx: Ctx) -> Response:
    user_id: str = request.path_params["user_id"]
    form = await request.form()
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH or "\x00" in user_id:
        return not_found(request, ctx, "user", user_id)
    if form.get("confirm") != user_id:
        return message(request, ctx, "Not erased",
                       "To erase a user, type their id exactly in the confirmation field.", 400)
    erasure = await ctx.call(ctx.store.erase_user, user_id, project=ctx.project, actor=f"dashboard:key:{ctx.key.id}")
    removed = sum(erasure.deleted.values())
    details = ", ".join(f"{table}: {count}" for table, count in sorted(erasure.deleted.items()) if count)
    return message(request, ctx, "User erased",
                   f"Erased user {user_id!r}: {removed} rows removed ({details or 'nothing was stored'}). "
                   "Records still on their way to the store land afterwards: erase again once they are written.",
                   200)
