"""/analytics through a real `heliograph serve`: charts with data, group-by, filters, isolation, empty state."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.testclient import TestClient

from heliograph.auth import KeyCache, hash_key
from heliograph.dashboard import Dashboard, analytics, dashboard_routes
from heliograph.dashboard.analytics import _window, cache_summary, choose_bucket, parse_page_filter
from heliograph.settings import Settings
from heliograph.storage import open_store
from heliograph.storage.analytics import rollup_plan
from heliograph.synthetic import generate
from heliograph.testing import FakeUpstream

from .conftest import Gateway, run_cli, start_gateway

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano")
USERS = ("alice", "bob", "carol")


@contextmanager
def login(url: str, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=20, follow_redirects=False) as client:
        form = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text
        done = client.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/analytics"})
        assert done.status_code == 303, done.text
        yield client


def new_key(gateway: Gateway, project: str, scope: str) -> str:
    created = run_cli("projects", "create", project, env=gateway.env)
    assert created.returncode == 0, created.stderr
    made = run_cli("keys", "create", "--name", f"k-{project}", "--project", project, "--scope", scope, env=gateway.env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def send(gateway: Gateway, key: str, model: str, user: str, **props: str) -> str:
    headers = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer sk-provider", "Helicone-User-Id": user,
               **{f"Helicone-Property-{k}": v for k, v in props.items()}}
    r = httpx.post(gateway.url + "/openai/v1/chat/completions", timeout=10, headers=headers,
                   json={"model": model, "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}]})
    assert r.status_code == 200, r.text
    return r.headers["helicone-id"]


@pytest.fixture(scope="module")
def site(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    gw = start_gateway(tmp_path_factory.mktemp("dash-analytics"), fake.url)
    try:
        other_key = new_key(gw, "other", "admin")
        empty_key = new_key(gw, "empty", "read")
        ids = []
        for i in range(18):
            ids.append(send(gw, gw.key, MODELS[i % 3], USERS[i % 3 if i < 12 else 0],
                            Feature="search" if i % 2 else "support", Env="prod"))
        secret_ids = [send(gw, other_key, "secret-model-x", "secret-user-y", Feature="secret-feature")
                      for _ in range(3)]
        for request_id in ids[-1:]:
            gw.record(request_id)
        for request_id in secret_ids:
            for _ in range(200):
                if httpx.get(gw.url + f"/api/v1/request/{request_id}",
                             headers={"Authorization": f"Bearer {other_key}"}).status_code == 200:
                    break
        yield {"gw": gw, "empty_key": empty_key}
    finally:
        gw.stop()


def _requests_total(html: str) -> int:
    found = re.search(r'data-requests="(\d+)"', html)
    assert found, html[:2000]
    return int(found.group(1))


def test_the_page_draws_charts_with_data(site: dict[str, object]) -> None:
    gw = site["gw"]
    assert isinstance(gw, Gateway)
    with login(gw.url, gw.key) as client:
        page = client.get("/analytics", params={"range": "1h"})
    assert page.status_code == 200, page.text
    html = page.text
    assert _requests_total(html) == 18
    assert "content-security-policy" in page.headers and "<script>" not in html
    for chart in ("cost", "volume", "errors", "latency", "ttft", "tokens", "top-models", "top-users", "top-props"):
        assert f'id="{chart}"' in html, chart
    assert html.count('role="img"') >= 8
    points = sum(int(n) for n in re.findall(r'data-points="(\d+)"', html))
    assert points > 0 and html.count("<circle") > 0 and html.count("<path") >= 5
    for model in MODELS:
        assert model in html
    assert "alice" in html and 'data-bars="3"' in html          # top users: alice, bob, carol
    assert "Cost by model" in html and "min" in html or "by minute" in html


def test_group_by_a_property_and_filters_narrow_the_totals(site: dict[str, object]) -> None:
    gw = site["gw"]
    assert isinstance(gw, Gateway)
    with login(gw.url, gw.key) as client:
        grouped = client.get("/analytics", params={"range": "1h", "group": "property:feature"}).text
        cost = grouped[grouped.index('id="cost"'):grouped.index('id="volume"')]
        assert "search" in cost and "support" in cost and "gpt-4o-mini" not in cost
        assert 'value="property:feature" selected' in grouped
        by_model = client.get("/analytics", params={"range": "1h", "model": "gpt-4o", "group": "user"}).text
        assert _requests_total(by_model) == 6
        assert 'href="/requests?range=1h&amp;model=gpt-4o"' in by_model      # the same filter, as the table
        assert _requests_total(client.get("/analytics", params={"range": "1h", "user": "alice"}).text) == 10
        assert _requests_total(client.get("/analytics", params={"range": "1h", "prop": "feature=search"}).text) == 9
        both = client.get("/analytics", params={"range": "1h", "prop": "feature=search", "model": "gpt-4o-mini"}).text
        assert _requests_total(both) == 3
        none = client.get("/analytics", params={"range": "1h", "status": "error"}).text
        assert "No requests match these filters" in none
        bad = client.get("/analytics", params={"range": "1y", "status": "weird", "from": "yesterday"})
        assert bad.status_code == 200 and "Unknown time range" in bad.text and "Unknown status" in bad.text


def test_another_projects_data_never_appears(site: dict[str, object]) -> None:
    gw = site["gw"]
    assert isinstance(gw, Gateway)
    with login(gw.url, gw.key) as client:
        for params in ({"range": "1h"}, {"range": "1h", "group": "user"}, {"range": "1h", "group": "property:feature"},
                       {"range": "1h", "top_prop": "feature"}, {"range": "7d", "group": "provider"}):
            html = client.get("/analytics", params=params).text
            assert "secret-" not in html, params
            assert _requests_total(html) == 18


def test_an_empty_project_teaches_instead_of_crashing(site: dict[str, object]) -> None:
    gw = site["gw"]
    assert isinstance(gw, Gateway)
    empty_key = site["empty_key"]
    assert isinstance(empty_key, str)
    with login(gw.url, empty_key) as client:
        for params in ({}, {"range": "30d", "group": "user"}, {"range": "6h", "group": "property:x"}):
            page = client.get("/analytics", params=params)
            assert page.status_code == 200
            assert "No requests in this time range" in page.text and "Helicone-Auth" in page.text
            assert "secret-" not in page.text and "bob" not in page.text and "gpt-4o<" not in page.text


def test_login_is_required(site: dict[str, object]) -> None:
    gw = site["gw"]
    assert isinstance(gw, Gateway)
    r = httpx.get(gw.url + "/analytics", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_cache_hits_and_savings(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url)
    try:
        headers = {**gw.auth, "Authorization": "Bearer sk-provider", "Helicone-Cache-Enabled": "true"}
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "cache me"}]}
        ids = [httpx.post(gw.url + "/openai/v1/chat/completions", json=body, headers=headers, timeout=10)
               .headers["helicone-id"] for _ in range(3)]
        records = [gw.record(i) for i in ids]
        assert sum(1 for r in records if r["cache_reference_id"]) == 2
        with login(gw.url, gw.key) as client:
            html = client.get("/analytics", params={"range": "1h"}).text
        tiles = html[html.index('class="tiles"'):html.index('class="charts"')]
        assert "66.7%" in tiles and "2 hits" in tiles
        saved = re.search(r"Saved by cache</span><span class=\"v\">([^<]+)<", tiles)
        assert saved and saved.group(1) not in ("$0.00", "unpriced"), tiles
        # Past the sample, hits are scaled from the sampled ones: one looked up stands for both.
        store = open_store(gw.db_url)
        try:
            window = {"project": records[0]["project_id"], "start": 0, "end": 2**62}
            full, sampled = store.cache_savings(**window), store.cache_savings(**window, sample=1)
        finally:
            store.close()
        assert [(r["hits"], r["sampled"], r["matched"]) for r in full] == [(2, 2, 2)]
        assert [(r["hits"], r["sampled"], r["matched"]) for r in sampled] == [(2, 1, 1)]
        whole = cache_summary(full, [], {"requests": 3})
        scaled = cache_summary(sampled, [], {"requests": 3})
        assert whole["saved_cost"] == pytest.approx(2 * records[0]["cost"]) and whole["estimated"] == 0
        assert scaled["saved_cost"] == pytest.approx(whole["saved_cost"]) and scaled["estimated"] == 1
    finally:
        gw.stop()


def _request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/analytics", "query_string": query.encode(), "headers": []})


def test_query_string_filters_and_bucket_rule() -> None:
    now = 1_764_806_400_000
    pf = parse_page_filter(_request("range=7d&model=gpt-4o&status=error&prop=feature=search&prop=bad&user=u1"), now)
    assert (pf.start, pf.end, pf.range) == (now - 7 * 86_400_000, now, "7d")
    assert pf.fields == {"model": "gpt-4o", "user": "u1", "status": "error"} and pf.props == [("feature", "search")]
    assert pf.errors == ["A property filter is key=value, got 'bad'."]
    assert rollup_plan(parse_page_filter(_request("model=a&provider=b&status=500"), now).node, "model") is not None
    custom = parse_page_filter(_request("from=2025-12-01T00:00&to=2025-12-02T00:00:00Z"), now)
    assert custom.range == "custom" and custom.end - custom.start == 86_400_000
    assert choose_bucket(now - 6 * 3_600_000, now) == "minute"
    assert choose_bucket(now - 14 * 86_400_000, now) == "hour"
    assert choose_bucket(now - 15 * 86_400_000, now) == "day"
    assert choose_bucket(now - 30 * 86_400_000, now, "hour") == "hour"
    assert choose_bucket(now - 90 * 86_400_000, now, "minute") == "day"      # too many buckets: refused
    assert _window(30 * 86_400_000, 1_000_000) == 21_600_000                 # 14.4 h of rows fit: the 6 h range
    assert _window(30 * 86_400_000, 20_000 * 30) == 86_400_000               # a day's worth fits: the 24 h range


@pytest.fixture
def big_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The dashboard in-process over synthetic traffic, with a raw-row budget far below it."""
    store = open_store(f"sqlite:///{tmp_path / 'dash.db'}")
    store.migrate()
    generate(store, 600, days=2)
    monkeypatch.setattr(analytics, "RAW_BUDGET", 10)
    key = "sk-hg-dashboard-test-key"
    dashboard = Dashboard(store, KeyCache(lambda: {hash_key(key): {"id": "key_t", "scope": "read"}}), Settings())
    app = Starlette(routes=dashboard_routes(dashboard))
    app.state.dashboard = dashboard
    with TestClient(app, follow_redirects=False) as client:
        form = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        assert client.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/analytics"}).status_code == 303
        yield client
    store.close()


def test_filters_the_rollups_cannot_answer_narrow_the_page_and_say_so(big_page: TestClient) -> None:
    narrowed = big_page.get("/analytics", params={"range": "7d", "user": "user-00000"})
    assert narrowed.status_code == 200
    assert "not kept in the rollups" in narrowed.text and "showing the last" in narrowed.text
    left_out = big_page.get("/analytics", params={"range": "7d", "prop": "environment=production", "group": "model"})
    assert left_out.status_code == 200
    assert "left out" in left_out.text and 'id="top-users"' in left_out.text
    assert _requests_total(left_out.text) > 10                # the totals still come from the rollups
    rare = big_page.get("/analytics", params={"range": "7d", "user": "nobody-with-few-requests"}).text
    assert "not kept in the rollups" not in rare                # its rows are few: read them all
    plain = big_page.get("/analytics", params={"range": "7d"}).text
    assert "not kept in the rollups" not in plain and "Served from rollups" in plain
