"""The web dashboard: server-rendered pages over the same queries as the API.

    web.py        Dashboard (store, keys, settings), the session cookie, @view(scope), render, filters
    login.py      /, /login, /logout
    requests.py   /requests (table, filters, keyset paging, live tail, export)
    request_detail.py  /requests/{id}
    analytics.py  /analytics (charts.py draws the SVG)
    sessions.py   /sessions, /sessions/{id}
    users.py      /users, /users/{id}
    prompts.py    /prompts, /prompts/{id} (versions compared, diff, playground, environments)
    keys.py       /keys (admin): keys and budgets
    alerts.py     /alerts, /alerts/{id}: rules, states, history, webhooks, delivery log
    templates/, static/   Jinja templates and our own CSS/JS (no CDN, no third-party code)

Each page module has `routes(dashboard) -> list[BaseRoute]`; `dashboard_routes` collects them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from .web import HERE, Dashboard

__all__ = ["PREFIXES", "Dashboard", "dashboard_routes"]

# Page modules, in routing order; a module missing for now (being written) is skipped.
# /requests/tail and /requests/export live in requests.py and come before request_detail's /requests/{id}.
MODULES = (
    "login",
    "requests",
    "keys",
    "request_detail",   # /requests/{id}
    "analytics",        # /analytics
    "sessions",         # /sessions, /sessions/{id}
    "users",            # /users, /users/{id}
    "prompts",          # /prompts, /prompts/{id}
    "alerts",           # /alerts, /alerts/{id}
)

# Paths app.py sends to the dashboard (everything else not under /api or ops is proxied).
PREFIXES = ("/login", "/logout", "/requests", "/analytics", "/sessions", "/users", "/keys", "/prompts",
            "/alerts", "/static/")


class _Static:
    """Package static files, with nosniff and a cache lifetime."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=HERE / "static")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff"),
                                      (b"cache-control", b"public, max-age=300")]
            await send(message)
        await self.files(scope, receive, send_with_headers)


def dashboard_routes(dashboard: Dashboard) -> list[BaseRoute]:
    routes: list[BaseRoute] = [Mount("/static", app=_Static(), name="static")]
    for name in MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        make: Callable[[Dashboard], list[BaseRoute]] = module.routes
        routes.extend(make(dashboard))
    return routes
