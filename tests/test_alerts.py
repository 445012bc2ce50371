"""Alerts and webhooks end to end (issue 12): real `heliograph serve` processes evaluating every
second, traffic through the proxy to the fake upstream with the real OpenAI SDK, and real local
receivers (HTTP, and SMTP with STARTTLS and a login) getting the notifications."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, free_port, run_cli, start_gateway
from .receivers import HttpReceiver, Received, SmtpReceiver

SECRET = "alert-secret-123"
FAST = {"HELIOGRAPH_ALERT_INTERVAL": "0.5", "HELIOGRAPH_ALERT_COOLDOWN": "1.5",
        "HELIOGRAPH_DELIVERY_RETRY_BASE": "0.2", "HELIOGRAPH_DELIVERY_TIMEOUT": "3"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver(free_port()).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpReceiver]:
    s = SmtpReceiver(tmp_path_factory.mktemp("smtp"), free_port()).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, smtp: SmtpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {**FAST, "HELIOGRAPH_SMTP_HOST": "127.0.0.1", "HELIOGRAPH_SMTP_PORT": str(smtp.controller.port),
           "HELIOGRAPH_SMTP_USERNAME": "alerts", "HELIOGRAPH_SMTP_PASSWORD": "s3cret",
           "HELIOGRAPH_SMTP_FROM": "heliograph@example.test", "SSL_CERT_FILE": str(smtp.cert),
           "HELIOGRAPH_PUBLIC_URL": "https://heliograph.example.test"}
    g = start_gateway(tmp_path_factory.mktemp("alerts"), fake.url, extra_env=env)
    yield g
    g.stop()


def api(gw: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + "/api/v1" + path, headers={"Authorization": f"Bearer {gw.key}"},
                         timeout=30, **kwargs)


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="sk-test", max_retries=0,
                         default_headers={"Helicone-Auth": f"Bearer {gw.key}"})


def chat(gw: Gateway, n: int, *, fail: bool = False, user: str = "u", **properties: str) -> None:
    headers = {"Helicone-User-Id": user, **{f"Helicone-Property-{k}": v for k, v in properties.items()}}
    if fail:
        headers["X-Fake-Scenario"] = "status=500"
    with client(gw) as c:
        for _ in range(n):
            try:
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                          extra_headers=headers)
            except openai.InternalServerError:
                assert fail


def rule(gw: Gateway, **spec: Any) -> dict[str, Any]:
    r = api(gw, "POST", "/alerts", json=spec)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def notifications(receiver: HttpReceiver, rule_id: str, path: str = "/hook") -> list[Received]:
    return [r for r in receiver.on(path) if r.json.get("rule", {}).get("id") == rule_id]


def wait_states(receiver: HttpReceiver, rule_id: str, states: list[str], timeout: float = 20) -> list[Received]:
    receiver.wait_for(lambda _: [r.json["state"] for r in notifications(receiver, rule_id)] == states,
                      timeout, f"{states} for {rule_id}")
    return notifications(receiver, rule_id)


def test_invalid_rules_are_refused_naming_the_field(gw: Gateway) -> None:
    good = {"name": "x", "metric": "error_rate", "threshold": 5, "window": 300}
    for change, field in [({"metric": "errors"}, "'metric'"), ({"window": 10}, "'window'"),
                          ({"threshold": 150}, "'threshold'"), ({"threshold": "5"}, "'threshold'"),
                          ({"group_by": "colour"}, "'group_by'"), ({"filter": {"nope": {}}}, "'filter'"),
                          ({"mode": "anomaly", "threshold": 0.5}, "'threshold'"),
                          ({"channels": [{"type": "pager"}]}, "'channels[0].type'"),
                          ({"channels": [{"type": "webhook", "url": "ftp://x"}]}, "'channels[0].url'"),
                          ({"channels": [{"type": "email", "to": ["not-an-address"]}]}, "'channels[0].to'"),
                          ({"min_requests": -1}, "'min_requests'"), ({"colour": 1}, "'colour'"),
                          # read from the rows (a property filter, grouped by model): short windows only
                          ({"group_by": "model", "filter": {"properties": {"f": {"equals": "x"}}}, "window": 7200},
                           "'filter'")]:
        r = api(gw, "POST", "/alerts", json={**good, **change})
        assert r.status_code == 400 and field in r.json()["error"], (change, r.text)
    assert api(gw, "POST", "/alerts", json={k: v for k, v in good.items() if k != "name"}).status_code == 400


def test_error_spike_fires_then_resolves_signed_on_webhook_slack_and_email(
        gw: Gateway, receiver: HttpReceiver, smtp: SmtpReceiver) -> None:
    tag = uuid.uuid4().hex[:8]
    made = rule(gw, name=f"errors {tag}", metric="error_rate", threshold=50, window=60, min_requests=3,
                filter={"properties": {"lane": {"equals": tag}}},
                channels=[{"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET},
                          {"type": "slack", "url": receiver.url + "/slack"},
                          {"type": "email", "to": ["oncall@example.test"]}])
    assert made["channels"][0]["secret"] == SECRET and made["state"] == "ok"
    chat(gw, 2, lane=tag)
    time.sleep(1.2)
    assert notifications(receiver, made["id"]) == []        # 0 % errors: nothing to say
    chat(gw, 4, fail=True, lane=tag)                        # 4 of 6 failed: 67 % > 50 %
    firing = wait_states(receiver, made["id"], ["firing"])[0]
    assert firing.signed_with(SECRET) and not firing.signed_with("another-secret")
    body = firing.json
    assert body["metric"] == "error_rate" and body["threshold"] == 50 and body["window"] == 60
    # Evaluated every 0.5 s, maybe before the last failure was recorded: 3 of 5 is 60 %, 4 of 6 67 %.
    assert 50 < body["value"] < 67 and body["group"] is None and body["requests"] in (5, 6)
    assert body["url"] == f"https://heliograph.example.test/alerts/{made['id']}"
    receiver.wait_for(lambda _: receiver.on("/slack"), what="a Slack message")
    slack = receiver.on("/slack")[0].json["text"]
    assert "FIRING" in slack and f"errors {tag}" in slack and made["id"] in slack
    deadline = time.monotonic() + 15
    while not smtp.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    mail = smtp.messages[0]
    assert mail["to"] == ["oncall@example.test"] and mail["tls"] and mail["login"]
    assert f"errors {tag}" in mail["data"] and "FIRING" in mail["data"]

    # Errors stop: the rate falls under 50 %, and after the cooldown the alert resolves, once.
    shown = api(gw, "GET", f"/alerts/{made['id']}").json()["data"]
    assert shown["state"] == "firing" and shown["channels"][0]["secret"] == "****"
    chat(gw, 6, lane=tag)                                   # 4 of 12: 33 %
    resolved = wait_states(receiver, made["id"], ["firing", "resolved"])[1]
    assert resolved.signed_with(SECRET) and resolved.json["value"] < 50
    time.sleep(1.5)
    assert [r.json["state"] for r in notifications(receiver, made["id"])] == ["firing", "resolved"]
    shown = api(gw, "GET", f"/alerts/{made['id']}").json()["data"]
    assert shown["state"] == "resolved"
    assert [e["state"] for e in shown["history"]] == ["resolved", "firing"]
    assert {d["status"] for d in shown["deliveries"]} == {"delivered"} and len(shown["deliveries"]) == 6
    assert all(d["last_status"] in (200, 250) for d in shown["deliveries"])


def test_grouping_by_user_fires_only_for_the_offending_user(gw: Gateway, receiver: HttpReceiver) -> None:
    tag = uuid.uuid4().hex[:8]
    made = rule(gw, name=f"per user {tag}", metric="error_rate", threshold=40, window=60, min_requests=2,
                group_by="user", filter={"properties": {"lane": {"equals": tag}}},
                channels=[{"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET}])
    chat(gw, 3, user=f"good-{tag}", lane=tag)
    chat(gw, 1, user=f"bad-{tag}", lane=tag)
    chat(gw, 2, fail=True, user=f"bad-{tag}", lane=tag)
    got = wait_states(receiver, made["id"], ["firing"])
    assert got[0].json["group"] == f"bad-{tag}" and got[0].json["group_by"] == "user"
    time.sleep(1.5)
    assert len(notifications(receiver, made["id"])) == 1
    shown = api(gw, "GET", f"/alerts/{made['id']}").json()["data"]
    assert shown["firing_groups"] == [f"bad-{tag}"]


def test_anomaly_rule_fires_on_three_times_the_seven_day_baseline(gw: Gateway, receiver: HttpReceiver) -> None:
    tag = uuid.uuid4().hex[:8]
    two_days_ago = time.time() - 2 * 86400
    # History through async logging: lane a failed 1 in 10 (10 %), lane b 3 in 10 (30 %).
    for lane, failures in (("a", 1), ("b", 3)):
        for n in range(10):
            body = {"providerRequest": {"url": "https://api.openai.com/v1/chat/completions",
                                        "json": {"model": "gpt-4o-mini", "messages": []},
                                        "meta": {"Helicone-Property-Sub": f"{lane}-{tag}"}},
                    "providerResponse": {"json": {"usage": {"prompt_tokens": 1, "completion_tokens": 1}},
                                         "status": 500 if n < failures else 200, "headers": {}},
                    "timing": {"startTime": {"seconds": int(two_days_ago) + n, "milliseconds": 0},
                               "endTime": {"seconds": int(two_days_ago) + n, "milliseconds": 300}}}
            r = httpx.post(gw.url + "/api/custom/v1/log", json=body, headers={"Authorization": f"Bearer {gw.key}"})
            assert r.status_code == 200, r.text
    made = rule(gw, name=f"anomaly {tag}", metric="error_rate", mode="anomaly", threshold=3, window=60,
                min_requests=4, group_by="property:sub",
                channels=[{"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET}])
    # Now both lanes fail 2 in 4 (50 %): above 3 × 10 % for a, below 3 × 30 % for b.
    for lane in ("a", "b"):
        chat(gw, 2, sub=f"{lane}-{tag}")
        chat(gw, 2, fail=True, sub=f"{lane}-{tag}")
    got = wait_states(receiver, made["id"], ["firing"])[0].json
    assert got["group"] == f"a-{tag}" and got["mode"] == "anomaly" and abs(got["baseline"] - 10) < 0.01
    assert got["value"] == 50
    time.sleep(1.5)
    assert len(notifications(receiver, made["id"])) == 1


def test_test_action_update_and_delete(gw: Gateway, receiver: HttpReceiver) -> None:
    made = rule(gw, name="to test", metric="cost", threshold=1000, window=3600,
                channels=[{"type": "webhook", "url": receiver.url + "/hook"}])
    secret = made["channels"][0]["secret"]
    assert secret.startswith("whsec_")
    bad = api(gw, "POST", f"/alerts/{made['id']}/test", json={"channel": 1})
    assert bad.status_code == 400 and "'channel'" in bad.json()["error"]
    r = api(gw, "POST", f"/alerts/{made['id']}/test", json={"channel": 0})
    assert r.status_code == 202 and len(r.json()["data"]["queued"]) == 1
    receiver.wait_for(lambda _: notifications(receiver, made["id"]), what="the test notification")
    test = notifications(receiver, made["id"])[0]
    assert test.json["state"] == "test" and test.signed_with(secret)
    shown = api(gw, "GET", f"/alerts/{made['id']}").json()["data"]
    masked = {**{k: shown[k] for k in ("name", "metric", "window", "channels")}, "threshold": 5}
    r = api(gw, "PUT", f"/alerts/{made['id']}", json=masked)
    assert r.status_code == 200 and r.json()["data"]["threshold"] == 5
    api(gw, "POST", f"/alerts/{made['id']}/test")
    receiver.wait_for(lambda _: len(notifications(receiver, made["id"])) == 2, what="a second test")
    assert all(x.signed_with(secret) for x in notifications(receiver, made["id"]))    # the secret was kept
    assert api(gw, "PUT", f"/alerts/{made['id']}", json={**masked, "window": 5}).status_code == 400
    assert api(gw, "DELETE", f"/alerts/{made['id']}").status_code == 200
    assert api(gw, "GET", f"/alerts/{made['id']}").status_code == 404
    assert api(gw, "POST", f"/alerts/{made['id']}/test").status_code == 404


def test_budget_notifies_at_80_and_100_percent(gw: Gateway, receiver: HttpReceiver) -> None:
    user = f"spender-{uuid.uuid4().hex[:8]}"
    # Budgets notify through the channels of the project's alert rules.
    rule(gw, name=f"channels for {user}", metric="cost", threshold=1000, window=3600,
         channels=[{"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET}])
    r = api(gw, "POST", "/budgets", json={"target": "user", "user": user, "usd": 0.0000001, "period": "day"})
    assert r.status_code == 201, r.text
    budget_id = r.json()["data"]["id"]
    chat(gw, 1, user=user)
    receiver.wait_for(lambda _: len(notifications(receiver, budget_id)) >= 2, what="budget notices")
    got = notifications(receiver, budget_id)
    assert sorted(x.json["level"] for x in got) == [80, 100] and all(x.signed_with(SECRET) for x in got)
    assert got[0].json["group"] == user and got[0].json["kind"] == "budget"
    time.sleep(1.5)
    assert len(notifications(receiver, budget_id)) == 2     # once per period


def test_per_request_webhook_filters_samples_and_signs(gw: Gateway, receiver: HttpReceiver) -> None:
    tag = uuid.uuid4().hex[:8]
    r = api(gw, "POST", "/webhooks", json={"url": receiver.url + f"/requests-{tag}", "sample_rate": 100,
                                           "property_filters": {"Hooked": tag}, "include_data": True})
    assert r.status_code == 201, r.text
    hook = r.json()["data"]
    assert hook["secret"] and "secret" not in api(gw, "GET", "/webhooks").json()["data"][0]
    chat(gw, 1, user="hook-user", hooked=tag)
    chat(gw, 1, user="hook-user", hooked="other")
    got = receiver.wait_for(lambda _: receiver.on(f"/requests-{tag}"), what="a request webhook")
    time.sleep(0.5)
    assert len(receiver.on(f"/requests-{tag}")) == 1
    call = got[-1]
    assert call.signed_with(hook["secret"])
    payload = call.json
    assert payload["user_id"] == "hook-user" and payload["model"] == "gpt-4o-mini" and payload["provider"] == "openai"
    assert set(payload["metadata"]) == {"cost", "promptTokens", "completionTokens", "totalTokens", "latencyMs"}
    assert payload["metadata"]["totalTokens"] > 0 and "gpt-4o-mini" in payload["request_body"]
    assert gw.record(payload["request_id"])["request_user_id"] == "hook-user"
    r = api(gw, "POST", "/webhooks", json={"url": receiver.url + "/never", "sample_rate": 0})
    chat(gw, 2)
    assert api(gw, "POST", "/webhooks", json={"url": "nope"}).status_code == 400
    assert api(gw, "POST", "/webhooks", json={"url": receiver.url, "sample_rate": 101}).status_code == 400
    time.sleep(0.5)
    assert receiver.on("/never") == []
    log = api(gw, "GET", "/deliveries").json()["data"]
    assert any(d["source_id"] == hook["id"] and d["status"] == "delivered" and d["last_status"] == 200 for d in log)


def test_slow_receivers_slow_neither_the_proxy_nor_other_notifications(gw: Gateway, receiver: HttpReceiver) -> None:
    tag = uuid.uuid4().hex[:8]
    receiver.delays[f"/slow-{tag}"] = 10          # longer than the 3 s delivery_timeout: every call times out
    hook = api(gw, "POST", "/webhooks", json={"url": receiver.url + f"/slow-{tag}", "property_filters": {"slow": tag}})
    made = rule(gw, name=f"fast {tag}", metric="cost", threshold=1000, window=3600,
                channels=[{"type": "webhook", "url": receiver.url + f"/fast-{tag}"}])
    try:
        with client(gw) as c:
            took = []
            for _ in range(40):           # 40 slow calls queued: more than the worker's slots
                started = time.monotonic()
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                          extra_headers={"Helicone-Property-Slow": tag})
                took.append(time.monotonic() - started)
        assert sorted(took)[len(took) // 2] < 0.2 and max(took) < 1.0, took
        time.sleep(0.5)                   # the slow calls hold their slots now
        asked = time.monotonic()
        assert api(gw, "POST", f"/alerts/{made['id']}/test").status_code == 202
        receiver.wait_for(lambda _: receiver.on(f"/fast-{tag}"), timeout=10, what="the alert behind slow webhooks")
        assert time.monotonic() - asked < 1.0     # not behind the slow calls (their timeouts end ~3 s after)
    finally:
        api(gw, "DELETE", f"/webhooks/{hook.json()['data']['id']}")
        api(gw, "DELETE", f"/alerts/{made['id']}")


def test_webhook_calls_wait_for_a_down_receiver_and_survive_kill_9(fake: FakeUpstream, tmp_path: Path) -> None:
    port = free_port()
    gw = start_gateway(tmp_path, fake.url, extra_env=FAST)
    try:
        r = api(gw, "POST", "/webhooks", json={"url": f"http://127.0.0.1:{port}/req"})
        secret = r.json()["data"]["secret"]
        chat(gw, 1, user="durable")
        time.sleep(0.6)                 # recorded, its call failed at least once: the receiver is down
        log = api(gw, "GET", "/deliveries").json()["data"]
        assert log and log[0]["status"] == "pending" and log[0]["last_error"]
        gw.stop(9)                      # kill -9 with the call still pending
        receiver = HttpReceiver(port).start()
        try:
            gw = start_gateway(tmp_path, fake.url, extra_env=FAST, reuse_key=gw.key)
            got = receiver.wait_for(lambda rs: rs, what="the call made before the kill")
            assert got[0].json["user_id"] == "durable" and got[0].signed_with(secret)
            time.sleep(0.6)
            assert len(receiver.received) == 1
        finally:
            receiver.stop()
    finally:
        gw.stop()


def test_webhook_calls_of_records_waiting_in_the_journal_are_made_after_the_restart(
        fake: FakeUpstream, tmp_path: Path, receiver: HttpReceiver) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={**FAST, "HELIOGRAPH_DRAIN_TIMEOUT": "1"})
    tag = uuid.uuid4().hex[:8]
    api(gw, "POST", "/webhooks", json={"url": receiver.url + f"/journal-{tag}"})
    lock = sqlite3.connect(gw.db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")         # the store is unavailable: records go to the journal
    try:
        ids = []
        with client(gw) as c:
            for _ in range(5):
                answer = c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                ids.append(answer.headers["helicone-id"])
        gw.stop()                           # SIGTERM: the drain cannot write either
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert receiver.on(f"/journal-{tag}") == []
    assert any(p.stat().st_size for p in (tmp_path / "journal").glob("*.jsonl"))
    gw = start_gateway(tmp_path, fake.url, extra_env=FAST, reuse_key=gw.key)
    try:
        receiver.wait_for(lambda _: len(receiver.on(f"/journal-{tag}")) >= 5, what="the journaled records' calls")
        time.sleep(0.5)
        assert sorted(r.json["request_id"] for r in receiver.on(f"/journal-{tag}")) == sorted(ids)
    finally:
        gw.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_gateways_on_one_store_send_one_notification_and_take_over(
        fake: FakeUpstream, tmp_path: Path, receiver: HttpReceiver, backend: str, request: pytest.FixtureRequest) -> None:
    env = dict(FAST)
    if backend == "postgres":
        env["HELIOGRAPH_DB_URL"] = request.getfixturevalue("fresh_postgres")()
    first = start_gateway(tmp_path, fake.url, extra_env=env)
    second = start_gateway(tmp_path, fake.url, extra_env=env, reuse_key=first.key)
    try:
        tag = uuid.uuid4().hex[:8]
        made = rule(first, name=f"volume {tag}", metric="request_count", threshold=1, window=60,
                    filter={"properties": {"lane": {"equals": tag}}},
                    channels=[{"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET}])
        chat(first, 1, lane=tag)
        chat(second, 1, lane=tag)
        wait_states(receiver, made["id"], ["firing"])
        time.sleep(1.5)
        assert len(notifications(receiver, made["id"])) == 1
        # The evaluator's holder dies: the other gateway carries on within two intervals.
        holder = httpx.get(first.url + "/metrics").text
        leader, other = (first, second) if "heliograph_alert_evaluator_leader 1.0" in holder else (second, first)
        leader.stop(9)
        killed = time.monotonic()
        while "heliograph_alert_evaluator_leader 1.0" not in httpx.get(other.url + "/metrics").text:
            assert time.monotonic() - killed < 5, "no gateway took the evaluator's lease over"
            time.sleep(0.05)
        took_over = time.monotonic() - killed
        assert took_over < 2 * 0.5 + 0.5, f"took over after {took_over:.2f} s; the interval is 0.5 s"
        tag2 = uuid.uuid4().hex[:8]
        later = rule(other, name=f"volume {tag2}", metric="request_count", threshold=0, window=60,
                     filter={"properties": {"lane": {"equals": tag2}}},
                     channels=[{"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET}])
        chat(other, 1, lane=tag2)
        wait_states(receiver, later["id"], ["firing"], timeout=10)
    finally:
        first.stop()
        second.stop()


def test_cli_manages_rules_and_webhooks_and_sends_a_test(tmp_path: Path, receiver: HttpReceiver) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    env["HELIOGRAPH_DB_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    bad = run_cli("alerts", "create", "--name", "x", "--metric", "latency", "--threshold", "1", "--window", "5m", env=env)
    assert bad.returncode != 0 and "'metric'" in bad.stderr
    made = run_cli("alerts", "create", "--name", "slow", "--metric", "latency_p95", "--threshold", "2000",
                   "--window", "15m", "--group-by", "model", "--webhook", receiver.url + "/cli", "--secret", SECRET,
                   env=env)
    assert made.returncode == 0, made.stderr
    rule_id = made.stdout.strip().splitlines()[-1]
    assert rule_id.startswith("alr_") and "latency_p95 > 2000 over 900 s by model" in made.stdout
    listed = run_cli("alerts", "list", env=env)
    assert rule_id in listed.stdout and "[ok]" in listed.stdout
    shown = json.loads(run_cli("alerts", "show", rule_id, env=env).stdout)
    assert shown["spec"]["channels"][0]["secret"] == "****"
    tested = run_cli("alerts", "test", rule_id, env=env)
    assert tested.returncode == 0 and "ok 200" in tested.stdout, tested.stdout + tested.stderr
    sent = receiver.on("/cli")[-1]
    assert sent.json["state"] == "test" and sent.signed_with(SECRET)
    evaluated = run_cli("alerts", "evaluate", env=env)
    assert "Evaluated 1 rules" in evaluated.stdout, evaluated.stderr
    hook = run_cli("webhooks", "create", "--url", receiver.url + "/x", "--property", "Env=prod", env=env)
    hook_id = hook.stdout.strip().splitlines()[-1]
    assert hook_id.startswith("whk_") and "env=prod" in run_cli("webhooks", "list", env=env).stdout
    assert run_cli("webhooks", "delete", hook_id, env=env).returncode == 0
    assert run_cli("alerts", "delete", rule_id, env=env).returncode == 0
    assert rule_id not in run_cli("alerts", "list", env=env).stdout


def test_dashboard_alerts_page_lists_creates_edits_tests_and_deletes(gw: Gateway, receiver: HttpReceiver) -> None:
    from .test_dashboard import csrf_of, login, new_key
    admin = login(gw.url, gw.key)
    page = admin.get("/alerts")
    assert page.status_code == 200 and 'href="/alerts" aria-current="page"' in page.text
    tag = uuid.uuid4().hex[:8]
    form = {"csrf": csrf_of(page.text), "name": f"dash {tag}", "metric": "latency_p95", "threshold": "1500",
            "window": "10m", "mode": "threshold", "comparison": "gt", "min_requests": "2", "group_by": "model",
            "filter": "", "webhook_url": receiver.url + "/dash", "webhook_secret": "", "slack_url": "",
            "email_to": "", "enabled": "on"}
    bad = admin.post("/alerts/create", data={**form, "window": "5s"})
    assert bad.status_code == 400 and "&#39;window&#39;" in bad.text
    made = admin.post("/alerts/create", data=form)
    assert made.status_code == 200 and f"dash {tag}" in made.text and "whsec_" in made.text
    rule_id = re.search(r'href="/alerts/(alr_[0-9a-f]+)"', made.text).group(1)   # type: ignore[union-attr]
    secret = re.search(r'id="new-secret">(whsec_[0-9a-f]+)<', made.text).group(1)  # type: ignore[union-attr]
    listed = admin.get("/alerts").text
    assert f'data-alert-id="{rule_id}"' in listed and "latency_p95 &gt; 1500.0 over 600 s" in listed
    detail = admin.get(f"/alerts/{rule_id}")
    assert detail.status_code == 200 and "Send test" in detail.text and secret not in detail.text
    tested = admin.post(f"/alerts/{rule_id}/test", data={"csrf": csrf_of(detail.text)})
    assert tested.status_code == 200 and "Test queued to 1 channel" in tested.text
    receiver.wait_for(lambda _: receiver.on("/dash"), what="the dashboard's test")
    assert receiver.on("/dash")[0].signed_with(secret)
    edited = admin.post(f"/alerts/{rule_id}/edit", data={**form, "csrf": csrf_of(detail.text), "threshold": "900"})
    assert edited.status_code == 303
    assert api(gw, "GET", f"/alerts/{rule_id}").json()["data"]["threshold"] == 900
    admin.post(f"/alerts/{rule_id}/test", data={"csrf": csrf_of(detail.text)})
    receiver.wait_for(lambda _: len(receiver.on("/dash")) == 2, what="a second test")
    assert receiver.on("/dash")[1].signed_with(secret)          # the blank secret field kept the secret
    reader = login(gw.url, new_key(gw, "read"))
    seen = reader.get(f"/alerts/{rule_id}")
    assert seen.status_code == 200 and "Send test" not in seen.text and "Create an alert" not in reader.get("/alerts").text
    assert reader.post(f"/alerts/{rule_id}/delete", data={"csrf": csrf_of(seen.text)}).status_code == 403
    assert admin.post(f"/alerts/{rule_id}/delete", data={"csrf": csrf_of(detail.text)}).status_code == 303
    assert admin.get(f"/alerts/{rule_id}").status_code == 404
