"""The real anthropic SDK through a real `heliograph serve` to the fake provider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway

MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of Portugal?"}]
TOOLS: list[Any] = [{"name": "lookup", "description": "Look something up",
                     "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]

_open: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def client(gateway: Gateway, **headers: str) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-ant-secret",
                               default_headers={**gateway.auth, **headers}, max_retries=0)
    _open.append(made)
    return made


def test_messages_recorded_with_exact_tokens_and_cost(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = client(gateway).messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES)
    message = raw.parse()
    sent = fresh_fake.requests[-1].headers
    assert "sk-ant-secret" in (sent.get("x-api-key") or sent["authorization"])  # SDK 2.x sends a bearer token
    assert fresh_fake.requests[-1].path == "/v1/messages"
    record = gateway.record(raw.headers["helicone-id"])
    assert record["provider"] == "anthropic"
    assert record["prompt_tokens"] == message.usage.input_tokens
    assert record["completion_tokens"] == message.usage.output_tokens
    # claude-sonnet-4-6: $3 / $15 per million tokens
    expected = (message.usage.input_tokens * 3 + message.usage.output_tokens * 15) / 1e6
    assert record["cost"] == pytest.approx(expected, rel=1e-6)


def test_prompt_cache_read_and_write_tokens_are_priced_per_tier(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = client(gateway, **{"X-Fake-Scenario": "cached=300,cache-write=200"}).messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES)
    usage = raw.parse().usage
    assert usage.cache_read_input_tokens == 300 and usage.cache_creation_input_tokens == 200
    record = gateway.record(raw.headers["helicone-id"])
    assert (record["prompt_cache_read_tokens"], record["prompt_cache_write_tokens"]) == (300, 200)
    assert record["prompt_tokens"] == usage.input_tokens  # Helicone: excludes cache read and write
    # $3 input, $0.30 cache read, $3.75 cache write, $15 output per million
    expected = (usage.input_tokens * 3 + 300 * 0.30 + 200 * 3.75 + usage.output_tokens * 15) / 1e6
    assert record["cost"] == pytest.approx(expected, rel=1e-6)


def test_stream_with_tool_use_is_relayed_and_recorded(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    with client(gateway).messages.stream(model="claude-sonnet-4-6", max_tokens=100,
                                         messages=MESSAGES, tools=TOOLS) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["helicone-id"]
    assert final.stop_reason == "tool_use" and final.content[-1].type == "tool_use"
    record = gateway.record(request_id)
    assert record["streamed"] is True and record["partial"] is False
    assert record["completion_tokens"] == final.usage.output_tokens
    assert record["prompt_tokens"] == final.usage.input_tokens
    assert record["time_to_first_token"] is not None


def test_async_client_stream_and_not(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    async def go() -> tuple[str, str]:
        async with anthropic.AsyncAnthropic(base_url=gateway.url + "/anthropic", api_key="sk-ant",
                                            default_headers=gateway.auth, max_retries=0) as ac:
            done = await ac.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)
            async with ac.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES) as s:
                text = await s.get_final_text()
            return done.content[0].text, text  # type: ignore[union-attr]
    full, streamed = asyncio.run(go())
    assert full and full == streamed


def test_errors_use_anthropic_shape(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    unauthenticated = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-ant", max_retries=0)
    _open.append(unauthenticated)
    with pytest.raises(anthropic.AuthenticationError) as info:
        unauthenticated.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert "Helicone-Auth" in body["error"]["message"]
