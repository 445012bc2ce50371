"""/ (to /login or /requests), /login and /logout.

Login takes a `read` or `admin` key from a form (never a URL), checks it like the API does, and sets
the signed session cookie (web.py). The login form has its own CSRF token, tied to a short-lived
pre-session cookie, so another site cannot log a browser in with the attacker's key.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..auth import MISS_RELOAD_AFTER, KeyExpired, KeyInfo, hash_key
from ..errors import AuthError
from .web import COOKIE, Dashboard, Ctx, dashboard_of, render_page, secure, view

LOGIN_COOKIE = "hg_login"


def _safe_next(target: str | None) -> str:
    """Only a path on this server: never `//host` or a scheme, so login cannot redirect elsewhere."""
    if (not target or not target.startswith("/") or "\\" in target
            or any(ord(ch) < 0x21 or ord(ch) == 0x7f for ch in target)      # browsers drop tabs: "/\t/x" is "//x"
            or target.startswith("//") or target.startswith("/login")):
        return "/requests"
    return target


async def home(request: Request) -> Response:
    ctx = await dashboard_of(request).context(request)
    return secure(RedirectResponse("/requests" if ctx else "/login", status_code=303))


async def _login_form(request: Request, dashboard: Dashboard, *, error: str = "", status: int = 200) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    csrf = dashboard._sign(await dashboard.secret(), f"login:{nonce}".encode())
    response = render_page(request, dashboard, None, "login.html", status, error=error, csrf=csrf,
                           next=_safe_next(request.query_params.get("next") or None))
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/login")
    return secure(response)


async def _authenticate(dashboard: Dashboard, key_text: str) -> KeyInfo:
    """As the proxy does; an unknown key is looked up once more after the key cache's miss interval,
    so a key created a moment ago logs in (and guessing keys here costs a second a try)."""
    try:
        return await dashboard.keys.authenticate(f"Bearer {key_text}")
    except KeyExpired:
        raise
    except AuthError:
        await asyncio.sleep(MISS_RELOAD_AFTER)
        return await dashboard.keys.authenticate(f"Bearer {key_text}")


async def login(request: Request) -> Response:
    dashboard = dashboard_of(request)
    if request.method == "GET":
        if await dashboard.context(request):
            return secure(RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303))
        return await _login_form(request, dashboard)
    form = await request.form()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    expected = dashboard._sign(await dashboard.secret(), f"login:{nonce}".encode())
    token = form.get("csrf")
    if not nonce or not isinstance(token, str) or not hmac.compare_digest(token, expected):
        return await _login_form(request, dashboard, status=403,
                                 error="This form's security token is missing or stale; try again.")
    raw = form.get("key")
    key_text = raw.strip() if isinstance(raw, str) else ""
    if not key_text:
        return await _login_form(request, dashboard, error="Paste a key.", status=400)
    try:
        key = await _authenticate(dashboard, key_text)
    except KeyExpired as exc:
        return await _login_form(request, dashboard, error=str(exc), status=401)
    except AuthError:
        return await _login_form(request, dashboard, status=401,
                                 error="This key is unknown or has been revoked.")
    if not key.allows("read"):
        return await _login_form(
            request, dashboard, status=403,
            error=f"This key's scope is '{key.scope}': the dashboard needs a key of scope 'read' or 'admin' "
                  f"('heliograph keys create --name NAME --scope read').")
    value, max_age = await dashboard.session_cookie(hash_key(key_text), key)
    next_value = form.get("next")
    response = RedirectResponse(_safe_next(next_value if isinstance(next_value, str) else None), status_code=303)
    response.set_cookie(COOKIE, value, max_age=max_age, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return secure(response)


@view("read")
async def logout(request: Request, ctx: Ctx) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
