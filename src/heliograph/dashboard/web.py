"""What every dashboard page shares: the session, the scope check, CSRF, templates and headers.

A page is `async def page(request, ctx)` decorated with `@view("read")` (or "admin"); it returns
`render(request, ctx, "page.html", **context)` or any Starlette response. `ctx.key` is the logged-in
key: everything a page shows belongs to `ctx.key.project_id`. Store calls block, so run them with
`await ctx.call(store.method, ...)`.

The session is a cookie `hg_session` = base64(JSON {key hash, expiry, nonce}) "." HMAC, signed with
a random secret kept in the store (`instance_secrets`), so every process of a deployment agrees on
it; the key itself is never in a cookie, URL or page. The key is looked up again on every page, so
a revoked or expired key ends its sessions within KeyCache's reload interval. The CSRF token is an
HMAC of the session's nonce, checked on every POST (form field `csrf` or header `X-CSRF-Token`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
import orjson
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..auth import SCOPES, KeyCache, KeyInfo
from ..settings import Settings
from ..storage import Store

HERE = Path(__file__).parent
COOKIE = "hg_session"
SESSION_SECRET = "dashboard_session"
SESSION_SECONDS = 7 * 24 * 3600
PROJECT_NAME_TTL = 30.0

SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
                                "frame-ancestors 'none'"),
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}

T = TypeVar("T")


# -- formatting (Jinja filters) ------------------------------------------------------------------

def money(value: float | None, status: str | None = None) -> str:
    """$0.0042, $1.23, $1,234.56; None (or pricing status `unpriced`) is "unpriced", never $0."""
    if value is None or status == "unpriced":
        return "unpriced"
    v = float(value)
    if v == 0:
        return "$0.00"
    if abs(v) >= 1000:
        return f"${v:,.0f}"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    digits = 1 - int(f"{abs(v):e}".split("e")[1])     # two significant digits: $0.42, $0.0042
    text = f"{v:.{max(2, min(digits, 8))}f}"
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def ms(value: float | None) -> str:
    """840 ms, 1.2 s, 3.5 min; None is an en dash."""
    if value is None:
        return "–"
    v = float(value)
    if v < 1000:
        return f"{v:.0f} ms"
    if v < 60_000:
        return f"{v / 1000:.1f} s"
    return f"{v / 60_000:.1f} min"


def tokens(value: float | None) -> str:
    """123, 12.3k, 4.5M."""
    if value is None:
        return "–"
    v = float(value)
    if abs(v) < 1000:
        return f"{v:.0f}"
    if abs(v) < 1_000_000:
        return f"{v / 1000:.1f}k"
    if abs(v) < 1_000_000_000:
        return f"{v / 1_000_000:.1f}M"
    return f"{v / 1_000_000_000:.1f}B"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction 0..1 as a percentage: 0.123 → 12.3%. (Pass value/100 for a value already in percent.)"""
    if value is None:
        return "–"
    return f"{float(value) * 100:.{digits}f}%"


def to_datetime(value: int | float | str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, tz=UTC)     # epoch ms, as the store keeps time
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def when(value: int | float | str | datetime | None) -> Markup:
    """<time datetime="ISO">UTC text</time>; app.js rewrites the text in the browser's time zone."""
    if value is None or value == "":
        return Markup("–")
    moment = to_datetime(value).astimezone(UTC)
    iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Markup('<time datetime="{}">{}</time>').format(iso, moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


def query_string(params: dict[str, Any] | list[tuple[str, Any]]) -> str:
    items = params.items() if isinstance(params, dict) else params
    return urlencode([(k, v) for k, v in items if v not in (None, "")], doseq=True)


def url_with(request: Request, path: str | None = None, **changes: Any) -> str:
    """This page's URL (or `path`) with query parameters changed; a value of None removes one.
    Changing anything but the cursor resets paging."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    if "cursor" not in changes:
        params = [(k, v) for k, v in params if k != "cursor"]
    for name, value in changes.items():
        if isinstance(value, (list, tuple)):
            params.extend((name, v) for v in value)
        elif value is not None:
            params.append((name, value))
    qs = query_string(params)
    return (path or request.url.path) + (f"?{qs}" if qs else "")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    env.filters.update(money=money, ms=ms, tokens=tokens, pct=pct, when=when,
                       json=lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode())
    env.globals.update(url_with=url_with, query_string=query_string)
    return env


# -- the session ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Session:
    key_hash: str
    expires: int        # epoch seconds
    nonce: str


@dataclass(slots=True)
class Ctx:
    dashboard: Dashboard
    key: KeyInfo
    csrf: str
    project_name: str

    @property
    def store(self) -> Store:
        return self.dashboard.store

    @property
    def settings(self) -> Settings:
        return self.dashboard.settings

    @property
    def project(self) -> str:
        return self.key.project_id

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)


# (key, path, JSON body) → (status, response headers, body): a call through the gateway's own proxy,
# in process, as that key (app.py provides it; the prompt playground runs versions with it).
GatewayCall = Callable[[KeyInfo, str, bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


class Dashboard:
    def __init__(self, store: Store, keys: KeyCache, settings: Settings,
                 gateway_call: GatewayCall | None = None) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.gateway_call = gateway_call
        self.templates = environment()
        self._secret: bytes | None = None
        self._project_names: dict[str, tuple[float, str]] = {}

    async def secret(self) -> bytes:
        if self._secret is None:
            self._secret = (await asyncio.to_thread(self.store.instance_secret, SESSION_SECRET)).encode()
        return self._secret

    def _sign(self, secret: bytes, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).decode().rstrip("=")

    async def session_cookie(self, key_hash: str, key: KeyInfo) -> tuple[str, int]:
        """The cookie value for a new session, and its lifetime in seconds (never past the key's expiry)."""
        expires = int(time.time()) + SESSION_SECONDS
        if key.expires_at is not None:
            expires = min(expires, key.expires_at // 1000)
        payload = orjson.dumps({"h": key_hash, "e": expires, "n": secrets.token_urlsafe(16)})
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(await self.secret(), body.encode())}", max(0, expires - int(time.time()))

    async def read_session(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw or "." not in raw:
            return None
        body, _, signature = raw.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(await self.secret(), body.encode())):
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(str(data["h"]), int(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    async def csrf_token(self, session: Session) -> str:
        return self._sign(await self.secret(), f"csrf:{session.nonce}".encode())

    async def project_name(self, project_id: str) -> str:
        cached = self._project_names.get(project_id)
        if cached and time.monotonic() - cached[0] < PROJECT_NAME_TTL:
            return cached[1]
        try:
            projects = await asyncio.to_thread(self.store.list_projects)
        except Exception:
            return project_id
        name = next((str(p.get("name") or p["id"]) for p in projects if p.get("id") == project_id), project_id)
        self._project_names[project_id] = (time.monotonic(), name)
        return name

    async def context(self, request: Request) -> Ctx | None:
        """The logged-in key's context, or None when there is no valid session."""
        session = await self.read_session(request)
        if session is None:
            return None
        key = self.keys.by_hash(session.key_hash)
        if key is None:
            return None
        return Ctx(self, key, await self.csrf_token(session), await self.project_name(key.project_id))


# -- pages -----------------------------------------------------------------------------------------

def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def render_page(request: Request, dashboard: Dashboard, ctx: Ctx | None, template: str,
                status_code: int = 200, **context: Any) -> HTMLResponse:
    html = dashboard.templates.get_template(template).render(request=request, ctx=ctx, **context)
    return HTMLResponse(html, status_code=status_code)


def render(request: Request, ctx: Ctx, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered with `request`, `ctx` and `context`; the security headers are added by @view."""
    return render_page(request, ctx.dashboard, ctx, template, status_code, **context)


def message(request: Request, ctx: Ctx | None, title: str, text: str, status_code: int) -> Response:
    return secure(render_page(request, dashboard_of(request), ctx, "message.html", status_code,
                              title=title, text=text))


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return secure(RedirectResponse("/login?" + urlencode({"next": target}), status_code=303))


async def csrf_ok(request: Request, ctx: Ctx) -> bool:
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()     # cached by Starlette: the page reads it again for free
        value = form.get("csrf")
        token = value if isinstance(value, str) else None
    return token is not None and hmac.compare_digest(token, ctx.csrf)


Page = Callable[[Request, Ctx], Awaitable[Response]]


def view(scope: str = "read") -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """Make `async def page(request, ctx)` a Starlette endpoint: no session → /login; too small a
    scope → 403 naming the scope needed; a POST without the session's CSRF token → 403."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(page: Page) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(page)
        async def endpoint(request: Request) -> Response:
            ctx = await dashboard_of(request).context(request)
            if ctx is None:
                return login_redirect(request)
            if not ctx.key.allows(scope):
                return message(request, ctx, "Not allowed",
                               f"This page needs a key of scope '{scope}'; you are logged in with a key of "
                               f"scope '{ctx.key.scope}'.", 403)
            if request.method not in ("GET", "HEAD") and not await csrf_ok(request, ctx):
                return message(request, ctx, "Form expired",
                               "This form's security token is missing or stale; reload the page and try again.",
                               403)
            return secure(await page(request, ctx))
        return endpoint
    return decorate
