"""Async logging (`POST /api/custom/v1/log`) through a real `heliograph serve`."""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

START = 1_735_689_600       # 2025-01-01T00:00:00Z


def log_body(*, model: str = "gpt-4o-mini", meta: dict[str, Any] | None = None, usage: dict[str, Any] | None = None,
             timing: dict[str, Any] | None = None, **response: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "providerRequest": {"url": "https://api.openai.com/v1/chat/completions",
                            "json": {"model": model, "messages": [{"role": "user", "content": "Hi"}]},
                            "meta": meta or {}},
        "providerResponse": {"json": {"id": "chatcmpl-1", "model": model, "usage": usage or {
            "prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}}, "status": 200, "headers": {},
            **response},
    }
    if timing is not None:
        body["timing"] = timing
    return body


def at(seconds: float, milliseconds: float = 0) -> dict[str, float]:
    return {"seconds": seconds, "milliseconds": milliseconds}


def post(gw: Gateway, body: Any, route: str = "custom", **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.key}", **kwargs.pop("headers", {})}
    return httpx.post(f"{gw.url}/api/{route}/v1/log", json=body, headers=headers, timeout=30, **kwargs)


def logged(gw: Gateway, body: Any, route: str = "custom") -> dict[str, Any]:
    r = post(gw, body, route)
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"request_id": r.headers["helicone-id"]}, "error": None}
    return gw.record(r.headers["helicone-id"])


def test_a_logged_call_is_recorded_like_a_proxied_one(gateway: Gateway) -> None:
    request_id = str(uuid.uuid4())
    meta = {"Helicone-User-Id": "async-alice", "Helicone-Property-Feature": "support",
            "Helicone-Session-Id": "sess-1", "Helicone-Session-Path": "/plan", "Helicone-Request-Id": request_id,
            "Helicone-Auth": "Bearer must-not-be-kept", "X-Other": "ignored"}
    timing = {"startTime": at(START, 250), "endTime": at(START + 2, 750), "timeToFirstToken": 320}
    record = logged(gateway, log_body(meta=meta, timing=timing))
    assert record["request_id"] == request_id
    assert record["provider"] == "custom" and record["request_user_id"] == "async-alice"
    assert record["properties"] == {"feature": "support", "Helicone-Session-Id": "sess-1",
                                    "Helicone-Session-Path": "/plan"}
    assert record["session_id"] == "sess-1" and record["session_path"] == "/plan"
    assert record["request_created_at"] == "2025-01-01T00:00:00.250Z" and record["delay_ms"] == 2500
    assert record["time_to_first_token"] == 320 and record["streamed"] is False
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (1000, 500, 1500)
    # gpt-4o-mini: 0.15 $/M input, 0.60 $/M output, priced by the recorder as for proxied calls.
    assert record["cost"] == pytest.approx(0.00045) and record["pricing_status"] == "priced"
    assert record["request_body"]["messages"] == [{"role": "user", "content": "Hi"}]
    assert record["response_body"]["id"] == "chatcmpl-1"
    assert record["target_url"] == "https://api.openai.com/v1/chat/completions"
    assert record["request_path"] == "/v1/chat/completions" and record["key_id"]
    assert "must-not-be-kept" not in str(record)


def test_a_stated_cost_wins_and_prices_unknown_models(gateway: Gateway) -> None:
    record = logged(gateway, log_body(model="my-finetune-v3", cost=0.0421))
    assert record["cost"] == 0.0421 and record["pricing_status"] == "priced"
    unpriced = logged(gateway, log_body(model="my-finetune-v3"))
    assert unpriced["cost"] is None and unpriced["pricing_status"] == "unpriced"


@pytest.mark.parametrize(("route", "provider", "response_json", "tokens"), [
    ("anthropic", "anthropic", {"type": "message", "model": "claude-3-5-haiku-20241022", "usage": {
        "input_tokens": 100, "output_tokens": 40, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 0}},
     (100, 40, 900)),
    # The custom route recognises an Anthropic message by its shape.
    ("custom", "custom", {"type": "message", "model": "claude-3-5-haiku-20241022", "usage": {
        "input_tokens": 100, "output_tokens": 40, "cache_read_input_tokens": 900}}, (100, 40, 900)),
    ("oai", "openai", {"model": "gpt-4o", "usage": {"prompt_tokens": 1000, "completion_tokens": 10,
                                                    "prompt_tokens_details": {"cached_tokens": 800}}}, (200, 10, 800)),
    ("googleapis", "gemini", {"modelVersion": "gemini-2.0-flash", "usageMetadata": {
        "promptTokenCount": 30, "candidatesTokenCount": 12, "totalTokenCount": 42}}, (30, 12, 0)),
    ("custom", "custom", {"generation": "hi", "prompt_token_count": 7, "generation_token_count": 3}, (7, 3, 0)),
])
def test_usage_shapes_and_providers_by_route(gateway: Gateway, route: str, provider: str,
                                             response_json: dict[str, Any], tokens: tuple[int, int, int]) -> None:
    body = log_body()
    body["providerResponse"]["json"] = response_json
    record = logged(gateway, body, route)
    assert record["provider"] == provider
    assert (record["prompt_tokens"], record["completion_tokens"], record["prompt_cache_read_tokens"]) == tokens


def test_without_timing_the_call_lasts_one_second_from_now(gateway: Gateway) -> None:
    before = time.time()
    record = logged(gateway, log_body())
    assert record["delay_ms"] == 1000 and record["time_to_first_token"] is None
    from datetime import datetime
    created = datetime.fromisoformat(record["request_created_at"].replace("Z", "+00:00")).timestamp()
    assert before - 1 <= created <= time.time() + 1


def test_text_bodies_omit_flags_and_invalid_request_ids(gateway: Gateway) -> None:
    body = log_body(meta={"Helicone-Omit-Request": "true", "Helicone-Request-Id": "not-a-uuid"})
    del body["providerResponse"]["json"]
    body["providerResponse"]["textBody"] = "plain text answer"
    body["providerResponse"]["status"] = 502
    r = post(gateway, body)
    assert r.status_code == 200 and r.headers["helicone-id"] != "not-a-uuid"
    uuid.UUID(r.headers["helicone-id"])
    record = gateway.record(r.headers["helicone-id"])
    assert record["request_body"] == {"model": "gpt-4o-mini"}
    assert record["response_body"] == "plain text answer" and record["response_status"] == 502
    assert record["error"] == "http_502"


def test_missing_meta_and_headers_count_as_empty(gateway: Gateway) -> None:
    body = log_body()
    del body["providerRequest"]["meta"], body["providerResponse"]["headers"]
    assert logged(gateway, body)["properties"] == {}


def _broken(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    body = log_body(timing={"startTime": at(START), "endTime": at(START + 1)})
    *parents, last = path.split(".")
    node: Any = body
    for name in parents:
        node = node[name]
    if delete:
        del node[last]
    else:
        node[last] = value
    return body


@pytest.mark.parametrize(("body", "message"), [
    ([1, 2], "The request body must be a JSON object."),
    ({"providerRequest": {"url": "x", "json": {}}}, "One of the required fields is missing"),
    (_broken("providerResponse", "nope"), "One of the required fields is missing"),
    (_broken("providerRequest.url", 42), "Invalid providerRequest: 'url' should be a string"),
    (_broken("providerRequest.meta", "x"), "Invalid providerRequest: 'meta' should be an object"),
    (_broken("providerRequest.meta", {"Helicone-User-Id": {"a": 1}}), "meta 'Helicone-User-Id' should be a string"),
    (_broken("providerRequest.json", delete=True), "Invalid providerRequest: 'json' is undefined"),
    (_broken("providerResponse.json", delete=True), "Invalid providerResponse: 'json' is undefined"),
    (_broken("providerResponse.status", "200"), "Invalid providerResponse: 'status' should be a number"),
    (_broken("providerResponse.status", 200.5), "'status' should be an HTTP status code"),
    (_broken("providerResponse.headers", []), "Invalid providerResponse: 'headers' should be an object"),
    (_broken("providerResponse.cost", -1), "'cost' should be a non-negative number"),
    (_broken("timing", "soon"), "Invalid timing"),
    (_broken("timing.startTime.seconds", "1"), "Invalid timing: 'startTime.seconds' should be a number"),
    (_broken("timing.endTime", {"seconds": 1}), "Invalid timing: 'endTime.milliseconds' should be a number"),
    (_broken("timing.endTime", at(START - 5)), "startTime cannot be greater than endTime"),
    (_broken("timing.startTime", at(-5)), "startTime and endTime cannot be negative"),
    (_broken("timing.timeToFirstToken", -3), "'timeToFirstToken' should be a non-negative number"),
])
def test_bad_bodies_are_400_naming_the_field(gateway: Gateway, body: Any, message: str) -> None:
    r = post(gateway, body)
    assert r.status_code == 400, r.text
    assert r.json()["data"] is None and message in r.json()["error"]


def test_auth_json_and_size_errors(gateway: Gateway) -> None:
    body = log_body()
    no_auth = httpx.post(f"{gateway.url}/api/custom/v1/log", json=body)
    assert no_auth.status_code == 401 and no_auth.json()["data"] is None and "Unauthorized" in no_auth.json()["error"]
    bad_key = post(gateway, body, headers={"Authorization": "Bearer sk-hg-unknown"})
    assert bad_key.status_code == 401
    not_json = httpx.post(f"{gateway.url}/api/custom/v1/log", content=b"{oops",
                          headers={"Authorization": f"Bearer {gateway.key}"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]

    huge = log_body()
    huge["providerRequest"]["json"]["messages"][0]["content"] = "x" * (10 * 1024 * 1024)
    too_large = post(gateway, huge)
    assert too_large.status_code == 400 and too_large.json()["error"].startswith("Payload too large")

    def chunks() -> Any:    # no Content-Length: the limit holds on the bytes actually read
        yield b'{"providerRequest": {"url": "x", "json": "'
        for _ in range(11):
            yield b"y" * (1024 * 1024)
        yield b'"}}'
    streamed = httpx.post(f"{gateway.url}/api/custom/v1/log", content=chunks(),
                          headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30)
    assert streamed.status_code == 400 and streamed.json()["error"].startswith("Payload too large")
    assert post(gateway, log_body()).status_code == 200        # the server is fine afterwards


def test_logged_calls_are_drained_on_shutdown(fake: FakeUpstream, tmp_path: Path) -> None:
    """The route hands records to the recorder: SIGTERM right after still stores every one."""
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_RECORDER_FLUSH_MS": "5000"})
    try:
        ids = [post(gw, log_body()).headers["helicone-id"] for _ in range(40)]
    finally:
        assert gw.stop() in (0, -signal.SIGTERM)
    with sqlite3.connect(gw.db_path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM requests")}
    assert stored == set(ids)
