"""Hostile input seen from outside: every number, range, depth and size is bounded at the edge with
a 4xx naming the limit; no credential is ever written anywhere the gateway writes."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
HUGE = "9" * 5000


def chat(gw: Gateway, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,
                      headers={**gw.auth, "Authorization": "Bearer sk-provider", **headers}, timeout=30)


def test_successful_answers_say_helicone_status_success(gateway: Gateway) -> None:
    assert chat(gateway).headers["helicone-status"] == "success"
    failed = chat(gateway, **{"X-Fake-Scenario": "status=500"})
    assert failed.status_code == 500 and "helicone-status" not in failed.headers


@pytest.mark.parametrize("headers, says", [
    ({"Helicone-Retry-Enabled": "true", "Helicone-Retry-Min-Timeout": "NaN"}, "Min-Timeout"),
    ({"Helicone-Retry-Enabled": "true", "Helicone-Retry-Max-Timeout": "inf"}, "Max-Timeout"),
    ({"Helicone-Retry-Enabled": "true", "Helicone-Retry-Max-Timeout": "1e12"}, "600000"),
    ({"Helicone-Retry-Enabled": "true", "Helicone-Retry-Factor": "1e300"}, "Factor 1-100"),
    ({"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": HUGE}, "Retry-Num"),
    ({"Helicone-Cache-Enabled": "true", "Helicone-Cache-Bucket-Max-Size": HUGE}, "Bucket-Max-Size"),
    ({"Helicone-Session-Path": "/a" * 65}, "64 segments"),
])
def test_out_of_range_headers_are_a_400_naming_the_limit(gateway: Gateway, headers: dict[str, str], says: str) -> None:
    r = chat(gateway, **headers)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"]["message"]
    assert gateway.record(r.headers["helicone-id"])["response_status"] == 400


def test_a_huge_on_codes_range_is_refused_at_once(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_GATEWAY_ALLOW": fake.url})
    try:
        fallbacks = [{"target-url": fake.url, "headers": {}, "onCodes": [{"from": 0, "to": 10**15}]}]
        started = time.monotonic()
        r = httpx.post(gw.url + "/gateway/v1/chat/completions", json=CHAT, timeout=30,
                       headers={**gw.auth, "Helicone-Target-URL": fake.url, "Helicone-Fallbacks": orjson.dumps(fallbacks).decode()})
        assert time.monotonic() - started < 1
        assert r.status_code == 400 and "100-599" in r.json()["error"]["message"]
    finally:
        gw.stop()


def test_huge_numbers_in_cache_and_rate_limit_headers_never_fail_the_call(gateway: Gateway) -> None:
    r = chat(gateway, **{"Helicone-Cache-Enabled": "true", "Cache-Control": f"max-age={HUGE}",
                         "Helicone-RateLimit-Policy": f"{HUGE};w={HUGE}"})
    assert r.status_code == 200
    assert "helicone-ratelimit-ignored" in r.headers


@pytest.mark.parametrize("depth, conditions, says", [(40, 1, "nested more than 32"), (0, 1001, "at most 1000")])
def test_filters_too_deep_or_too_large_are_a_400(gateway: Gateway, depth: int, conditions: int, says: str) -> None:
    node: dict[str, object] = {"request_response_rmt": {"properties": {f"k{n}": {"equals": "v"} for n in range(conditions)}}}
    for _ in range(depth):
        node = {"left": node, "operator": "or", "right": {"request_response_rmt": {"status": {"gt": 1}}}}
    for route in ("/api/v1/request/query", "/api/v1/analytics/query"):
        r = httpx.post(gateway.url + route, json={"filter": node}, headers={"Authorization": f"Bearer {gateway.key}"})
        assert r.status_code == 400 and says in r.json()["error"]


def test_the_largest_filter_allowed_runs(gateway: Gateway) -> None:
    node: dict[str, object] = {"request_response_rmt": {"properties": {f"k{n}": {"equals": "v"} for n in range(900)}}}
    for _ in range(32):
        node = {"left": node, "operator": "or", "right": {"request_response_rmt": {"status": {"gt": 1}}}}
    r = httpx.post(gateway.url + "/api/v1/request/query", json={"filter": node},
                   headers={"Authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 200, r.text


# -- credentials, wherever they travel, are never written -----------------------------------------

def every_file(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_no_credential_is_ever_written_to_the_store_the_journal_or_the_log(fake: FakeUpstream, tmp_path: Path) -> None:
    markers = {"query": "MARKERQUERYKEY4711", "fallback": "MARKERFALLBACK4712", "provider": "MARKERPROVIDER4713",
               "anthropic": "MARKERANTHROPIC4714", "target": "MARKERTARGETSIG4715"}
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_GATEWAY_ALLOW": fake.url,
                                                      "HELIOGRAPH_LOG_LEVEL": "debug", "HELIOGRAPH_DRAIN_TIMEOUT": "1"})
    fallbacks = [{"target-url": fake.url, "headers": {"Authorization": f"Bearer {markers['fallback']}"},
                  "onCodes": [500]}]

    def traffic() -> list[str]:
        answers = [
            httpx.post(f"{gw.url}/gemini/v1beta/openai/chat/completions?key={markers['query']}", json=CHAT,
                       headers=gw.auth),
            httpx.post(f"{gw.url}/gateway/v1/chat/completions?sig={markers['target']}", json=CHAT,
                       headers={**gw.auth, "Helicone-Target-URL": fake.url, "X-Fake-Scenario": "status=500",
                                "Helicone-Fallbacks": orjson.dumps(fallbacks).decode()}),
            httpx.post(gw.url + "/openai/v1/chat/completions", json={**CHAT, "stream": True},
                       headers={**gw.auth, "Authorization": f"Bearer {markers['provider']}"}),
            httpx.post(gw.url + "/anthropic/v1/messages", json={**CHAT, "max_tokens": 10},
                       headers={**gw.auth, "x-api-key": markers["anthropic"], "anthropic-version": "2023-06-01"}),
            httpx.post(gw.url + "/openai/v1/chat/completions", json=CHAT,     # refused, recorded
                       headers={**gw.auth, "Authorization": f"Bearer {markers['provider']}",
                                "Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "x"}),
        ]
        return [a.headers["helicone-id"] for a in answers]

    stored_first = traffic()
    for request_id in stored_first:
        gw.record(request_id)
    conn = sqlite3.connect(gw.db_path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")      # the next ones wait in the journal
    try:
        journaled = traffic()
        assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        # Not the database file: closing any descriptor of it would drop this process's lock.
        assert any((tmp_path / "journal").glob("*.jsonl")), "the lock should have sent records to the journal"
        written = every_file(tmp_path / "journal") + gw.log().encode()
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    restarted = start_gateway(tmp_path, fake.url, reuse_key=gw.key,
                              extra_env={"HELIOGRAPH_LOG_LEVEL": "debug"})
    try:
        for request_id in journaled:
            restarted.record(request_id)
        record = restarted.record(stored_first[0])
        assert "key=REDACTED" in record["request_path"]
    finally:
        restarted.stop()
    written += every_file(tmp_path)
    for where, marker in markers.items():
        assert marker.encode() not in written, f"the {where} credential was written to disk"
    assert gw.key.encode() not in written


def test_a_megabyte_of_headers_is_a_431_in_the_sdk_shape(gateway: Gateway) -> None:
    r = chat(gateway, **{"X-Padding": "x" * 1_000_000})
    assert r.status_code == 431
    assert "max_header_bytes" in r.json()["error"]["message"]
    assert chat(gateway).status_code == 200     # and the gateway serves on


def test_a_body_over_the_limit_is_a_413_before_anything_is_forwarded(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_MAX_REQUEST_BODY_BYTES": "1000000"})
    try:
        fake.clear()
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2_000_000}]}
        r = httpx.post(gw.url + "/anthropic/v1/messages", json=big, timeout=30,
                       headers={**gw.auth, "x-api-key": "k", "anthropic-version": "2023-06-01"})
        assert r.status_code == 413
        assert r.json()["type"] == "error" and "max_request_body_bytes" in r.json()["error"]["message"]
        assert gw.record(r.headers["helicone-id"])["response_status"] == 413
        assert not fake.requests, "nothing may reach the provider"
        assert chat(gw).status_code == 200
    finally:
        gw.stop()
