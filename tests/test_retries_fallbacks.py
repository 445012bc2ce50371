"""Retries and fallbacks through a real server, the real SDKs and a fake provider that changes its mind."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

MESSAGES = [{"role": "user", "content": "Where is the lighthouse keeper tonight?"}]
FAST_RETRY = {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "3",
              "Helicone-Retry-Min-Timeout": "10", "Helicone-Retry-Max-Timeout": "50"}


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("fallbacks"), fake.url, extra_env={
        "HELIOGRAPH_PROVIDER_KEY_ANTHROPIC": "sk-ant-held-by-gateway",
        "HELIOGRAPH_GATEWAY_ALLOW": fake.url})
    yield gateway
    gateway.stop()


@pytest.fixture
def oai(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="sk-openai-client", default_headers=gw.auth,
                       max_retries=0) as client:
        yield client


def flaky(times: int, status: int = 500, extra: str = "") -> dict[str, str]:
    return {"X-Fake-Scenario": f"fail-times={times},status={status}{extra}", "X-Fake-Key": str(uuid.uuid4())}


def test_retries_until_the_provider_answers_and_records_every_attempt(
        oai: openai.OpenAI, gw: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={**FAST_RETRY, **flaky(2)})
    assert raw.http_response.status_code == 200
    assert len(fresh_fake.requests) == 3
    record = gw.record(raw.headers["helicone-id"])
    assert [a["status"] for a in record["attempts"]] == [500, 500, 200]
    assert record["response_status"] == 200


def test_retry_after_is_honoured_but_capped_by_max_timeout(oai: openai.OpenAI, fresh_fake: FakeUpstream) -> None:
    started = time.monotonic()
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                extra_headers={**FAST_RETRY, "Helicone-Retry-Max-Timeout": "2000",
                                               **flaky(1, 429, ",retry-after-ms=400")})
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                extra_headers={**FAST_RETRY, **flaky(1, 429, ",retry-after=30")})
    assert time.monotonic() - started < 5, "Helicone-Retry-Max-Timeout must cap Retry-After"


def test_when_retries_run_out_the_last_answer_is_returned_as_is(oai: openai.OpenAI, fresh_fake: FakeUpstream) -> None:
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={**FAST_RETRY, **flaky(10)})
    assert len(fresh_fake.requests) == 4  # Helicone-Retry-Num is the number of retries


@pytest.mark.parametrize("headers", [
    {**FAST_RETRY, **flaky(1, 400)},                                  # a client error is not retried
    {**FAST_RETRY, "Helicone-Retry-Enabled": "false", **flaky(1)},    # false disables
])
def test_no_retry(oai: openai.OpenAI, fresh_fake: FakeUpstream, headers: dict[str, str]) -> None:
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    assert len(fresh_fake.requests) == 1


def test_a_started_stream_is_never_retried(oai: openai.OpenAI, fresh_fake: FakeUpstream) -> None:
    with pytest.raises(openai.APIError):
        list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                         extra_headers={**FAST_RETRY, "X-Fake-Scenario": "drop-after=2"}))
    assert len(fresh_fake.requests) == 1


def test_bad_retry_headers_are_a_400(oai: openai.OpenAI, fresh_fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                    extra_headers={**FAST_RETRY, "Helicone-Retry-Num": "many"})
    assert "Helicone-Retry-Num" in info.value.message and fresh_fake.requests == []


def test_seed_fallback_to_another_model(oai: openai.OpenAI, gw: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES,
        extra_headers={"Helicone-Fallback": json.dumps([{"model": "gpt-4o-mini"}]), **flaky(1, 503)})
    assert raw.headers["helicone-fallback-index"] == "0"
    assert [r.json["model"] for r in fresh_fake.requests] == ["gpt-4o", "gpt-4o-mini"]
    record = gw.record(raw.headers["helicone-id"])
    assert record["fallback_index"] == 0 and record["request_model"] == "gpt-4o"
    assert record["model"] == "gpt-4o-mini" and [a["status"] for a in record["attempts"]] == [503, 200]


def test_no_fallback_index_when_the_primary_answers(oai: openai.OpenAI, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"Helicone-Fallback": json.dumps([{"model": "gpt-4o-mini"}])})
    assert "helicone-fallback-index" not in raw.headers and len(fresh_fake.requests) == 1


def test_cross_provider_fallback_translates_both_ways(oai: openai.OpenAI, gw: Gateway, fresh_fake: FakeUpstream) -> None:
    fallback = json.dumps([{"model": "claude-haiku-4-5", "provider": "anthropic"}])
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"Helicone-Fallback": fallback, **flaky(1, 500)})
    completion = raw.parse()  # the OpenAI SDK parses an answer Anthropic gave
    assert completion.choices[0].message.content and completion.usage is not None
    to_anthropic = fresh_fake.requests[-1]
    assert to_anthropic.path == "/v1/messages" and to_anthropic.headers["x-api-key"] == "sk-ant-held-by-gateway"
    assert "sk-openai-client" not in str(to_anthropic.headers)
    record = gw.record(raw.headers["helicone-id"])
    assert record["provider"] == "anthropic" and record["fallback_index"] == 0
    assert record["completion_tokens"] == completion.usage.completion_tokens
    assert record["pricing_status"] == "priced" and record["cost"] > 0


def test_cross_provider_fallback_streams(oai: openai.OpenAI, fresh_fake: FakeUpstream) -> None:
    fallback = json.dumps([{"model": "claude-haiku-4-5", "provider": "anthropic"}])
    chunks = list(oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"Helicone-Fallback": fallback, **flaky(1, 500)}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Echo:")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_anthropic_client_falls_back_to_openai(gw: Gateway, fresh_fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway holds no OpenAI key, so this fallback must be refused up front with a clear 400.
    with anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="sk-ant-client", default_headers=gw.auth,
                             max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES,  # type: ignore[arg-type]
                                   extra_headers={"Helicone-Fallback": json.dumps([{"model": "gpt-4o", "provider": "openai"}])})
    assert "HELIOGRAPH_PROVIDER_KEY_OPENAI" in info.value.message
    assert fresh_fake.requests == []


@pytest.mark.parametrize(("header", "message"), [
    ("not json", "must be a JSON array"),
    ("[]", "non-empty JSON array"),
    ('[{"modle": "x"}]', "Helicone-Fallback[0] must be an object"),
    ('[{"model": "x", "provider": "nope"}]', "unknown provider 'nope'"),
])
def test_bad_fallback_header_is_a_400(oai: openai.OpenAI, fresh_fake: FakeUpstream, header: str, message: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"Helicone-Fallback": header})
    assert message in info.value.message and fresh_fake.requests == []


def test_helicone_fallbacks_on_the_gateway(gw: Gateway, fake: FakeUpstream, fresh_fake: FakeUpstream) -> None:
    fallbacks = [
        {"target-url": fake.url, "onCodes": [{"from": 500, "to": 599}],
         "headers": {"Authorization": "Bearer a", "Content-Type": "application/json", "X-Fake-Scenario": "status=502"}},
        {"target-url": fake.url, "onCodes": [429], "bodyKeyOverride": {"model": "gpt-4o-mini"},
         "headers": {"Authorization": "Bearer b", "Content-Type": "application/json"}},
    ]
    r = httpx.post(gw.url + "/gateway/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES},
                   headers={**gw.auth, "Helicone-Fallbacks": json.dumps(fallbacks)})
    assert r.status_code == 200, r.text
    assert r.headers["helicone-fallback-index"] == "1"
    assert [q.headers["authorization"] for q in fresh_fake.requests] == ["Bearer a", "Bearer b"]
    assert fresh_fake.requests[1].json["model"] == "gpt-4o-mini"
    assert gw.record(r.headers["helicone-id"])["fallback_index"] == 1
