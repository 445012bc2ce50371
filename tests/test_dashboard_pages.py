"""Request detail, sessions and users pages through a real `heliograph serve`: HTML checked without a browser.

Traffic: a session with nested paths (tool call, tool result, a hostile prompt), a streamed Anthropic
answer, a user to erase, and another project's session, user and request, which must be 404s."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from markupsafe import escape

from heliograph.testing import FakeUpstream

from .conftest import Gateway, run_cli, start_gateway

HOSTILE = '<script>alert("x")</script> "><img src=x onerror=alert(1)>'
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@dataclass
class World:
    gw: Gateway
    ids: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def new_key(gw: Gateway, scope: str, project: str = "default") -> str:
    created = run_cli("keys", "create", "--name", f"{scope}-{uuid.uuid4().hex[:6]}", "--scope", scope,
                      "--project", project, env=gw.env)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def chat(gw: Gateway, key: str, body: dict[str, Any], **headers: str) -> str:
    r = httpx.post(gw.url + "/openai/v1/chat/completions", json={"model": "gpt-4o-mini", **body}, timeout=30,
                   headers={"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer sk-provider", **headers})
    assert r.status_code == 200, r.text
    return r.headers["helicone-id"]


@pytest.fixture(scope="module")
def world(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    gw = start_gateway(tmp_path_factory.mktemp("dashboard-pages"), fake.url)
    w = World(gw)
    session = {"Helicone-Session-Id": "trip-1", "Helicone-Session-Name": "Trip planner", "Helicone-User-Id": "alice"}
    ask = {"role": "user", "content": "Weather in Paris?"}
    w.ids["plan"] = chat(gw, gw.key, {"messages": [{"role": "system", "content": "Plan trips."}, ask]},
                         **session, **{"Helicone-Session-Path": "/plan"})
    w.ids["tool"] = chat(gw, gw.key, {"messages": [ask], "tools": TOOLS},
                         **session, **{"Helicone-Session-Path": "/plan/search", "Helicone-Property-Env": "test"})
    call = gw.record(w.ids["tool"])["response_body"]["choices"][0]["message"]
    w.ids["result"] = chat(gw, gw.key, {"tools": TOOLS, "messages": [
        ask, call, {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "18 degrees, sunny"}]},
        **session, **{"Helicone-Session-Path": "/plan/search/web"})
    w.ids["hostile"] = chat(gw, gw.key, {"messages": [{"role": "user", "content": HOSTILE}]},
                            **session, **{"Helicone-Session-Path": "/answer"})
    streamed = httpx.post(gw.url + "/anthropic/v1/messages", timeout=30, json={
        "model": "claude-3-5-haiku-latest", "max_tokens": 50, "stream": True, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Tell me about lighthouses"}]},
        headers={**gw.auth, "x-api-key": "sk-ant", "anthropic-version": "2023-06-01", "Helicone-User-Id": "bob"})
    assert streamed.status_code == 200, streamed.text
    w.ids["streamed"] = streamed.headers["helicone-id"]
    w.ids["slashed"] = chat(gw, gw.key, {"messages": [ask]}, **{"Helicone-User-Id": "team/7"})
    w.ids["carol"] = chat(gw, gw.key, {"messages": [ask]}, **{"Helicone-User-Id": "carol"})
    w.ids["unpriced"] = chat(gw, gw.key, {"model": "mystery-model-7", "messages": [ask]})
    w.ids["retried"] = chat(gw, gw.key, {"messages": [ask]}, **{
        "Helicone-Retry-Enabled": "true", "Helicone-Retry-Min-Timeout": "10", "Helicone-Retry-Max-Timeout": "20",
        "X-Fake-Scenario": "fail-times=1,status=503", "X-Fake-Key": uuid.uuid4().hex})
    cached = {"Helicone-Cache-Enabled": "true"}
    body = {"messages": [{"role": "user", "content": f"cache me {uuid.uuid4().hex}"}]}
    w.ids["cache_miss"] = chat(gw, gw.key, body, **cached)
    gw.record(w.ids["cache_miss"])
    w.ids["cache_hit"] = chat(gw, gw.key, body, **cached)
    assert run_cli("projects", "create", "other", env=gw.env).returncode == 0
    other = new_key(gw, "admin", "other")
    w.ids["other"] = chat(gw, other, {"messages": [ask]}, **{"Helicone-Session-Id": "other-session",
                                                             "Helicone-User-Id": "other-user"})
    w.keys["read"] = new_key(gw, "read")
    deadline = time.monotonic() + 10
    for name, request_id in w.ids.items():
        if name != "other":
            gw.record(request_id)
    while httpx.get(f"{gw.url}/api/v1/request/{w.ids['other']}",
                    headers={"Authorization": f"Bearer {other}"}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    yield w
    gw.stop()


def login(gw: Gateway, key: str) -> httpx.Client:
    client = httpx.Client(base_url=gw.url, timeout=10)
    try:
        return _login(client, key)
    except BaseException:
        client.close()
        raise


def _login(client: httpx.Client, key: str) -> httpx.Client:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert form.status_code == 200 and csrf, form.text
    deadline = time.monotonic() + 5
    while (r := client.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/users"})).status_code == 401:
        assert time.monotonic() < deadline, r.text    # a key made after start: the gateway reloads its keys
        time.sleep(0.3)
    assert r.status_code == 303, r.text
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@pytest.fixture(scope="module")
def admin(world: World) -> Iterator[httpx.Client]:
    client = login(world.gw, world.gw.key)
    yield client
    client.close()


@pytest.fixture(scope="module")
def reader(world: World) -> Iterator[httpx.Client]:
    client = login(world.gw, world.keys["read"])
    yield client
    client.close()


def page(client: httpx.Client, path: str, status: int = 200) -> str:
    r = client.get(path)
    assert r.status_code == status, (path, r.status_code, r.text[:2000])
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    return r.text


def test_request_detail_renders_the_tool_round_trip(world: World, admin: httpx.Client) -> None:
    html = page(admin, f"/requests/{world.ids['tool']}")
    assert 'data-role="user"' in html and "Weather in Paris?" in html
    assert "tool-call" in html and "get_weather" in html and "&#34;city&#34;" in html
    assert 'href="/sessions/trip-1"' in html and 'href="/users/alice"' in html
    assert "env" in html and "test" in html                   # a property
    assert "<svg class=\"timing\"" in html and "Gateway overhead" in html
    html = page(admin, f"/requests/{world.ids['result']}")
    assert 'data-role="tool"' in html and "18 degrees, sunny" in html
    assert html.count('data-role="assistant"') == 2           # the call in the prompt, then the answer


def test_streamed_anthropic_answer_is_shown_assembled(world: World, admin: httpx.Client) -> None:
    record = world.gw.record(world.ids["streamed"])
    text = record["response_body"]["content"][0]["text"]
    html = page(admin, f"/requests/{world.ids['streamed']}")
    assert 'data-role="system"' in html and "Be brief." in html
    assert str(escape(text)) in html and "event: " not in html
    assert "streamed" in html and "x-api-key: &lt;provider key&gt;" in html


def test_pricing_retries_and_cache(world: World, admin: httpx.Client) -> None:
    html = page(admin, f"/requests/{world.ids['unpriced']}")
    cost = html[html.index("<dt>Cost</dt>"):][:400]
    assert "unpriced" in cost and "$0" not in cost
    html = page(admin, f"/requests/{world.ids['retried']}")
    assert "2 attempts" in html and ">503<" in html
    html = page(admin, f"/requests/{world.ids['cache_hit']}")
    assert "cache hit" in html and f'href="/requests/{world.ids["cache_miss"]}"' in html
    assert "Cache enabled; miss" in page(admin, f"/requests/{world.ids['cache_miss']}")


def test_raw_json_is_collapsible_and_copyable(world: World, admin: httpx.Client) -> None:
    html = page(admin, f"/requests/{world.ids['plan']}")
    assert '<details class="raw">' in html and 'data-copy-target="raw-request"' in html
    assert '<pre id="raw-response" class="json">' in html and '<script src="/static/detail.js"' in html
    assert "<script>" not in html                             # no inline script: the CSP forbids them
    assert admin.get("/static/detail.js").status_code == 200


def test_values_from_records_are_escaped(world: World, admin: httpx.Client) -> None:
    html = page(admin, f"/requests/{world.ids['hostile']}")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_curl_has_placeholders_never_the_key(world: World, admin: httpx.Client) -> None:
    html = page(admin, f"/requests/{world.ids['plan']}")
    assert f"curl {world.gw.url}/openai/v1/chat/completions" in html
    assert "Helicone-Auth: Bearer &lt;your key&gt;" in html
    assert world.gw.key not in html and world.gw.key not in admin.cookies.get("hg_session", "")


def test_other_projects_and_unknown_ids_are_404(world: World, admin: httpx.Client) -> None:
    for path in (f"/requests/{world.ids['other']}", "/requests/no-such-id", "/sessions/other-session",
                 "/sessions/nope", "/users/other-user", "/users/nobody"):
        assert "Not found" in page(admin, path, 404)
    assert "other-session" not in page(admin, "/sessions") and "other-user" not in page(admin, "/users")


def test_sessions_list_and_trace_tree(world: World, admin: httpx.Client) -> None:
    html = page(admin, "/sessions?q=trip&sort=cost&dir=asc")
    assert "Trip planner" in html and 'href="/sessions/trip-1"' in html
    assert "No sessions" in page(admin, "/sessions?q=zzz-none")
    html = page(admin, "/sessions/trip-1")
    for path in ("/plan", "/plan/search", "/plan/search/web", "/answer"):
        assert f'data-path="{path}"' in html
    for name in ("plan", "tool", "result", "hostile"):
        assert f'href="/requests/{world.ids[name]}"' in html
    assert html.count('class="waterfall"') == 8                 # 4 path nodes + 4 requests
    assert "<script>alert" not in html


def test_users_list_and_user_page(world: World, admin: httpx.Client) -> None:
    html = page(admin, "/users?sort=total_requests&dir=desc")
    assert 'href="/users/alice"' in html and 'href="/users/bob"' in html
    assert html.index("/users/alice") < html.index("/users/bob")     # 4 requests before 1
    html = page(admin, "/users/alice")
    assert "<svg" in html and f'href="/requests/{world.ids["tool"]}"' in html
    assert "erase-form" in html
    html = page(admin, "/users/team/7")                       # an id with a slash in it
    assert f'href="/requests/{world.ids["slashed"]}"' in html and 'action="/users/team%2F7/erase"' in html


def test_read_key_cannot_annotate_or_erase(world: World, reader: httpx.Client) -> None:
    html = page(reader, f"/requests/{world.ids['plan']}")
    assert "Set score" not in html
    assert "erase-form" not in page(reader, "/users/alice")
    csrf = csrf_of(html)
    r = reader.post(f"/requests/{world.ids['plan']}/scores", data={"csrf": csrf, "name": "x", "value": "1"})
    assert r.status_code == 403 and "admin" in r.text
    r = reader.post("/users/alice/erase", data={"csrf": csrf, "confirm": "alice"})
    assert r.status_code == 403
    assert 'href="/users/alice"' in page(reader, "/users")          # still there


def test_admin_sets_scores_feedback_and_properties(world: World, admin: httpx.Client) -> None:
    target = f"/requests/{world.ids['plan']}"
    csrf = csrf_of(page(admin, target))
    assert admin.post(target + "/scores", data={"name": "accuracy", "value": "92"}).status_code == 403  # no CSRF
    r = admin.post(target + "/scores", data={"csrf": csrf, "name": "accuracy", "value": "92"})
    assert r.status_code == 303
    admin.post(target + "/feedback", data={"csrf": csrf, "rating": "up"})
    admin.post(target + "/properties", data={"csrf": csrf, "key": "Reviewed", "value": "<b>yes</b>"})
    html = page(admin, r.headers["location"])
    assert re.search(r"<th scope=\"row\">accuracy</th><td class=\"num\">92</td>", html)
    assert "positive" in html and "reviewed" in html and "&lt;b&gt;yes&lt;/b&gt;" in html
    assert "Property saved." in page(admin, target + "?saved=properties")
    assert "evil" not in page(admin, target + "?saved=evil&notice=evil&problem=evil")   # no reflected text
    bad = admin.post(target + "/scores", data={"csrf": csrf, "name": "accuracy", "value": "0.5"})
    assert bad.status_code == 400 and "floats are not accepted" in bad.text
    assert admin.post(f"/requests/{world.ids['other']}/scores",
                      data={"csrf": csrf, "name": "x", "value": "1"}).status_code == 404


def test_admin_erases_a_user_with_confirmation(world: World, admin: httpx.Client) -> None:
    csrf = csrf_of(page(admin, "/users/carol"))
    assert admin.post("/users/carol/erase", data={"csrf": csrf, "confirm": "carl"}).status_code == 400
    page(admin, "/users/carol")
    r = admin.post("/users/carol/erase", data={"csrf": csrf, "confirm": "carol"})
    assert r.status_code == 200 and "User erased" in r.text
    page(admin, "/users/carol", 404)
    page(admin, f"/requests/{world.ids['carol']}", 404)
