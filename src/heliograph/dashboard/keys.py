"""/keys (admin): the project's keys (create, revoke), its budgets with this period's spend (set,
delete), and new projects.

A new key is shown once, on the page that answers the create form (a POST, so it is in no URL,
history entry or log line), and never again: the store keeps its hash only. A new project comes
with its first admin key, shown the same way: a key sees one project, so that key is how one
works in it (log in with it).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..api import ApiError
from ..api.budgets import set_from_body
from ..auth import SCOPES
from ..budgets import KINDS, PERIODS, statuses
from ..keys import AccessError, NewKey, create_key, create_project
from .web import Ctx, Dashboard, render, view


def _state(row: dict[str, Any], now_ms: int) -> str:
    if row.get("revoked_at"):
        return "revoked"
    if row.get("expires_at") is not None and row["expires_at"] <= now_ms:
        return "expired"
    return "active"


async def _page(request: Request, ctx: Ctx, *, new_key: NewKey | None = None, error: str = "",
                status_code: int = 200, new_project: str = "") -> Response:
    now_ms = int(time.time() * 1000)
    keys = await ctx.call(ctx.store.list_keys, project=ctx.project)
    for row in keys:
        row["state"] = _state(row, now_ms)
    budgets = await ctx.call(lambda: statuses(ctx.store.list_budgets(project=ctx.project), ctx.store.budget_spend))
    keys.sort(key=lambda k: (k["state"] != "active", -(k.get("created_at") or 0)))
    return render(request, ctx, "keys.html", status_code, keys=keys, budgets=budgets, scopes=SCOPES,
                  kinds=KINDS, periods=PERIODS, new_key=new_key, new_project=new_project, error=error,
                  form=dict(await request.form()) if request.method == "POST" else {})


@view("admin")
async def keys_page(request: Request, ctx: Ctx) -> Response:
    return await _page(request, ctx)


@view("admin")
async def create(request: Request, ctx: Ctx) -> Response:
    form = await request.form()
    name = str(form.get("name") or "").strip()
    scope = str(form.get("scope") or "proxy")
    expires = str(form.get("expires") or "").strip() or None
    try:
        new_key = await ctx.call(create_key, ctx.store, name, project=ctx.project, scope=scope, expires=expires)
    except AccessError as exc:
        return await _page(request, ctx, error=f"Not created: {exc}.", status_code=400)
    return await _page(request, ctx, new_key=new_key)


@view("admin")
async def revoke(request: Request, ctx: Ctx) -> Response:
    key_id = request.path_params["key_id"]
    if key_id == ctx.key.id:
        return await _page(request, ctx, error="That is the key this session is logged in with; "
                                               "log in with another admin key to revoke it.", status_code=400)
    await ctx.call(ctx.store.revoke_key, key_id, project=ctx.project)
    await ctx.dashboard.keys.reload()       # this process stops honouring it now, not in 5 s
    return RedirectResponse("/keys", status_code=303)


@view("admin")
async def set_budget(request: Request, ctx: Ctx) -> Response:
    form = await request.form()
    body: dict[str, Any] = {"target": form.get("target"), "period": form.get("period")}
    if body["target"] in ("key", "user"):
        body[str(body["target"])] = str(form.get(str(body["target"])) or "")
    given = str(form.get("usd") or "").strip().lstrip("$")
    try:
        body["usd"] = float(given)
    except ValueError:
        body["usd"] = given           # refused by name below
    try:
        await ctx.call(set_from_body, ctx.store, body, ctx.project)
    except ApiError as exc:
        return await _page(request, ctx, error=f"Budget not set: {exc.message}", status_code=400)
    return RedirectResponse("/keys#budgets", status_code=303)


@view("admin")
async def delete_budget(request: Request, ctx: Ctx) -> Response:
    await ctx.call(ctx.store.delete_budget, request.path_params["budget_id"], project=ctx.project)
    return RedirectResponse("/keys#budgets", status_code=303)


@view("admin")
async def new_project(request: Request, ctx: Ctx) -> Response:
    name = str((await request.form()).get("project") or "").strip()
    try:
        project_id = await ctx.call(create_project, ctx.store, name)
        admin = await ctx.call(create_key, ctx.store, f"{name} admin", project=project_id, scope="admin")
    except AccessError as exc:
        return await _page(request, ctx, error=f"Project not created: {exc}.", status_code=400)
    await ctx.dashboard.keys.reload()
    return await _page(request, ctx, new_key=admin, new_project=name)


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    return [
        Route("/keys", keys_page),
        Route("/keys/create", create, methods=["POST"]),
        Route("/keys/{key_id}/revoke", revoke, methods=["POST"]),
        Route("/keys/budgets", set_budget, methods=["POST"]),
        Route("/keys/budgets/{budget_id}/delete", delete_budget, methods=["POST"]),
        Route("/keys/projects", new_project, methods=["POST"]),
    ]
