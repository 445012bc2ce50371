"""The query API through a real `heliograph serve`: records made by real calls through the proxy."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from heliograph.api import api_app, mounted_routes
from heliograph.api.openapi import OPENAPI
from heliograph.auth import KeyCache
from heliograph.storage import open_store
from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Where is the lighthouse?"}]}


def api(gw: Gateway, method: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.key}", **kwargs.pop("headers", {})}
    return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=10, **kwargs)


def send(gw: Gateway, run: str, model: str = "gpt-4o-mini", scenario: str | None = None, **tags: str) -> str:
    headers = {**gw.auth, "Authorization": "Bearer sk-provider", "Helicone-Property-Run": run,
               **{f"Helicone-{k.replace('_', '-')}": v for k, v in tags.items()}}
    if scenario:
        headers["X-Fake-Scenario"] = scenario
    r = httpx.post(gw.url + "/openai/v1/chat/completions", json={**CHAT, "model": model}, headers=headers, timeout=10)
    return r.headers["helicone-id"]


def run_filter(run: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    mine: dict[str, Any] = {"request_response_rmt": {"properties": {"run": {"equals": run}}}}
    return mine if extra is None else {"left": mine, "operator": "and", "right": extra}


def query(gw: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = api(gw, "POST", "/api/v1/request/query", body)
    assert r.status_code == 200, r.text
    assert r.json()["error"] is None
    data: list[dict[str, Any]] = r.json()["data"]
    return data


@pytest.fixture(scope="module")
def traffic(gateway: Gateway, fake: FakeUpstream) -> dict[str, Any]:
    """Four recorded calls tagged with a run id of their own."""
    run = uuid.uuid4().hex
    ids = {
        "a": send(gateway, run, User_Id="alice", Property_Feature="support", Session_Id="s-1", Request_Name="plan"),
        "b": send(gateway, run, model="gpt-4o", User_Id="bob", Property_Feature="billing"),
        "c": send(gateway, run, scenario="status=500", User_Id="alice"),
        "d": send(gateway, run, model="gpt-4o", scenario="delay=150"),
    }
    for request_id in ids.values():
        gateway.record(request_id)
    return {"run": run, "ids": ids}


# -- query ---------------------------------------------------------------------------------------

def test_query_filters_sorts_pages_and_renders_helicone_fields(gateway: Gateway, traffic: dict[str, Any]) -> None:
    run, ids = traffic["run"], traffic["ids"]
    rows = query(gateway, {"filter": run_filter(run)})
    assert [r["request_id"] for r in rows] == [ids["d"], ids["c"], ids["b"], ids["a"]]
    first = rows[-1]
    assert first["request_user_id"] == "alice"
    assert first["properties"] == {"run": run, "feature": "support", "Helicone-Session-Id": "s-1"}
    assert first["request_body"]["messages"] == CHAT["messages"] and first["response_status"] == 200
    for field in ("request_created_at", "request_path", "request_model", "response_model", "provider", "delay_ms",
                  "prompt_tokens", "completion_tokens", "total_tokens", "cost", "scores", "cache_enabled"):
        assert field in first

    alice = query(gateway, {"filter": run_filter(run, {"request_response_rmt": {"user_id": {"equals": "alice"}}})})
    assert {r["request_id"] for r in alice} == {ids["a"], ids["c"]}
    errors = query(gateway, {"filter": run_filter(run, {"response": {"status": {"gte": 400}}})})
    assert [r["request_id"] for r in errors] == [ids["c"]]
    by_model = query(gateway, {"filter": run_filter(run, {"request": {"model": {"equals": "gpt-4o"}}})})
    assert {r["request_id"] for r in by_model} == {ids["b"], ids["d"]}
    session = query(gateway, {"filter": run_filter(run, {"request_response_rmt": {
        "session_id": {"equals": "s-1"}, "request_name": {"equals": "plan"}}})})
    assert [r["request_id"] for r in session] == [ids["a"]]
    slow_first = query(gateway, {"filter": run_filter(run), "sort": {"latency": "desc"}, "limit": 1})
    assert [r["request_id"] for r in slow_first] == [ids["d"]]
    page = query(gateway, {"filter": run_filter(run), "sort": {"created_at": "asc"}, "limit": 2, "offset": 1})
    assert [r["request_id"] for r in page] == [ids["b"], ids["c"]]
    bare = query(gateway, {"filter": run_filter(run), "includeInputs": False, "limit": 1})
    assert "request_body" not in bare[0] and "response_body" not in bare[0]


def test_query_accepts_helicone_clients_bodies(gateway: Gateway, traffic: dict[str, Any]) -> None:
    helicone_example = {"filter": "all", "isCached": False, "limit": 10, "offset": 0,
                        "sort": {"created_at": "desc"}, "isScored": False, "isPartOfExperiment": False}
    assert 1 <= len(query(gateway, helicone_example)) <= 10
    r = api(gateway, "POST", "/api/v1/request/query", content=b"")
    assert r.status_code == 200 and isinstance(r.json()["data"], list)
    cached = query(gateway, {"filter": run_filter(traffic["run"]), "isCached": True})
    assert cached == []


BAD_QUERIES: list[tuple[Any, str]] = [
    ({"filter": {"request_response_rmt": {"modle": {"equals": "x"}}}},
     "unknown column 'modle' in table 'request_response_rmt'"),
    ({"filter": {"request_response_rmt": {"model": {"gt": "x"}}}}, "operator 'gt' is not valid for text column 'model'"),
    ({"filter": {"request_response_rmt": {"latency": {"gt": "abc"}}}}, "expected a number for 'latency' gt, got \"abc\""),
    ({"filter": {"left": "all", "operator": "nand", "right": "all"}}, 'operator must be "and" or "or"'),
    ({"sort": {"created_at": "sideways"}}, 'must be "asc" or "desc"'),
    ({"limit": 5000}, "'limit' must be an integer from 1 to 1000"),
    ({"limit": 0}, "'limit' must be an integer from 1 to 1000"),
    ({"limit": "10"}, "'limit' must be an integer"),
    ({"offset": -1}, "'offset' must be an integer from 0"),
    ({"includeInputs": "no"}, "'includeInputs' must be true or false"),
    ([1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize("body,message", BAD_QUERIES)
def test_bad_queries_are_400_naming_the_bad_part(gateway: Gateway, body: Any, message: str) -> None:
    r = api(gateway, "POST", "/api/v1/request/query", body)
    assert r.status_code == 400 and r.json()["data"] is None
    assert message in r.json()["error"]


def test_invalid_json_is_400(gateway: Gateway) -> None:
    r = api(gateway, "POST", "/api/v1/request/query", content=b"{filter: all")
    assert r.status_code == 400 and r.json() == {"data": None, "error": "The request body is not valid JSON."}


@pytest.mark.parametrize("extra,status", [
    ({"request_response_rmt": {"user_id": {"equals": "alice' OR '1'='1"}}}, 200),
    ({"request_response_rmt": {"user_id": {"like": "%' OR 1=1 --"}}}, 200),
    ({"request_response_rmt": {"properties": {"feature'); DROP TABLE requests; --": {"equals": "x"}}}}, 200),
    ({"request_response_rmt": {"scores": {"q' OR 1=1": {"gt": 0}}}}, 200),
    ({"request_response_rmt": {"user_id) OR (1=1": {"equals": "x"}}}, 400),
    ({"request_response_rmt; DELETE FROM requests": {"model": {"equals": "x"}}}, 400),
])
def test_injection_attempts_match_literally_or_are_refused(gateway: Gateway, traffic: dict[str, Any],
                                                          extra: dict[str, Any], status: int) -> None:
    r = api(gateway, "POST", "/api/v1/request/query", {"filter": run_filter(traffic["run"], extra)})
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["data"] == []
    assert len(query(gateway, {"filter": run_filter(traffic["run"])})) == 4


# -- feedback, scores, properties ------------------------------------------------------------------

def test_feedback_scores_and_properties(gateway: Gateway, traffic: dict[str, Any]) -> None:
    request_id, run = traffic["ids"]["b"], traffic["run"]
    path = f"/api/v1/request/{request_id}"
    r = api(gateway, "POST", path + "/feedback", {"rating": True})
    assert r.status_code == 201 and r.json() == {"data": None, "error": None}
    assert api(gateway, "POST", path + "/score", {"scores": {"accuracy": 92, "grounded": False}}).status_code == 201
    assert gateway.record(request_id)["scores"] == {"accuracy": 92, "grounded": 0, "helicone-score-feedback": 1}
    assert api(gateway, "POST", path + "/feedback", {"rating": False}).status_code == 201
    assert gateway.record(request_id)["scores"]["helicone-score-feedback"] == 0

    assert api(gateway, "PUT", path + "/property", {"key": "Environment", "value": "production"}).status_code == 201
    assert api(gateway, "PUT", path + "/property", {"Tier": "gold", "feature": "refunds"}).status_code == 201
    assert gateway.record(request_id)["properties"] == {
        "run": run, "feature": "refunds", "environment": "production", "tier": "gold"}

    found = query(gateway, {"filter": run_filter(run, {"left": {"properties": {"environment": {"equals": "production"}}},
                                                       "operator": "and",
                                                       "right": {"request_response_rmt": {"scores": {"accuracy": {"gte": 90}}}}})})
    assert [r["request_id"] for r in found] == [request_id] and found[0]["scores"]["accuracy"] == 92
    negative = query(gateway, {"filter": run_filter(run, {"request_response_rmt": {"helicone-score-feedback": {"equals": False}}})})
    assert [r["request_id"] for r in negative] == [request_id]
    assert [r["request_id"] for r in query(gateway, {"filter": run_filter(run), "isScored": True})] == [request_id]


@pytest.mark.parametrize("suffix,method,body,message", [
    ("feedback", "POST", {"rating": "yes"}, 'Send {"rating": true} or {"rating": false}'),
    ("feedback", "POST", {}, 'Send {"rating": true}'),
    ("score", "POST", {"scores": {"accuracy": 0.9}}, "floats are not accepted"),
    ("score", "POST", {"scores": {"accuracy": "high"}}, "must be an integer or a boolean"),
    ("score", "POST", {"scores": {"accuracy": 2**63}}, "out of range"),
    ("score", "POST", {"scores": {}}, "at least one score"),
    ("score", "POST", {"accuracy": 1}, "at least one score"),
    ("score", "POST", {"scores": {"": 1}}, "A score name must be a non-empty string"),
    ("property", "PUT", {"key": "tier", "value": 3}, "Property 'tier' must have a text value"),
    ("property", "PUT", {"tier": None}, "Property 'tier' must have a text value"),
    ("property", "PUT", {}, 'Send {"key": "<name>"'),
])
def test_bad_updates_are_400(gateway: Gateway, traffic: dict[str, Any], suffix: str, method: str,
                             body: Any, message: str) -> None:
    r = api(gateway, method, f"/api/v1/request/{traffic['ids']['a']}/{suffix}", body)
    assert r.status_code == 400 and r.json()["data"] is None and message in r.json()["error"], r.text


def test_unknown_request_is_404_on_every_route(gateway: Gateway) -> None:
    calls = [("GET", "", None), ("POST", "/feedback", {"rating": True}),
             ("POST", "/score", {"scores": {"a": 1}}), ("PUT", "/property", {"a": "b"})]
    with ThreadPoolExecutor(len(calls)) as pool:   # each waits out the recorder grace period
        answers = list(pool.map(lambda c: api(gateway, c[0], f"/api/v1/request/nope-{uuid.uuid4()}{c[1]}", c[2]), calls))
    for r in answers:
        assert r.status_code == 404 and r.json()["data"] is None and "No request with id" in r.json()["error"]
    nul = api(gateway, "GET", "/api/v1/request/a%00b")
    assert nul.status_code == 404


def test_feedback_right_after_the_response_waits_for_the_record(gateway: Gateway, traffic: dict[str, Any]) -> None:
    request_id = send(gateway, traffic["run"] + "-late")
    r = api(gateway, "POST", f"/api/v1/request/{request_id}/feedback", {"rating": True})
    assert r.status_code == 201, r.text


def test_auth_and_envelopes_for_unknown_routes_and_methods(gateway: Gateway) -> None:
    for method, path in [("POST", "/api/v1/request/query"), ("POST", "/api/v1/request/x/score"),
                         ("PUT", "/api/v1/request/x/property")]:
        r = httpx.request(method, gateway.url + path, json={})
        assert r.status_code == 401 and r.json()["data"] is None
    r = api(gateway, "GET", "/api/v2/nothing")
    assert r.status_code == 404 and "No API route /api/v2/nothing" in r.json()["error"]
    r = api(gateway, "DELETE", "/api/v1/request/query")
    assert r.status_code == 405 and r.json() == {
        "data": None, "error": "Method DELETE is not allowed on /api/v1/request/query."}


# -- OpenAPI ---------------------------------------------------------------------------------------

def test_openapi_documents_every_mounted_route(gateway: Gateway, tmp_path: Path) -> None:
    served = httpx.get(gateway.url + "/api/openapi.json")
    assert served.status_code == 200 and served.json()["openapi"] == "3.1.0"
    assert served.json()["paths"].keys() == OPENAPI["paths"].keys()
    store = open_store(f"sqlite:///{tmp_path / 'unused.db'}")
    routes = mounted_routes(api_app(store, KeyCache(dict)))
    assert routes
    mounted: dict[str, set[str]] = {}
    for path, methods in routes:      # one path may be several routes (GET and POST /v1/keys)
        mounted.setdefault(path, set()).update(methods)
    for path, methods in mounted.items():
        assert path in OPENAPI["paths"], f"{path} is not in the OpenAPI document"
        assert methods == {m.upper() for m in OPENAPI["paths"][path]}, path
    schemas = OPENAPI["components"]["schemas"]
    for name in ("FilterNode", "FilterBranch", "FilterLeaf", "RequestQuery", "Request"):
        assert name in schemas
    assert "latency" in schemas["Table_request_response_rmt"]["properties"]


# -- PostgreSQL shared by several processes ------------------------------------------------------

def test_concurrent_migrate_commands_on_one_postgres(fresh_postgres: Any, tmp_path: Path) -> None:
    import os
    url = fresh_postgres()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")} | {"HELIOGRAPH_DB_URL": url}
    procs = [subprocess.Popen([sys.executable, "-m", "heliograph.cli.main", "db", "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum(out.startswith("Applied:") for out, _ in outputs) == 1
    assert sum("Up to date." in out for out, _ in outputs) == 2


def test_two_gateways_share_one_postgres(fresh_postgres: Any, fake: FakeUpstream, tmp_path: Path) -> None:
    url = fresh_postgres()
    gateways: list[Gateway] = []
    try:
        for n in range(2):
            home = tmp_path / f"gw{n}"
            home.mkdir()
            gateways.append(start_gateway(home, fake.url, extra_env={
                "HELIOGRAPH_DB_URL": url, "HELIOGRAPH_JOURNAL_DIR": str(home / "journal")}))
        run = uuid.uuid4().hex
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda n: send(gateways[n % 2], run, User_Id=f"user-{n % 3}"), range(24)))
        assert len(set(ids)) == 24
        for gw in gateways:
            deadline = time.monotonic() + 15
            while len(rows := query(gw, {"filter": run_filter(run), "limit": 100, "includeInputs": False})) < 24:
                assert time.monotonic() < deadline, f"only {len(rows)} of 24 records visible"
                time.sleep(0.1)
            assert {r["request_id"] for r in rows} == set(ids)
        # A score written through one process is read through the other.
        assert api(gateways[0], "POST", f"/api/v1/request/{ids[1]}/score", {"scores": {"shared": 7}}).status_code == 201
        assert gateways[1].record(ids[1])["scores"] == {"shared": 7}
        assert gateways[1].record(ids[0])["request_body"]["messages"] == CHAT["messages"]
    finally:
        for gw in gateways:
            gw.stop()
            assert "Traceback" not in gw.log(), gw.log()


def test_store_failures_are_enveloped_without_a_stack_trace(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.testclient import TestClient

    from heliograph.auth import hash_key
    from heliograph.storage import StoreUnavailable

    class BrokenStore:
        def query_requests(self, query: Any) -> Any:
            raise RuntimeError("secret internals")

        def get_request(self, request_id: str, *, project: str) -> Any:
            raise StoreUnavailable("sqlite: database is locked")

    app = api_app(BrokenStore(), KeyCache(lambda: {hash_key("sk-hg-test"): {"id": "key_t"}}))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {"Authorization": "Bearer sk-hg-test"}
        r = client.post("/v1/request/query", json={}, headers=headers)
        assert r.status_code == 500 and r.json()["data"] is None
        assert "secret" not in r.text and "Traceback" not in r.text
        r = client.get("/v1/request/x", headers=headers)
        assert r.status_code == 503 and r.json() == {
            "data": None, "error": "The store is unavailable right now; try again shortly."}
