"""Sessions, users, properties and the analytics API: store contract on SQLite and PostgreSQL, the
HTTP layer (envelope, 400s naming the bad part, 401, 404), one run through a real gateway, and the
synthetic-data command."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from heliograph.api import api_app
from heliograph.api.records import iso
from heliograph.auth import KeyCache, hash_key
from heliograph.storage import Store, open_store
from heliograph.storage.sessions import SessionQuery, UserQuery
from heliograph.testing import FakeUpstream

from . import test_store_contract as contract
from .conftest import Gateway, run_cli
from .test_store_contract import T0, make_row

store_url, store = contract.store_url, contract.store     # the contract suite's fixtures: both stores

HOUR, DAY = 3_600_000, 86_400_000


def session_rows() -> list[dict[str, Any]]:
    def row(n: int, session: str, path: str | None, at: int, **more: Any) -> dict[str, Any]:
        return make_row(f"s{n:03d}", session_id=session, session_path=path, created_at=T0 + at, **more)
    return [
        row(1, "alpha", "/plan", 0, session_name="Research", latency_ms=100.0, cost=0.01, user_id="u1"),
        row(2, "alpha", "/plan/search", 50, session_name="Research", latency_ms=300.0, cost=0.02),
        row(3, "alpha", "/plan/search", 400, session_name="Research", latency_ms=100.0, cost=None, status=500),
        row(4, "alpha", "/answer", 1000, session_name="Research", latency_ms=2000.0, cost=0.5),
        row(5, "alpha", None, 5000, session_name="Research", latency_ms=10.0, cost=0.0),
        row(6, "beta", "/a", 10 * HOUR, session_name="Support", latency_ms=50.0, cost=0.2, user_id="u2"),
        row(7, "gamma_1", "/x", 30 * HOUR, session_name=None, latency_ms=5.0, cost=0.001),
        make_row("lone", created_at=T0 + 20 * HOUR),
    ]


# -- sessions -----------------------------------------------------------------------------------

def test_sessions_list_totals_filters_sorts_and_pages(store: Store) -> None:
    store.insert_requests(session_rows()[:3])
    store.insert_requests(session_rows()[3:])          # one session across two batches
    listed = store.sessions(SessionQuery(project="default"))
    assert [s["session_id"] for s in listed] == ["gamma_1", "beta", "alpha"]
    alpha = listed[-1]
    assert alpha | {"total_cost": pytest.approx(0.53)} == {
        "session": "alpha", "session_id": "alpha", "session_name": "Research", "user_id": "u1",
        "total_requests": 5, "errors": 1, "total_cost": pytest.approx(0.53), "unpriced_requests": 1,
        "prompt_tokens": 50, "completion_tokens": 100, "total_tokens": 150, "created_at": T0,
        "latest_request_created_at": T0 + 5000, "ended_at": T0 + 5010, "duration_ms": 5010, "avg_latency": 502.0}
    p = "default"
    by = {name: [s["session_id"] for s in store.sessions(query)] for name, query in {
        "name": SessionQuery(project=p, name="Support"), "search id": SessionQuery(project=p, search="GAMMA_"),
        "search name": SessionQuery(project=p, search="resea"), "literal %": SessionQuery(project=p, search="%"),
        "overlap": SessionQuery(project=p, start=T0 + 4000, end=T0 + 11 * HOUR),
        "before": SessionQuery(project=p, end=T0 + 1), "cost asc": SessionQuery(project=p, sort="cost", descending=False),
        "duration": SessionQuery(project=p, sort="duration"), "page": SessionQuery(project=p, offset=1, limit=1)}.items()}
    assert by == {"name": ["beta"], "search id": ["gamma_1"], "search name": ["alpha"], "literal %": [],
                  "overlap": ["beta", "alpha"], "before": ["alpha"], "cost asc": ["gamma_1", "beta", "alpha"],
                  "duration": ["alpha", "beta", "gamma_1"], "page": ["beta"]}


def test_one_session_is_a_tree_of_its_paths(store: Store) -> None:
    store.insert_requests(session_rows())
    found = store.session("alpha", project="default")
    assert found is not None and found["total_requests"] == 5 and found["truncated"] is False
    tree = found["tree"]
    assert tree["path"] == "/" and [r["request_id"] for r in tree["requests"]] == ["s005"]
    assert [(c["path"], c["request_count"]) for c in tree["children"]] == [("/plan", 3), ("/answer", 1)]
    plan = tree["children"][0]
    assert plan["cost"] == pytest.approx(0.03) and plan["latency_ms"] == 500.0
    assert (plan["started_at"], plan["ended_at"], plan["duration_ms"]) == (T0, T0 + 500, 500)
    search = plan["children"][0]
    assert (search["name"], search["path"], [r["request_id"] for r in search["requests"]]) == (
        "search", "/plan/search", ["s002", "s003"])
    assert tree["request_count"] == 5 and tree["cost"] == pytest.approx(0.53) and tree["duration_ms"] == 5010
    assert store.session("nope", project="default") is None
    assert store.prune(body_days=0, metrics_days=1, now_ms=T0 + 3 * DAY).deleted["requests"] == 8  # totals stay
    expired = store.session("alpha", project="default")
    assert expired is not None and expired["tree"] is None and expired["total_requests"] == 5


# -- users ---------------------------------------------------------------------------------------

def user_rows(n: int = 900) -> list[dict[str, Any]]:
    rnd = random.Random(3)
    return [make_row(f"u{i:04d}", created_at=T0 + int(i * 4 * DAY / n), user_id=rnd.choice(["ann", "bob", "cy", None]),
                     cost=rnd.choice([None, 0.002]), prompt_tokens=rnd.randint(1, 50), status=rnd.choice([200, 500]))
            for i in range(n)]


def expected_users(rows: list[dict[str, Any]], start: int, end: int) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["user_id"] is None or not start <= r["created_at"] < end:
            continue
        u = found.setdefault(r["user_id"], {"total_requests": 0, "prompt_tokens": 0, "cost": 0.0, "errors": 0,
                                           "days": set(), "first_active": r["created_at"]})
        u["total_requests"] += 1
        u["prompt_tokens"] += r["prompt_tokens"]
        u["cost"] += r["cost"] or 0.0
        u["errors"] += r["status"] >= 400
        u["days"].add(r["created_at"] // DAY)
        u["last_active"] = r["created_at"]
    return found


@pytest.mark.parametrize("start,end", [(0, 2**62), (T0 + 3 * HOUR + 12_345, T0 + 2 * DAY + 5 * HOUR + 999)])
def test_users_match_the_rows_over_any_range(store: Store, start: int, end: int) -> None:
    rows = user_rows()
    store.insert_requests(rows)
    expected = expected_users(rows, start, min(end, 2**62))
    query = UserQuery(project="default", start=start, end=min(end, 253_402_300_800_000))
    got = {u["user_id"]: u for u in store.users(query)}
    assert got.keys() == expected.keys()
    for user_id, want in expected.items():
        u = got[user_id]
        assert (u["total_requests"], u["prompt_tokens"], u["errors"], u["first_active"], u["last_active"]) == (
            want["total_requests"], want["prompt_tokens"], want["errors"], want["first_active"], want["last_active"])
        assert u["cost"] == pytest.approx(want["cost"]) and u["active_for"] == len(want["days"])
        assert u["average_requests_per_day_active"] == round(want["total_requests"] / len(want["days"]), 3)
        assert u["count"] == u["total_requests"] and u["completion_tokens"] == 20 * u["total_requests"]


def test_users_filter_sort_and_page(store: Store) -> None:
    store.insert_requests(user_rows())
    everyone = store.users(UserQuery(project="default", sort="total_requests"))
    assert [u["total_requests"] for u in everyone] == sorted((u["total_requests"] for u in everyone), reverse=True)
    assert [u["user_id"] for u in store.users(UserQuery(project="default", user_ids=("cy", "nobody")))] == ["cy"]
    second = UserQuery(project="default", sort="user_id", descending=False, offset=1, limit=1)
    assert [u["user_id"] for u in store.users(second)] == ["bob"]


# -- properties ----------------------------------------------------------------------------------

def test_property_keys_and_values(store: Store) -> None:
    store.insert_requests([make_row("p1", props={"Feature": "chat", "env": "prod"}, cost=0.25),
                           make_row("p2", props={"feature": "chat"}, cost=None, created_at=T0 + DAY + 5),
                           make_row("p3", props={"feature": "search"}, cost=0.5, status=429)])
    assert store.property_keys(project="default") == [{"property": "feature", "requests": 3, "cost": 0.75},
                                     {"property": "env", "requests": 1, "cost": 0.25}]
    values = store.property_values("FEATURE", project="default")
    assert [(v["value"], v["requests"], v["cost"], v["errors"], v["unpriced_requests"]) for v in values] == [
        ("chat", 2, 0.25, 0, 1), ("search", 1, 0.5, 1, 0)]
    start, end = T0 + 1, T0 + 2 * DAY
    assert [v["value"] for v in store.property_values("feature", project="default", start=start, end=end)] == ["chat"]
    assert store.property_keys(project="default", start=start, end=end) == [
        {"property": "feature", "requests": 1, "cost": 0.0}]


# -- the HTTP layer ------------------------------------------------------------------------------

KEY = "sk-hg-analytics-test"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    store.migrate()
    store.insert_requests(session_rows() + user_rows(200) + [
        make_row(f"f{n}", props={"feature": "search" if n == 2 else "chat"}) for n in range(3)])
    with TestClient(api_app(store, KeyCache(lambda: {hash_key(KEY): {"id": "key_t"}})), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {KEY}"
        yield c
    store.close()


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.json()["error"] is None
    return response.json()["data"]


def test_analytics_api(client: TestClient) -> None:
    window = {"start": iso(T0 - HOUR), "end": iso(T0 + 2 * DAY)}
    data = ok(client.post("/v1/analytics/query", json={"timeFilter": window, "bucket": "day", "groupBy": "model"}))
    assert data["start"] == iso(T0 - HOUR) and data["source"] == "rollups" and data["groupBy"] == "model"
    assert data["summary"]["requests"] == sum(g["requests"] for g in data["groups"]) == sum(r["requests"] for r in data["series"])
    assert data["series"][0]["time"].endswith("T00:00:00.000Z") and "latency_p99" in data["series"][0]
    raw = ok(client.post("/v1/analytics/query", json={
        "timeFilter": {"startTimeUnixMs": T0 - HOUR, "endTimeUnixMs": T0 + 2 * DAY}, "bucket": None,
        "filter": {"request_response_rmt": {"cost": {"gte": 0}}}}))
    assert raw["source"] == "requests" and "series" not in raw and raw["summary"]["requests"] > 0
    assert ok(client.post("/v1/analytics/query", content=b""))["bucket"] == "hour"     # last 24 h
    by_property = ok(client.post("/v1/analytics/query", json={"timeFilter": window, "groupBy": "property:FEATURE"}))
    assert by_property["groupBy"] == "property:feature"


@pytest.mark.parametrize("body,message", [
    ({"bucket": "week"}, "'bucket' must be \"minute\", \"hour\", \"day\" or null, got 'week'"),
    ({"groupBy": "colour"}, "'groupBy' must be null, one of model"),
    ({"groupBy": "property:"}, "'groupBy' must be null"),
    ({"timeFilter": {"start": "yesterday"}}, "'timeFilter.start' must be an ISO 8601 time"),
    ({"timeFilter": {"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}}, "'timeFilter' is empty"),
    ({"timeFilter": {"startTimeUnixMs": "0"}}, "'timeFilter.startTimeUnixMs' must be a non-negative number"),
    ({"timeFilter": [1, 2]}, "'timeFilter' must be an object"),
    ({"timeFilter": {"start": "2000-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "bucket": "minute"},
     "more than 20000 buckets"),
    ({"filter": {"request_response_rmt": {"modle": {"equals": "x"}}}}, "Bad filter: unknown column 'modle'"),
    ({"limit": 0}, "'limit' must be an integer from 1 to 1000"),
])
def test_analytics_api_refuses_bad_input(client: TestClient, body: Any, message: str) -> None:
    r = client.post("/v1/analytics/query", json=body)
    assert r.status_code == 400 and r.json()["data"] is None and message in r.json()["error"], r.text


def test_session_user_and_property_api(client: TestClient) -> None:
    sessions = ok(client.post("/v1/session/query", json={"sort": {"cost": "asc"}, "limit": 2}))
    assert [s["session_id"] for s in sessions] == ["gamma_1", "beta"] and sessions[0]["created_at"].endswith("Z")
    one = ok(client.get("/v1/session/alpha"))
    assert one["tree"]["children"][0]["requests"][0]["created_at"] == iso(T0)
    assert one["tree"]["started_at"] == iso(T0) and one["latest_request_created_at"] == iso(T0 + 5000)
    missing = client.get("/v1/session/nope")
    assert missing.status_code == 404 and missing.json() == {"data": None, "error": "No session with id 'nope'."}
    users = ok(client.post("/v1/user/query", json={"userIds": ["ann", "u1"], "sort": {"user_id": "asc"},
                                                    "timeFilter": {"startTimeUnixSeconds": 0}}))
    assert [u["user_id"] for u in users] == ["ann", "u1"] and users[0]["first_active"].endswith("Z")
    assert ok(client.get("/v1/property"))[0]["property"] == "feature"
    assert ok(client.get("/v1/property/feature", params={"limit": 1}))[0]["value"] == "chat"
    assert ok(client.get("/v1/property/feature", params={"start": iso(T0 + 3 * DAY)})) == []


@pytest.mark.parametrize("method,path,body,message", [
    ("POST", "/v1/session/query", {"sort": {"colour": "asc"}}, "cannot sort by 'colour'"),
    ("POST", "/v1/session/query", {"sort": {"cost": "up"}}, "sort direction for 'cost' must be"),
    ("POST", "/v1/session/query", {"limit": 5000}, "'limit' must be an integer from 1 to 1000"),
    ("POST", "/v1/session/query", {"search": 5}, "'search' must be text"),
    ("POST", "/v1/user/query", {"userIds": "ann"}, "'userIds' must be a list"),
    ("POST", "/v1/user/query", {"offset": -1}, "'offset' must be an integer"),
    ("GET", "/v1/property?start=soon", None, "'start' must be an ISO 8601 time"),
    ("GET", "/v1/property/feature?limit=x", None, "'limit' must be an integer"),
])
def test_session_user_property_api_refuse_bad_input(client: TestClient, method: str, path: str, body: Any,
                                                    message: str) -> None:
    r = client.request(method, path, json=body)
    assert r.status_code == 400 and r.json()["data"] is None and message in r.json()["error"], r.text


def test_every_new_route_needs_a_key(client: TestClient) -> None:
    for method, path in [("POST", "/v1/analytics/query"), ("POST", "/v1/session/query"), ("GET", "/v1/session/x"),
                         ("POST", "/v1/user/query"), ("GET", "/v1/property"), ("GET", "/v1/property/x")]:
        r = client.request(method, path, headers={"Authorization": "Bearer sk-hg-wrong"})
        assert r.status_code == 401 and r.json()["data"] is None


# -- through a real gateway, and the CLI ------------------------------------------------------------

def test_recorded_calls_show_in_sessions_and_analytics(gateway: Gateway, fake: FakeUpstream) -> None:
    session, run = f"sess-{uuid.uuid4().hex}", uuid.uuid4().hex
    headers = {**gateway.auth, "Authorization": "Bearer sk-provider", "Helicone-Session-Id": session,
               "Helicone-Session-Name": "e2e", "Helicone-Property-Run": run, "Helicone-User-Id": f"user-{run}"}
    ids = [httpx.post(gateway.url + "/openai/v1/chat/completions", timeout=10,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                      headers={**headers, "Helicone-Session-Path": path}).headers["helicone-id"]
           for path in ("/plan", "/plan/act", "/plan/act")]
    for request_id in ids:
        gateway.record(request_id)
    api = {"Authorization": f"Bearer {gateway.key}"}
    tree = httpx.get(f"{gateway.url}/api/v1/session/{session}", headers=api).json()["data"]
    assert tree["session_name"] == "e2e" and tree["total_requests"] == 3
    assert [(c["path"], c["request_count"]) for c in tree["tree"]["children"]] == [("/plan", 3)]
    assert tree["tree"]["children"][0]["children"][0]["request_count"] == 2
    data = httpx.post(f"{gateway.url}/api/v1/analytics/query", headers=api, json={
        "groupBy": "property:run", "bucket": "hour", "limit": 1000,
        "filter": {"properties": {"run": {"equals": run}}}}).json()["data"]
    assert data["source"] == "rollups" and data["groups"][0]["group"] == run and data["groups"][0]["requests"] == 3
    users = httpx.post(f"{gateway.url}/api/v1/user/query", headers=api, json={"userIds": [f"user-{run}"]}).json()["data"]
    assert users[0]["total_requests"] == 3 and users[0]["cost"] > 0


def test_db_generate_writes_records_with_rollups(tmp_path: Path) -> None:
    import os
    url = f"sqlite:///{tmp_path / 'gen.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    done = run_cli("db", "generate", "--rows", "3000", "--days", "2", "--db", url, "--batch", "1000", env=env)
    assert done.returncode == 0, done.stderr
    assert "Wrote 3,000 records" in done.stdout and "records/s" in done.stdout
    store = open_store(url)
    from heliograph.storage.analytics import AnalyticsQuery
    result = store.analytics(AnalyticsQuery(0, 253_402_300_800_000, bucket=None, group_by="provider",
                                            project="default"))
    assert store.count_requests() == result["summary"]["requests"] == 3000 and result["groups_total"] >= 5
    assert store.sessions(SessionQuery(project="default", limit=1))
    assert store.users(UserQuery(project="default", limit=1))
    store.create_project("proj_gen", "generated")
    more = run_cli("db", "generate", "--rows", "500", "--days", "1", "--db", url, "--project", "generated", env=env)
    assert more.returncode == 0, more.stderr
    assert store.count_requests(project="proj_gen") == 500 and store.count_requests(project="default") == 3000
    other = store.analytics(AnalyticsQuery(0, 253_402_300_800_000, bucket=None, project="proj_gen"))
    assert other["summary"]["requests"] == 500 and other["source"] == "rollups"
    store.close()
    bad = run_cli("db", "generate", "--rows", "0", "--db", url, env=env)
    assert bad.returncode == 2 and "--rows" in bad.stderr
