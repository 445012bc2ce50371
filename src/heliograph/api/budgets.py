"""Budgets over the API (admin scope), in the key's own project (heliograph/budgets.py).

    POST   /v1/budgets               {"target": "key"|"project"|"user", "key"?, "user"?, "usd", "period"}
                                     → the budget (201); setting one again replaces its amount
    GET    /v1/budgets               the project's budgets, each with its recorded spend this period,
                                     what remains, when it resets and how many calls were unpriced
    DELETE /v1/budgets/{budget_id}   another project's budget is a 404, exactly like an unknown one

Gateways enforce a change within 5 s (budgets are reloaded like keys).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..budgets import KINDS, BudgetError, parse_period, parse_usd, resolve_key, statuses
from ..storage import Store
from . import ApiError, envelope, json_object, route

MAX_USER_ID = 1024


def _target(store: Store, body: dict[str, Any], project: str) -> tuple[str, str]:
    """(kind, target id) from the body, checked; ApiError naming the field otherwise."""
    kind = body.get("target")
    if kind not in KINDS:
        raise ApiError(f"'target' must be one of {', '.join(KINDS)}, got {kind!r}.")
    for field in ("key", "user"):
        if field in body and kind != field:
            raise ApiError(f"'{field}' is only for target '{field}'.")
    if kind == "project":
        return kind, project
    value = body.get(kind)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_USER_ID:
        raise ApiError(f"'{kind}' must be a non-empty string of at most {MAX_USER_ID} characters "
                       f"(the {'key id or name' if kind == 'key' else 'user id'}).")
    if kind == "user":
        return kind, value
    try:
        return kind, str(resolve_key(store.list_keys(project=project), value)["id"])
    except BudgetError as exc:
        raise ApiError(f"'key': {exc} in this project.") from None


def set_from_body(store: Store, body: dict[str, Any], project: str) -> dict[str, Any]:
    """Set the budget a request body describes (the API's and the dashboard's form); ApiError naming the field."""
    kind, target = _target(store, body, project)
    usd = body.get("usd")
    if isinstance(usd, str):
        raise ApiError(f"'usd' must be a number, got {usd!r}.")
    try:
        amount = parse_usd(usd)
    except BudgetError as exc:
        raise ApiError(f"'usd': {exc}.") from None
    try:
        period = parse_period(body.get("period"))
    except BudgetError as exc:
        raise ApiError(f"'period': {exc}.") from None
    row = store.set_budget(project, kind, target, amount, period)
    return statuses([row], store.budget_spend)[0]


def budget_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def set_budget(request: Request) -> Response:
        body = await json_object(request)
        shown = await asyncio.to_thread(set_from_body, store, body, request.state.key.project_id)
        return envelope(shown, status=201)

    async def list_budgets(request: Request) -> Response:
        project = request.state.key.project_id
        shown = await asyncio.to_thread(lambda: statuses(store.list_budgets(project=project), store.budget_spend))
        return envelope(shown)

    async def delete_budget(request: Request) -> Response:
        budget_id: str = request.path_params["budget_id"]
        if not await asyncio.to_thread(store.delete_budget, budget_id, project=request.state.key.project_id):
            raise ApiError(f"No budget {budget_id!r}.", 404)
        return envelope({"id": budget_id, "deleted": True})

    return [
        route(keys, "/v1/budgets", set_budget, "POST", scope="admin"),
        route(keys, "/v1/budgets", list_budgets, "GET", scope="admin"),
        route(keys, "/v1/budgets/{budget_id}", delete_budget, "DELETE", scope="admin"),
    ]
