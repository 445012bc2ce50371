"""The dashboard's HTML, through a real `heliograph serve`, without a browser (issue 10).

Login and sessions, scopes, CSRF, security headers, escaping of recorded values, the requests
table's filters, paging, live tail and export, and the keys page.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from heliograph.dashboard.web import money, ms, pct, tokens, when

from .conftest import Gateway, run_cli, start_gateway

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    gateway = start_gateway(tmp_path_factory.mktemp("dashboard"), fake.url)
    yield gateway
    gateway.stop()


_open: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def client_for(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=10)
    _open.append(client)
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def login(url: str, key: str) -> httpx.Client:
    client = client_for(url)
    form = client.get("/login")
    assert form.status_code == 200
    answer = client.post("/login", data={"key": key, "csrf": csrf_of(form.text)})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/requests"
    return client


def new_key(gw: Gateway, scope: str, name: str | None = None) -> str:
    created = run_cli("keys", "create", "--name", name or f"k-{uuid.uuid4().hex[:6]}", "--scope", scope, env=gw.env)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def send(gw: Gateway, content: str = "hello", *, model: str = "gpt-4o-mini", headers: dict[str, str] | None = None) -> str:
    request_id = str(uuid.uuid4())
    r = httpx.post(f"{gw.url}/openai/v1/chat/completions", timeout=10,
                   headers={**gw.auth, "Authorization": "Bearer sk-test", "Helicone-Request-Id": request_id,
                            **(headers or {})},
                   json={"model": model, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    gw.record(request_id)
    return request_id


def test_formatting_for_people() -> None:
    assert money(None) == "unpriced" and money(0.5, "unpriced") == "unpriced"
    assert money(0.0042) == "$0.0042" and money(1.234) == "$1.23" and money(0.0) == "$0.00"
    assert ms(840) == "840 ms" and ms(1234) == "1.2 s"
    assert tokens(12345) == "12.3k" and tokens(999) == "999"
    assert pct(0.123) == "12.3%"
    assert str(when(0)) == '<time datetime="1970-01-01T00:00:00.000Z">1970-01-01 00:00:00 UTC</time>'


def test_root_redirects_to_login_then_to_requests(gw: Gateway) -> None:
    r = httpx.get(gw.url + "/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = httpx.get(gw.url + "/requests")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    client = login(gw.url, gw.key)
    assert client.get("/").headers["location"] == "/requests"


def test_login_sets_a_signed_httponly_cookie_without_the_key(gw: Gateway) -> None:
    client = client_for(gw.url)
    form = client.get("/login")
    assert 'name="key"' in form.text
    answer = client.post("/login", data={"key": gw.key, "csrf": csrf_of(form.text)})
    cookie = answer.headers["set-cookie"]
    assert "hg_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert gw.key not in cookie and gw.key[6:] not in cookie
    page = client.get("/requests")
    assert page.status_code == 200 and gw.key not in page.text and 'name="key"' not in page.text
    # a tampered cookie is no session
    value = client.cookies["hg_session"]
    tampered = httpx.get(gw.url + "/requests", cookies={"hg_session": value[:-3] + "AAA"})
    assert tampered.status_code == 303


def test_a_wrong_key_and_a_proxy_key_are_refused(gw: Gateway) -> None:
    client = client_for(gw.url)
    form = client.get("/login")
    bad = client.post("/login", data={"key": "sk-hg-nope", "csrf": csrf_of(form.text)})
    assert bad.status_code == 401 and "hg_session" not in client.cookies
    proxy_key = new_key(gw, "proxy")
    form = client.get("/login")
    refused = client.post("/login", data={"key": proxy_key, "csrf": csrf_of(form.text)})
    assert refused.status_code == 403
    assert "scope &#39;read&#39;" in refused.text or "scope 'read'" in refused.text
    assert "hg_session" not in client.cookies and proxy_key not in refused.text


def test_a_read_key_logs_in_but_keys_page_needs_admin(gw: Gateway) -> None:
    client = login(gw.url, new_key(gw, "read"))
    assert client.get("/requests").status_code == 200
    keys = client.get("/keys")
    assert keys.status_code == 403 and "admin" in keys.text
    assert 'href="/keys"' not in client.get("/requests").text


def test_csrf_is_required_on_every_form(gw: Gateway) -> None:
    # login without the pre-session token
    assert httpx.post(gw.url + "/login", data={"key": gw.key}).status_code == 403
    client = login(gw.url, gw.key)
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    assert client.post("/keys/create", data={"name": "x", "scope": "read"}).status_code == 403
    assert client.get("/requests").status_code == 200      # still logged in
    page = client.get("/requests")
    out = client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/requests").status_code == 303


def test_revoking_the_key_ends_its_sessions(gw: Gateway) -> None:
    key = new_key(gw, "read", name="short-lived")
    client = login(gw.url, key)
    assert client.get("/requests").status_code == 200
    assert run_cli("keys", "revoke", "short-lived", env=gw.env).returncode == 0
    deadline = time.monotonic() + 10
    while client.get("/requests").status_code == 200:
        assert time.monotonic() < deadline, "a revoked key's session went on"
        time.sleep(0.2)


def test_security_headers_on_pages(gw: Gateway) -> None:
    client = login(gw.url, gw.key)
    for path in ("/login", "/requests", "/keys"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-content-type-options"] == "nosniff"
    static = client.get("/static/app.js")
    assert static.status_code == 200 and static.headers["x-content-type-options"] == "nosniff"


def test_recorded_values_are_escaped(gw: Gateway) -> None:
    request_id = send(gw, XSS, headers={"Helicone-User-Id": XSS, "Helicone-Property-Note": XSS,
                                        "Helicone-Request-Name": XSS})
    client = login(gw.url, gw.key)
    html = client.get("/requests").text
    assert f'data-request-id="{request_id}"' in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    searched = client.get("/requests", params={"q": "alert(1)"}).text
    assert f'data-request-id="{request_id}"' in searched and "<img src=x" not in searched


def test_filters_paging_and_export(gw: Gateway) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = [send(gw, f"filter {marker} {n}", model="gpt-4o" if n % 2 else "gpt-4o-mini",
                headers={"Helicone-Property-Batch": marker, "Helicone-User-Id": f"u-{marker}"}) for n in range(4)]
    client = login(gw.url, gw.key)
    by_prop = client.get("/requests", params={"prop": f"batch={marker}"}).text
    assert all(f'data-request-id="{i}"' in by_prop for i in ids)
    both = client.get("/requests", params=[("prop", f"batch={marker}"), ("model", "gpt-4o")]).text
    shown = re.findall(r'data-request-id="([^"]+)"', both)
    assert sorted(shown) == sorted(ids[1::2])
    assert len(re.findall(r'data-request-id="', client.get("/requests", params={"user": f"u-{marker}",
                                                                                "status": "error"}).text)) == 0
    bad = client.get("/requests", params={"cost_min": "lots"})
    assert bad.status_code == 200 and "must be a number" in bad.text
    export = client.get("/requests/export", params={"prop": f"batch={marker}", "format": "jsonl"})
    assert export.status_code == 200
    lines = [line for line in export.text.splitlines() if line]
    assert sorted(json.loads(line)["request_id"] for line in lines) == sorted(ids)
    by_text = client.get("/requests/export", params={"q": f"FILTER {marker} 3", "format": "jsonl"})
    assert [json.loads(line)["request_id"] for line in by_text.text.splitlines()] == [ids[3]]
    csv = client.get("/requests/export", params={"prop": f"batch={marker}", "format": "csv"})
    assert csv.text.splitlines()[0].startswith("request_id,") and len(csv.text.strip().splitlines()) == 5


def test_pages_walk_every_row_once(gw: Gateway) -> None:
    marker = uuid.uuid4().hex[:8]
    ids = {send(gw, f"page {n}", headers={"Helicone-Property-Pager": marker}) for n in range(5)}
    client = login(gw.url, gw.key)
    for order in ({}, {"dir": "asc"}, {"sort": "latency"}):     # keyset (both ways), then numbered pages
        seen: list[str] = []
        url = "/requests?" + urlencode({"prop": f"pager={marker}", "limit": "2", **order})
        while url:
            html = client.get(url).text
            page = re.findall(r'data-request-id="([^"]+)"', html)
            assert 1 <= len(page) <= 2, (order, url)
            seen += page
            found = re.search(r'href="([^"]+)" rel="next"', html)
            url = found.group(1).replace("&amp;", "&") if found else ""
            assert not url or ("cursor=" in url) == ("sort" not in order)
        assert sorted(seen) == sorted(ids), order


def test_live_tail_streams_new_rows(gw: Gateway) -> None:
    client = login(gw.url, gw.key)
    marker = uuid.uuid4().hex[:8]
    since = int(time.time() * 1000)
    with client.stream("GET", f"/requests/tail?prop=tail%3D{marker}&since={since}", timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        request_id = send(gw, "tail me", headers={"Helicone-Property-Tail": marker})
        buffer = ""
        deadline = time.monotonic() + 15
        for chunk in stream.iter_text():
            buffer += chunk
            if request_id in buffer or time.monotonic() > deadline:
                break
    assert "event: row" in buffer and f'data-request-id="{request_id}"' in buffer


def test_keys_page_creates_shows_once_and_revokes(gw: Gateway) -> None:
    client = login(gw.url, gw.key)
    page = client.get("/keys")
    assert page.status_code == 200 and "tests" in page.text
    created = client.post("/keys/create", data={"name": "from-web", "scope": "read", "expires": "30d",
                                                "csrf": csrf_of(page.text)})
    assert created.status_code == 200
    key = re.search(r'id="new-key">(sk-hg-[^<]+)<', created.text)
    assert key, created.text
    assert login(gw.url, key.group(1)).get("/requests").status_code == 200
    again = client.get("/keys").text
    assert key.group(1) not in again
    key_id = re.search(r'data-key-id="([^"]+)">\s*<td>from-web', again)
    assert key_id
    revoked = client.post(f"/keys/{key_id.group(1)}/revoke", data={"csrf": csrf_of(again)})
    assert revoked.status_code == 303
    assert "revoked" in client.get("/keys").text
    bad = client.post("/keys/create", data={"name": "x", "scope": "root", "csrf": csrf_of(again)})
    assert bad.status_code == 400 and "scope must be one of" in bad.text


def test_an_empty_project_teaches_the_first_call(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway(tmp_path, fake.url)
    try:
        html = login(gateway.url, gateway.key).get("/requests").text
        assert "No requests yet" in html
        assert f"{gateway.url}/openai/v1" in html and f"{gateway.url}/anthropic" in html and "curl" in html
    finally:
        gateway.stop()


def test_the_query_string_becomes_the_apis_filter_tree() -> None:
    from starlette.datastructures import QueryParams

    from heliograph.dashboard.requests import parse_view
    from heliograph.storage.filters import ALL, Branch, Condition

    def conditions(node: object) -> list[tuple[str, str, object, object]]:
        if isinstance(node, Branch):
            return conditions(node.left) + conditions(node.right)
        assert isinstance(node, Condition)
        return [(node.column.name, node.op, node.value, node.key)]

    assert parse_view(QueryParams("")).node == ALL
    v = parse_view(QueryParams("status=5xx&prop=Feature%3Dchat&range=1h&cost_max=0.5&sort=cost&dir=asc"), now_ms=10**7)
    assert conditions(v.node) == [("status", "gte", 500, None), ("status", "lt", 600, None),
                                  ("properties", "equals", "chat", "feature"), ("cost", "lte", 0.5, None),
                                  ("request_created_at", "gte", 10**7 - 3600 * 1000, None)]
    assert v.sort_name == "cost" and not v.descending and not v.keyset and not v.errors
    bad = parse_view(QueryParams("status=teapot&latency_min=fast&from=yesterday&range=2y&sort=password"))
    assert len(bad.errors) == 5


def test_login_only_redirects_to_this_server() -> None:
    from heliograph.dashboard.login import _safe_next

    assert _safe_next("/requests?model=a%20b") == "/requests?model=a%20b"
    for evil in ("//evil.example", "/\t/evil.example", "https://evil.example", "/\\evil.example", None, "", "/login"):
        assert _safe_next(evil) == "/requests", evil


def test_a_key_sees_only_its_projects_requests_and_keys(gw: Gateway) -> None:
    mine = send(gw, "default project's request")
    name = f"other-{uuid.uuid4().hex[:6]}"
    assert run_cli("projects", "create", name, env=gw.env).returncode == 0
    created = run_cli("keys", "create", "--name", f"{name}-admin", "--project", name, "--scope", "admin", env=gw.env)
    other = login(gw.url, created.stdout.strip().splitlines()[-1])
    page = other.get("/requests").text
    assert "No requests yet" in page and mine not in page and name in page
    assert other.get("/requests/export", params={"format": "jsonl"}).text == ""
    keys = other.get("/keys").text
    assert f"{name}-admin" in keys and keys.count("data-key-id=") == 1


def test_keys_page_sets_and_deletes_budgets_and_refuses_bad_ones_by_name(gw: Gateway) -> None:
    client = login(gw.url, gw.key)
    page = client.get("/keys").text
    bad = client.post("/keys/budgets", data={"target": "project", "usd": "lots", "period": "month",
                                             "csrf": csrf_of(page)})
    assert bad.status_code == 400 and "&#39;usd&#39;" in bad.text and "lots" in bad.text
    user = f"web-{uuid.uuid4().hex[:6]}"
    made = client.post("/keys/budgets", data={"target": "user", "user": user, "usd": "$12.50", "period": "week",
                                              "csrf": csrf_of(page)})
    assert made.status_code == 303
    listed = httpx.get(gw.url + "/api/v1/budgets", headers={"Authorization": f"Bearer {gw.key}"}).json()["data"]
    budget = next(b for b in listed if b.get("user") == user)
    assert (budget["usd"], budget["period"]) == (12.5, "week")
    page = client.get("/keys").text
    assert f'data-budget-id="{budget["id"]}"' in page and user in page
    assert client.post(f"/keys/budgets/{budget['id']}/delete", data={"csrf": csrf_of(page)}).status_code == 303
    listed = httpx.get(gw.url + "/api/v1/budgets", headers={"Authorization": f"Bearer {gw.key}"}).json()["data"]
    assert all(b["id"] != budget["id"] for b in listed)


def test_keys_page_creates_a_project_whose_admin_key_sees_only_it(gw: Gateway) -> None:
    send(gw, "in the first project")
    client = login(gw.url, gw.key)
    name = f"web {uuid.uuid4().hex[:6]}"
    made = client.post("/keys/projects", data={"project": name, "csrf": csrf_of(client.get("/keys").text)})
    assert made.status_code == 200 and f"Project “{name}” created" in made.text
    key = re.search(r'id="new-key">(sk-hg-[^<]+)<', made.text)
    assert key, made.text
    other = login(gw.url, key.group(1))
    assert other.get("/keys").status_code == 200 and name in other.get("/keys").text
    assert "data-request-id" not in other.get("/requests").text
    again = client.post("/keys/projects", data={"project": name, "csrf": csrf_of(client.get("/keys").text)})
    assert again.status_code == 400 and "exists already" in again.text
