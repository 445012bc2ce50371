"""Erasure and retention through a real `heliograph serve` and the command line."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from heliograph.storage import open_store
from heliograph.testing import FakeUpstream

from .conftest import Gateway, run_cli, start_gateway
from .test_store_contract import make_row

DAY_S = 86_400


def log_call(gw: Gateway, user: str | None, *, days_ago: float = 0, content: str = "Hi", wait: bool = True) -> str:
    start = time.time() - days_ago * DAY_S
    meta = {"Helicone-Property-Feature": "lifecycle"} | ({"Helicone-User-Id": user} if user else {})
    body = {"providerRequest": {"url": "https://api.openai.com/v1/chat/completions", "meta": meta,
                                "json": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}},
            "providerResponse": {"json": {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
                                 "status": 200, "headers": {}},
            "timing": {"startTime": {"seconds": int(start), "milliseconds": 0},
                       "endTime": {"seconds": int(start) + 1, "milliseconds": 0}}}
    r = httpx.post(f"{gw.url}/api/custom/v1/log", json=body, headers={"Authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    request_id: str = r.headers["helicone-id"]
    if wait:
        gw.record(request_id)
    return request_id


def api(gw: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {gw.key}"}, timeout=30, **kwargs)


def test_erase_a_user_over_the_api(gateway: Gateway) -> None:
    user = f"gdpr-{uuid.uuid4().hex}"
    theirs = [log_call(gateway, user) for _ in range(3)]
    other = log_call(gateway, f"other-{uuid.uuid4().hex}", content=f"please forward this to {user}")
    assert api(gateway, "POST", f"/api/v1/request/{theirs[0]}/score", json={"scores": {"ok": 1}}).status_code == 201

    assert httpx.delete(f"{gateway.url}/api/v1/user/{user}").status_code == 401
    r = api(gateway, "DELETE", f"/api/v1/user/{user}")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["deleted"]["requests"] == 3 and data["deleted"]["request_bodies"] == 3
    assert data["deleted"]["request_scores"] == 1 and data["deleted"]["request_properties"] == 3
    assert data["total"] == sum(data["deleted"].values()) and data["subject"].startswith("hmac-sha256:")
    for request_id in theirs:
        assert api(gateway, "GET", f"/api/v1/request/{request_id}").status_code == 404
    assert user in str(gateway.record(other)["request_body"])      # someone else's record, kept
    query = {"filter": {"request_response_rmt": {"user_id": {"equals": user}}}}
    assert api(gateway, "POST", "/api/v1/request/query", json=query).json()["data"] == []

    deadline = time.monotonic() + 5
    while data["subject"] not in gateway.log():
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.05)
    [line] = [line for line in gateway.log().splitlines() if data["subject"] in line]
    assert "heliograph.audit" in line and "erase_user" in line and "actor=key:" in line and user not in line

    again = api(gateway, "DELETE", f"/api/v1/user/{user}").json()["data"]
    assert again["total"] == 0 and again["subject"] == data["subject"]


def test_user_ids_with_slashes_and_spaces_can_be_erased(gateway: Gateway) -> None:
    user = f"tenant/{uuid.uuid4().hex} x"
    request_id = log_call(gateway, user)
    r = api(gateway, "DELETE", "/api/v1/user/" + quote(user, safe="/"))
    assert r.status_code == 200 and r.json()["data"]["deleted"]["requests"] == 1
    assert api(gateway, "GET", f"/api/v1/request/{request_id}").status_code == 404


def test_erase_a_user_from_the_command_line_while_serving(gateway: Gateway) -> None:
    user = f"cli-{uuid.uuid4().hex}"
    ids = [log_call(gateway, user) for _ in range(2)]
    result = run_cli("users", "erase", user, env=gateway.env)
    assert result.returncode == 0, result.stderr
    assert "Erased user (audit subject hmac-sha256:" in result.stdout and user not in result.stdout
    assert [line.split() for line in result.stdout.splitlines() if line.split()[0] == "requests"] == [["requests", "2"]]
    assert all(api(gateway, "GET", f"/api/v1/request/{i}").status_code == 404 for i in ids)
    as_json = run_cli("users", "erase", user, "--json", env=gateway.env)
    assert json.loads(as_json.stdout)["deleted"]["requests"] == 0


def test_a_running_gateway_applies_both_retentions(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={
        "HELIOGRAPH_BODY_RETENTION_DAYS": "1", "HELIOGRAPH_METRICS_RETENTION_DAYS": "3",
        "HELIOGRAPH_RETENTION_INTERVAL_SECONDS": "0.2"})
    try:
        fresh = log_call(gw, "u")
        # Not waited for: a retention pass may remove them before a read could see them.
        body_expired = log_call(gw, "u", days_ago=2, wait=False)
        row_expired = log_call(gw, "u", days_ago=5, wait=False)
        deadline = time.monotonic() + 10
        while "heliograph_records_written_total 3.0" not in httpx.get(gw.url + "/metrics").text:
            assert time.monotonic() < deadline, "records not written"
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while api(gw, "GET", f"/api/v1/request/{row_expired}").status_code != 404 or \
                gw.record(body_expired)["request_body"] is not None:
            assert time.monotonic() < deadline, "retention did not run"
            time.sleep(0.1)
        record = gw.record(body_expired)
        assert record["response_body"] is None and record["total_tokens"] == 5 and record["properties"]
        assert gw.record(fresh)["request_body"]["model"] == "gpt-4o-mini"
    finally:
        gw.stop()


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    return env | {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp_path / 'prune.db'}"} | extra


def test_db_prune_does_one_pass_and_reports_counts(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    store = open_store(env["HELIOGRAPH_DB_URL"])
    store.migrate()
    now = int(time.time() * 1000)
    store.insert_requests([make_row(f"r{i}", created_at=now - days * DAY_S * 1000, props={"k": "v"})
                           for i, days in enumerate((1, 40, 45, 500))])
    store.close()
    result = run_cli("db", "prune", env=env)                        # defaults: 30 and 400 days
    assert result.returncode == 0, result.stderr
    bodies, requests = result.stdout.splitlines()
    assert bodies == "bodies older than 30 days: 2 removed (their metrics stay)"
    assert requests.startswith("requests older than 400 days: 1 removed (")
    assert "request_properties 1" in requests and "request_bodies 1" in requests and "rollup" not in requests
    result = run_cli("db", "prune", "--body-days", "0", "--metrics-days", "10", env=env)
    assert result.stdout.splitlines()[0] == "bodies: kept forever (body_retention_days = 0)"
    assert result.stdout.splitlines()[1].startswith("requests older than 10 days: 2 removed")
    refused = run_cli("db", "prune", "--metrics-days", "-1", env=env)
    assert refused.returncode == 2 and "at least 0" in refused.stderr
    bad_env = run_cli("config", "show", env=env | {"HELIOGRAPH_BODY_RETENTION_DAYS": "soon"})
    assert bad_env.returncode == 2 and "HELIOGRAPH_BODY_RETENTION_DAYS" in bad_env.stderr
    shown = orjson.loads(run_cli("config", "show", env=env).stdout)
    assert (shown["body_retention_days"], shown["metrics_retention_days"]) == (30, 400)
