"""The real openai SDK through a real `heliograph serve` to the fake provider."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway

MESSAGES = [{"role": "user", "content": "Tell me about the harbour lights tonight"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


_open: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def sdk(base_url: str, **kwargs: Any) -> openai.OpenAI:
    made = openai.OpenAI(base_url=base_url, max_retries=0, **{"api_key": "sk-provider-secret", **kwargs})
    _open.append(made)
    return made


def client(gateway: Gateway, **headers: str) -> openai.OpenAI:
    return sdk(gateway.url + "/openai/v1", default_headers={**gateway.auth, **headers})


def direct(fake: FakeUpstream) -> openai.OpenAI:
    return sdk(fake.url + "/v1")


def test_chat_is_answered_and_recorded_with_tokens_cost_and_tags(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    request_id = str(uuid.uuid4())
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, user="body-user",
        extra_headers={"Helicone-Request-Id": request_id, "Helicone-User-Id": "u-42",
                       "Helicone-Property-Feature": "support", "Helicone-Session-Id": "s-1",
                       "Helicone-Session-Path": "/plan/search", "Helicone-Session-Name": "Trip",
                       "Helicone-Request-Name": "plan-step"})
    completion = raw.parse()
    assert raw.headers["helicone-id"] == request_id
    assert "gateway;dur=" in raw.headers["server-timing"] and "upstream;dur=" in raw.headers["server-timing"]
    assert completion.usage is not None

    record = gateway.record(request_id)
    assert record["response_status"] == 200
    assert record["provider"] == "openai"
    assert record["request_path"] == "/openai/v1/chat/completions"
    assert record["request_model"] == "gpt-4o-mini"
    assert record["request_user_id"] == "u-42"
    # Helicone keeps the session headers in the properties map too (DESIGN §2).
    assert record["properties"] == {"feature": "support", "Helicone-Session-Id": "s-1",
                                    "Helicone-Session-Path": "/plan/search", "Helicone-Session-Name": "Trip"}
    assert (record["session_id"], record["session_path"], record["session_name"]) == ("s-1", "/plan/search", "Trip")
    assert record["request_name"] == "plan-step"
    assert record["prompt_tokens"] == completion.usage.prompt_tokens
    assert record["completion_tokens"] == completion.usage.completion_tokens
    assert record["total_tokens"] == completion.usage.total_tokens
    assert record["pricing_status"] == "priced"
    # gpt-4o-mini: $0.15 / $0.60 per million tokens
    expected = (completion.usage.prompt_tokens * 0.15 + completion.usage.completion_tokens * 0.60) / 1e6
    assert record["cost"] == pytest.approx(expected, rel=1e-6)
    assert record["request_body"]["messages"] == MESSAGES
    assert record["response_body"]["choices"][0]["message"]["content"] == completion.choices[0].message.content
    assert record["partial"] is False and record["streamed"] is False
    assert record["delay_ms"] > 0 and record["gateway_overhead_ms"] >= 0
    assert record["key_id"].startswith("key_")


def test_body_user_is_used_when_no_user_header(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, user="body-user")
    assert gateway.record(raw.headers["helicone-id"])["request_user_id"] == "body-user"


def test_helicone_headers_are_stripped_and_credentials_forwarded(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    client(gateway, **{"Helicone-Property-X": "1", "OpenAI-Organization": "org-1"}).chat.completions.create(
        model="gpt-4o", messages=MESSAGES)
    received = fresh_fake.requests[-1]
    assert not [h for h in received.headers if h.startswith("helicone-")]
    assert received.headers["authorization"] == "Bearer sk-provider-secret"
    assert received.headers["openai-organization"] == "org-1"
    assert received.path == "/v1/chat/completions"


def test_stream_usage_is_recorded_but_the_client_sees_what_it_would_see_directly(
        gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    with_gateway = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(with_gateway.parse())
    direct_chunks = list(direct(fresh_fake).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    assert len(chunks) == len(direct_chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach a client that did not ask"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == \
        "".join(c.choices[0].delta.content or "" for c in direct_chunks)
    # The gateway asked upstream for usage.
    streamed = [r for r in fresh_fake.requests if r.json and r.json.get("stream")]
    assert streamed[0].json["stream_options"] == {"include_usage": True}

    with_usage = direct(fresh_fake).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    usage = [c.usage for c in with_usage if c.usage][0]
    record = gateway.record(with_gateway.headers["helicone-id"])
    assert record["streamed"] is True and record["partial"] is False
    assert (record["prompt_tokens"], record["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert record["pricing_status"] == "priced" and record["cost"] > 0
    assert record["time_to_first_token"] is not None and 0 < record["time_to_first_token"] <= record["delay_ms"]


def test_a_client_closing_at_done_had_its_whole_answer(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    """openai-python closes the connection at `data: [DONE]`, often before the upstream's end of
    body reaches the gateway. Here the upstream holds its end back for seconds after [DONE]: the
    client closes first, every time, and the call is still recorded whole, not as disconnected."""
    events = len(list(direct(fresh_fake).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))) + 1
    started = time.monotonic()
    with_gateway = client(gateway, **{"X-Fake-Scenario": f"stall-after={events},stall=5000"}
                          ).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(with_gateway.parse())
    assert time.monotonic() - started < 4, "the client read to [DONE] without waiting for the upstream's end"
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    record = gateway.record(with_gateway.headers["helicone-id"])
    assert record["partial"] is False and record["error"] is None
    assert record["completion_tokens"] > 0


def test_stream_with_usage_requested_keeps_the_usage_chunk(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    chunks = list(client(gateway).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_tool_calls_streamed_and_not(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    c = client(gateway)
    done = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)
    assert done.choices[0].message.tool_calls[0].function.name == "get_weather"
    streamed = list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True))
    names = [tc.function.name for ch in streamed if ch.choices for tc in (ch.choices[0].delta.tool_calls or []) if tc.function.name]
    assert names == ["get_weather"]


def test_async_client_streaming_and_not(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    async def go() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=gateway.url + "/openai/v1", api_key="sk-x",
                                      default_headers=gateway.auth, max_retries=0) as ac:
            done = await ac.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            stream = await ac.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return done.choices[0].message.content or "", text
    full, streamed = asyncio.run(go())
    assert full and full == streamed


def test_embeddings_and_responses_api_are_recorded(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    c = client(gateway)
    emb = c.embeddings.with_raw_response.create(model="text-embedding-3-small", input="harbour lights")
    assert len(emb.parse().data[0].embedding) > 0
    record = gateway.record(emb.headers["helicone-id"])
    assert record["prompt_tokens"] == emb.parse().usage.prompt_tokens and record["pricing_status"] == "priced"

    resp = c.responses.with_raw_response.create(model="gpt-4o-mini", input="Say hello")
    parsed = resp.parse()
    record = gateway.record(resp.headers["helicone-id"])
    assert record["completion_tokens"] == parsed.usage.output_tokens and record["cost"] > 0


def test_bare_v1_prefix_is_openai(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    c = sdk(gateway.url + "/v1", default_headers=gateway.auth)
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert fresh_fake.requests[-1].path == "/v1/chat/completions"
    assert gateway.record(raw.headers["helicone-id"])["provider"] == "openai"


def test_key_in_path_is_accepted_and_removed(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    c = sdk(f"{gateway.url}/{gateway.key}/openai/v1")
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert fresh_fake.requests[-1].path == "/v1/chat/completions"
    assert gateway.key not in gateway.record(raw.headers["helicone-id"])["request_path"]


@pytest.mark.parametrize("auth", [None, "Bearer sk-hg-unknown", "sk-hg-no-bearer"])
def test_missing_or_bad_helicone_auth_is_a_401_the_sdk_understands(gateway: Gateway, auth: str | None,
                                                                   fresh_fake: FakeUpstream) -> None:
    headers = {"Helicone-Auth": auth} if auth else {}
    c = sdk(gateway.url + "/openai/v1", default_headers=headers)
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "Helicone-Auth" in info.value.message
    assert fresh_fake.requests == []


def test_provider_errors_pass_through_as_is_and_are_recorded(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    c = client(gateway, **{"X-Fake-Scenario": "status=429"})
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    response = info.value.response
    assert response.headers.get("retry-after") is not None
    direct_429 = httpx.post(fresh_fake.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES},
                            headers={"Authorization": "Bearer x", "X-Fake-Scenario": "status=429"})
    assert response.json() == direct_429.json()
    record = gateway.record(response.headers["helicone-id"])
    assert record["response_status"] == 429 and record["error"] == "http_429"


def test_omit_flags_keep_only_the_model(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = client(gateway, **{"Helicone-Omit-Request": "true", "Helicone-Omit-Response": "true"}).chat.completions \
        .with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    record = gateway.record(raw.headers["helicone-id"])
    assert record["request_body"] == {"model": "gpt-4o"}
    assert record["response_body"] == {"model": raw.parse().model}
    assert record["prompt_tokens"] == raw.parse().usage.prompt_tokens


def test_no_credentials_anywhere_in_the_record(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    text = str(gateway.record(raw.headers["helicone-id"]))
    assert "sk-provider-secret" not in text and gateway.key not in text
    for path in gateway.db_path.parent.glob(gateway.db_path.name + "*"):
        assert gateway.key.encode() not in path.read_bytes()
        assert b"sk-provider-secret" not in path.read_bytes()
