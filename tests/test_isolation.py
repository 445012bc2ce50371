"""Projects and scopes, for every /api route, generated from /api/openapi.json: a route added
later is covered without anyone remembering to add it here.

For each documented operation:
* each scope (proxy < read < admin) of a project-A key gets exactly what the route's `x-scope`
  says: a 403 naming the scope below it, an answer at or above it;
* A's admin key given project B's ids gets what an unknown id gets (404, or zero rows), and no
  answer to A ever contains anything of B's;
* afterwards B's data and keys are intact.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from heliograph.auth import SCOPES, hash_key
from heliograph.storage import open_store
from heliograph.testing import FakeUpstream

from .conftest import Gateway, run_cli, start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
SECRET = "beta-secret"     # in every value of project B's traffic


@dataclass
class Project:
    keys: dict[str, str] = field(default_factory=dict)       # scope → key
    key_ids: dict[str, str] = field(default_factory=dict)    # scope → key id
    request_ids: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)     # path parameter → a value this project owns


def new_key(gw: Gateway, name: str, scope: str, project: str) -> tuple[str, str]:
    created = run_cli("keys", "create", "--name", name, "--scope", scope, "--project", project, env=gw.env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    if scope != "admin":
        return key, ""
    deadline = time.monotonic() + 5
    # A key unknown to the gateway makes it reload at most once a second: a burst of new keys waits.
    while (listed := httpx.get(gw.url + "/api/v1/keys", headers={"Authorization": f"Bearer {key}"})).status_code == 401:
        assert time.monotonic() < deadline, listed.text
        time.sleep(0.2)
    return key, next(k["id"] for k in listed.json()["data"] if k["name"] == name)


def traffic(gw: Gateway, key: str, tag: str, project: Project) -> None:
    for n in range(3):
        r = httpx.post(gw.url + "/openai/v1/chat/completions", timeout=30, json={**CHAT, "user": f"{tag}-user"},
                       headers={"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer k",
                                "Helicone-Session-Id": f"{tag}-session", "Helicone-Session-Path": f"/{tag}/step{n}",
                                "Helicone-Property-Feature": f"{tag}-feature", "Helicone-Request-Name": f"{tag}-name"})
        assert r.status_code == 200, r.text
        project.request_ids.append(r.headers["helicone-id"])
    for request_id in project.request_ids:     # written, as its own project's admin sees it
        deadline = time.monotonic() + 10
        while httpx.get(f"{gw.url}/api/v1/request/{request_id}",
                        headers={"Authorization": f"Bearer {project.keys['admin']}"}).status_code != 200:
            assert time.monotonic() < deadline, f"{request_id} was never recorded"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def world(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Project, Project]]:
    gw = start_gateway(tmp_path_factory.mktemp("isolation"), fake.url)
    assert run_cli("projects", "create", "beta", env=gw.env).returncode == 0
    a, b = Project(), Project()
    for project, name in ((a, "default"), (b, "beta")):
        for scope in ("admin", *SCOPES):
            project.keys[scope], key_id = new_key(gw, f"{name}-{scope}-{uuid.uuid4().hex[:6]}", scope, name)
            project.key_ids[scope] = key_id or project.key_ids.get("admin", "")
    traffic(gw, a.keys["proxy"], "alpha", a)
    traffic(gw, b.keys["proxy"], SECRET, b)
    b_key_ids = httpx.get(gw.url + "/api/v1/keys", headers={"Authorization": f"Bearer {b.keys['admin']}"}).json()["data"]
    budgets, alerts, webhooks = {}, {}, {}
    for project in (a, b):
        made = httpx.post(gw.url + "/api/v1/budgets", json={"target": "project", "usd": 1000, "period": "month"},
                          headers={"Authorization": f"Bearer {project.keys['admin']}"})
        assert made.status_code == 201, made.text
        budgets[id(project)] = made.json()["data"]["id"]
        tag = "alpha" if project is a else SECRET
        made = httpx.post(gw.url + "/api/v1/alerts", headers={"Authorization": f"Bearer {project.keys['admin']}"},
                          json={"name": f"{tag} alert", "metric": "cost", "threshold": 1000, "window": 3600})
        assert made.status_code == 201, made.text
        alerts[id(project)] = made.json()["data"]["id"]
        made = httpx.post(gw.url + "/api/v1/webhooks", headers={"Authorization": f"Bearer {project.keys['admin']}"},
                          json={"url": f"http://127.0.0.1:9/{tag}", "sample_rate": 0})
        assert made.status_code == 201, made.text
        webhooks[id(project)] = made.json()["data"]["id"]
    prompts = {}
    for project, tag in ((a, "alpha"), (b, SECRET)):
        made = httpx.post(gw.url + "/api/v1/prompt-2025", headers={"Authorization": f"Bearer {project.keys['admin']}"},
                          json={"name": f"{tag}-prompt", "tags": [tag], "promptBody": {
                              "model": "gpt-4o-mini", "messages": [{"role": "system", "content": f"{tag} {{{{hc:x:string}}}}"}]}})
        assert made.status_code == 201, made.text
        prompts[id(project)] = made.json()["data"]
        # and a prompt its traffic versioned (Helicone-Prompt-Id): both kinds must stay in their project
        r = httpx.post(gw.url + "/openai/v1/chat/completions", timeout=30, json={**CHAT, "user": f"{tag}-user"},
                       headers={"Helicone-Auth": f"Bearer {project.keys['proxy']}", "Authorization": "Bearer k",
                                "Helicone-Prompt-Id": "shared-name", "Helicone-Prompt-Variables": "{}"})
        assert r.status_code == 200, r.text
    b.values = {"request_id": b.request_ids[0], "session_id": f"{SECRET}-session", "user_id": f"{SECRET}-user",
                "key_id": b_key_ids[0]["id"], "key": "feature", "provider": "openai", "budget_id": budgets[id(b)],
                "promptId": prompts[id(b)]["id"], "versionId": prompts[id(b)]["versionId"],
                "alert_id": alerts[id(b)], "webhook_id": webhooks[id(b)]}
    throwaway, _ = new_key(gw, f"throwaway-{uuid.uuid4().hex[:6]}", "proxy", "default")
    a_keys = httpx.get(gw.url + "/api/v1/keys", headers={"Authorization": f"Bearer {a.keys['admin']}"}).json()["data"]
    a.values = {"request_id": a.request_ids[0], "session_id": "alpha-session", "user_id": "nobody-here",
                "key_id": next(k["id"] for k in a_keys if k["name"].startswith("throwaway")), "key": "feature",
                "provider": "mistral", "budget_id": budgets[id(a)],
                "promptId": prompts[id(a)]["id"], "versionId": prompts[id(a)]["versionId"],
                "alert_id": alerts[id(a)], "webhook_id": webhooks[id(a)]}
    yield gw, a, b
    gw.stop()


def operations(gw: Gateway) -> list[tuple[str, str, dict[str, Any]]]:
    document = httpx.get(gw.url + "/api/openapi.json").json()
    found = [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()
             if path != "/api/openapi.json"]
    assert len(found) > 15
    return found


def call(gw: Gateway, path: str, method: str, op: dict[str, Any], key: str, values: dict[str, str]) -> httpx.Response:
    for part in path.split("/"):
        if part.startswith("{"):
            name = part[1:-1]
            assert name in values, f"{method.upper()} {path}: give the isolation test a value of '{name}' per project"
            path = path.replace(part, values[name])
    content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    body = content.get("example", {}) if content else None
    return httpx.request(method.upper(), gw.url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {key}"})


def test_every_operation_says_which_scope_it_needs(world: tuple[Gateway, Project, Project]) -> None:
    gw, _, _ = world
    missing = [f"{m.upper()} {p}" for p, m, op in operations(gw) if op.get("x-scope") not in SCOPES]
    assert not missing, f"operations without x-scope: {missing}"


def test_each_scope_gets_exactly_what_the_table_says(world: tuple[Gateway, Project, Project]) -> None:
    gw, a, _ = world
    wrong = []
    for path, method, op in operations(gw):
        needed = SCOPES.index(op["x-scope"])
        for scope in SCOPES:
            r = call(gw, path, method, op, a.keys[scope], a.values)
            allowed = SCOPES.index(scope) >= needed
            if allowed and r.status_code in (401, 403) or not allowed and r.status_code != 403:
                wrong.append(f"{method.upper()} {path} with a {scope} key: {r.status_code} {r.text[:120]}")
            if not allowed and r.status_code == 403 and op["x-scope"] not in r.json()["error"]:
                wrong.append(f"{method.upper()} {path}: the 403 does not name the scope needed: {r.text}")
    assert not wrong, "\n".join(wrong)


def test_another_projects_ids_are_unknown_and_its_rows_never_seen(world: tuple[Gateway, Project, Project]) -> None:
    gw, a, b = world
    leaks = []
    for path, method, op in operations(gw):
        r = call(gw, path, method, op, a.keys["admin"], b.values)
        text = r.text
        for part in path.split("/"):    # an unknown id's answer names the id asked for: not a leak
            if part.startswith("{"):
                text = text.replace(b.values[part[1:-1]], "")
        if SECRET in text or any(request_id in text for request_id in b.request_ids):
            leaks.append(f"{method.upper()} {path}: {r.status_code} {r.text[:200]}")
        ids = [p for p in ("{request_id}", "{session_id}", "{key_id}", "{budget_id}", "{promptId}", "{versionId}",
                           "{alert_id}", "{webhook_id}")
               if p in path]
        if ids and r.status_code != 404:
            leaks.append(f"{method.upper()} {path} with B's {ids[0]}: {r.status_code}, not the 404 of an unknown id")
        # Same for A's own, unfiltered reads: nothing of B's.
        mine = call(gw, path, method, op, a.keys["admin"], a.values)
        if SECRET in mine.text:
            leaks.append(f"{method.upper()} {path} (A's own values) shows B's data: {mine.text[:200]}")
    assert not leaks, "\n".join(leaks)


def test_project_b_is_intact_after_project_a_tried_everything(world: tuple[Gateway, Project, Project]) -> None:
    gw, a, b = world
    test_another_projects_ids_are_unknown_and_its_rows_never_seen(world)
    headers = {"Authorization": f"Bearer {b.keys['admin']}"}
    for request_id in b.request_ids:
        record = httpx.get(f"{gw.url}/api/v1/request/{request_id}", headers=headers)
        assert record.status_code == 200 and record.json()["data"]["request_user_id"] == f"{SECRET}-user"
    keys = httpx.get(gw.url + "/api/v1/keys", headers=headers).json()["data"]
    assert all(k["revoked_at"] is None for k in keys)
    assert [x["id"] for x in httpx.get(gw.url + "/api/v1/budgets", headers=headers).json()["data"]] == [b.values["budget_id"]]
    assert [x["id"] for x in httpx.get(gw.url + "/api/v1/alerts", headers=headers).json()["data"]] == [b.values["alert_id"]]
    assert [x["id"] for x in httpx.get(gw.url + "/api/v1/webhooks", headers=headers).json()["data"]] == [b.values["webhook_id"]]
    prompt = httpx.get(f"{gw.url}/api/v1/prompt-2025/id/{b.values['promptId']}", headers=headers).json()["data"]
    assert prompt["environments"] == {"production": b.values["versionId"]}
    shared = httpx.get(f"{gw.url}/api/v1/prompt-2025/id/shared-name", headers=headers).json()["data"]
    assert shared["kind"] == "auto" and shared["versions_count"] == 1
    assert httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT, timeout=30,
                      headers={"Helicone-Auth": f"Bearer {b.keys['proxy']}", "Authorization": "Bearer k"}).status_code == 200


def test_a_proxy_key_is_refused_on_read_routes_with_the_scope_named(gateway: Gateway, tmp_path: Path) -> None:
    key = run_cli("keys", "create", "--name", "app", env=gateway.env).stdout.strip().splitlines()[-1]
    r = query_once_known(gateway, key)
    assert r.status_code == 403
    assert "'read'" in r.json()["error"] and "'proxy'" in r.json()["error"]


def test_an_expired_key_is_refused_saying_so(gateway: Gateway) -> None:
    created = run_cli("keys", "create", "--name", "old", "--scope", "read", "--expires", "2020-01-01", env=gateway.env)
    assert created.returncode != 0 and "past" in created.stderr
    key = run_cli("keys", "create", "--name", "brief", "--scope", "read", "--expires", "1m",
                  env=gateway.env).stdout.strip().splitlines()[-1]
    assert query_once_known(gateway, key).status_code == 200
    store = open_store(gateway.db_url)
    try:   # the clock moves on: the same key, expired
        store.create_key("key_expired", "expired", hash_key("sk-hg-expired"), "sk-hg-exp", scope="read",
                         expires_at=int(time.time() * 1000) - 1)
    finally:
        store.close()
    refused = query_once_known(gateway, "sk-hg-expired")
    assert refused.status_code == 401 and "expired on" in refused.json()["error"]


def query_once_known(gateway: Gateway, key: str) -> httpx.Response:
    """A key created a moment ago: the gateway looks up unknown keys at most once a second."""
    deadline = time.monotonic() + 5
    while True:
        r = httpx.post(gateway.url + "/api/v1/request/query", json={}, headers={"Authorization": f"Bearer {key}"})
        if r.status_code != 401 or "expired" in r.text or time.monotonic() > deadline:
            return r
        time.sleep(0.2)
