"""Past max_in_flight, new proxied calls are refused at once (503 + Retry-After, in the SDK's shape)
instead of queueing; the calls already admitted finish normally."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

MESSAGES = [{"role": "user", "content": "hello there"}]
SLOW = {"X-Fake-Scenario": "delay=1000"}


@pytest.fixture(scope="module")
def bounded(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("bounded"), fake.url, extra_env={"HELIOGRAPH_MAX_IN_FLIGHT": "2"})
    yield gw
    gw.stop()


def metric(gw: Gateway, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", httpx.get(gw.url + "/metrics").text, re.M)
    assert found, name
    return float(found.group(1))


def stored(gw: Gateway, request_id: str | None = None, *, at_least: int = 0) -> int:
    """Rows in the store (with this id), once the recorder has flushed: after 0.3 s, and until there
    are `at_least` (the first batch waits for the writer process to start, slower on a busy machine)."""
    time.sleep(0.3)
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True) as db:
            if request_id is None:
                count = int(db.execute("SELECT count(*) FROM requests").fetchone()[0])
            else:
                count = int(db.execute("SELECT count(*) FROM requests WHERE id = ?", (request_id,)).fetchone()[0])
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def wait_in_flight(gw: Gateway, count: int) -> None:
    deadline = time.monotonic() + 5
    while metric(gw, "heliograph_in_flight") != count:
        assert time.monotonic() < deadline, f"never {count} in flight"
        time.sleep(0.02)


def slow_calls(gw: Gateway, pool: ThreadPoolExecutor) -> list[Future[str]]:
    client = openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="sk-x", default_headers=gw.auth, max_retries=0)

    def call() -> str:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                extra_headers=SLOW)
        return answer.choices[0].message.content or ""
    calls = [pool.submit(call) for _ in range(2)]
    wait_in_flight(gw, 2)
    return calls


def test_the_call_past_max_in_flight_gets_a_503_in_openai_shape_and_the_others_succeed(
        bounded: Gateway, fresh_fake: FakeUpstream) -> None:
    shed_before = metric(bounded, "heliograph_shed_total")
    rows_before = stored(bounded)
    with ThreadPoolExecutor(2) as pool:
        admitted = slow_calls(bounded, pool)
        client = openai.OpenAI(base_url=bounded.url + "/openai/v1", api_key="sk-x", default_headers=bounded.auth,
                               max_retries=0)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert time.monotonic() - started < 0.5  # refused at once, not queued behind the slow ones
        assert all(call.result(timeout=10) for call in admitted)
    error = info.value
    assert error.status_code == 503
    assert error.response.headers["retry-after"] == "1"
    assert error.code == "gateway_overloaded" and error.type == "api_error"
    assert "at capacity (2 requests in flight)" in error.message
    shed_id = error.response.headers["helicone-id"]
    assert metric(bounded, "heliograph_shed_total") == shed_before + 1
    assert metric(bounded, "heliograph_in_flight") == 0
    # Refused before authentication: not recorded; the two admitted calls are.
    assert stored(bounded, at_least=rows_before + 2) == rows_before + 2
    assert stored(bounded, shed_id) == 0


def test_the_call_past_max_in_flight_gets_a_503_in_anthropic_shape(
        bounded: Gateway, fresh_fake: FakeUpstream) -> None:
    with ThreadPoolExecutor(2) as pool:
        admitted = slow_calls(bounded, pool)
        client = anthropic.Anthropic(base_url=bounded.url + "/anthropic", api_key="sk-ant-x",
                                     default_headers=bounded.auth, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=MESSAGES)
        assert all(call.result(timeout=10) for call in admitted)
    assert info.value.status_code == 503
    assert info.value.body == {"type": "error", "error": {
        "type": "overloaded_error", "message": "The gateway is at capacity (2 requests in flight); retry in 1 s."}}
    assert info.value.response.headers["retry-after"] == "1"


def test_a_retrying_sdk_gets_through_once_capacity_frees_up(bounded: Gateway, fresh_fake: FakeUpstream) -> None:
    with ThreadPoolExecutor(2) as pool:
        admitted = slow_calls(bounded, pool)
        client = openai.OpenAI(base_url=bounded.url + "/openai/v1", api_key="sk-x", default_headers=bounded.auth,
                               max_retries=2)
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.choices[0].message.content
        assert all(call.result(timeout=10) for call in admitted)


def test_ops_endpoints_are_never_shed(bounded: Gateway, fresh_fake: FakeUpstream) -> None:
    with ThreadPoolExecutor(2) as pool:
        admitted = slow_calls(bounded, pool)
        assert httpx.get(bounded.url + "/healthz").status_code == 200
        assert httpx.get(bounded.url + "/readyz").status_code == 200
        assert all(call.result(timeout=10) for call in admitted)
