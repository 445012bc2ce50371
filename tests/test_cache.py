"""Response caching through a real server, on the in-process and the Redis backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, redis_url, start_gateway

MESSAGES = [{"role": "user", "content": "How far can a heliograph signal be seen on a clear day?"}]
CACHE = {"Helicone-Cache-Enabled": "true"}




@pytest.fixture(scope="module", params=["memory", "redis"])
def gw(request: pytest.FixtureRequest, fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {}
    if request.param == "redis":
        env = {"HELIOGRAPH_REDIS_URL": redis_url(), "HELIOGRAPH_REDIS_KEY_PREFIX": f"hg-test-{uuid.uuid4()}:"}
    gateway = start_gateway(tmp_path_factory.mktemp(f"cache-{request.param}"), fake.url, extra_env=env)
    yield gateway
    gateway.stop()


def post(gw: Gateway, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/openai/v1/chat/completions", json=body,
                      headers={**gw.auth, "Authorization": "Bearer sk-client", **headers})


def unique_body(**extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {uuid.uuid4()}"}], **extra}


def test_second_identical_call_is_a_hit_recorded_against_the_original(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body()
    first = post(gw, body, **CACHE)
    assert (first.headers["helicone-cache"], first.headers["helicone-cache-hit"]) == ("MISS", "false")
    second = post(gw, body, **CACHE)
    assert (second.headers["helicone-cache"], second.headers["helicone-cache-hit"]) == ("HIT", "true")
    assert second.headers["helicone-cache-bucket-idx"] == "0"
    assert int(second.headers["helicone-cache-latency"]) >= 0
    assert second.json() == first.json()
    assert second.headers["helicone-id"] != first.headers["helicone-id"]
    assert len(fresh_fake.requests) == 1

    original = gw.record(first.headers["helicone-id"])
    hit = gw.record(second.headers["helicone-id"])
    assert hit["cache_reference_id"] == original["request_id"] and hit["cache_enabled"] is True
    assert hit["prompt_tokens"] == original["prompt_tokens"] > 0
    assert hit["cost"] == 0 and original["cost"] > 0


def test_a_stream_is_replayed_as_the_same_sse_bytes(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body(stream=True)
    first = post(gw, body, **CACHE)
    second = post(gw, body, **CACHE)
    assert second.headers["helicone-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["content-type"].startswith("text/event-stream")
    assert b'"choices":[]' not in second.content.replace(b" ", b"")  # the injected usage chunk stays hidden
    # The SDK serialises the body its own way (another key), so it fills its own entry, then hits it.
    with openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="sk-client",
                       default_headers={**gw.auth, **CACHE}, max_retries=0) as client:
        texts = []
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                stream=True, **{k: v for k, v in body.items() if k != "stream"})  # type: ignore[call-overload]
            texts.append("".join(c.choices[0].delta.content or "" for c in raw.parse()))
    assert raw.headers["helicone-cache"] == "HIT"
    assert texts[0] == texts[1] and texts[0].startswith("Echo:")
    assert len(fresh_fake.requests) == 2


@pytest.mark.parametrize("change", [
    {"Authorization": "Bearer sk-another-client"},       # provider keys never share entries
    {"Helicone-Cache-Seed": "other-namespace"},
    {"Helicone-Cache-Bucket-Max-Size": "1"},              # the cache headers are part of the key
])
def test_what_partitions_the_cache(gw: Gateway, fresh_fake: FakeUpstream, change: dict[str, str]) -> None:
    body = unique_body()
    post(gw, body, **CACHE)
    assert post(gw, body, **CACHE, **change).headers["helicone-cache"] == "MISS"


def test_another_heliograph_key_does_not_share_entries(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    from .conftest import run_cli
    other = run_cli("keys", "create", "--name", f"other-{uuid.uuid4()}", env=gw.env).stdout.strip().splitlines()[-1]
    body = unique_body()
    post(gw, body, **CACHE)
    assert post(gw, body, **CACHE, **{"Helicone-Auth": f"Bearer {other}"}).headers["helicone-cache"] == "MISS"


def test_properties_and_user_do_not_change_the_key(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body()
    post(gw, body, **CACHE, **{"Helicone-User-Id": "a"})
    hit = post(gw, body, **CACHE, **{"Helicone-User-Id": "b", "Helicone-Property-X": "y"})
    assert hit.headers["helicone-cache"] == "HIT"


@pytest.mark.parametrize("ignore", ["request_id,timestamp", '["request_id", "timestamp"]'])
def test_ignore_keys(gw: Gateway, fresh_fake: FakeUpstream, ignore: str) -> None:
    body = unique_body()
    post(gw, {**body, "request_id": "1", "timestamp": 1}, **CACHE, **{"Helicone-Cache-Ignore-Keys": ignore})
    hit = post(gw, {**body, "request_id": "2", "timestamp": 2}, **CACHE, **{"Helicone-Cache-Ignore-Keys": ignore})
    assert hit.headers["helicone-cache"] == "HIT"


def test_bucket_fills_before_it_answers(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body()
    headers = {**CACHE, "Helicone-Cache-Bucket-Max-Size": "3"}
    assert [post(gw, body, **headers).headers["helicone-cache"] for _ in range(3)] == ["MISS"] * 3
    hit = post(gw, body, **headers)
    assert hit.headers["helicone-cache"] == "HIT" and hit.headers["helicone-cache-bucket-idx"] in {"0", "1", "2"}
    assert len(fresh_fake.requests) == 3


def test_bucket_over_20_is_a_clear_400(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    r = post(gw, unique_body(), **CACHE, **{"Helicone-Cache-Bucket-Max-Size": "25"})
    assert r.status_code == 400 and "Helicone-Cache-Bucket-Max-Size" in r.json()["error"]["message"]
    assert fresh_fake.requests == []


def test_errors_and_max_age_zero_are_not_stored(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body()
    assert post(gw, body, **CACHE, **{"X-Fake-Scenario": "status=500"}).status_code == 500
    assert post(gw, body, **CACHE).headers["helicone-cache"] == "MISS"
    other = unique_body()
    post(gw, other, **CACHE, **{"Cache-Control": "max-age=0"})
    assert post(gw, other, **CACHE, **{"Cache-Control": "max-age=0"}).headers["helicone-cache"] == "MISS"


def test_without_the_header_nothing_is_cached(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body()
    first, second = post(gw, body), post(gw, body)
    assert "helicone-cache" not in first.headers and "helicone-cache" not in second.headers
    assert len(fresh_fake.requests) == 2


def test_a_hit_consumes_no_rate_limit(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    body = unique_body()
    limited = {**CACHE, "Helicone-RateLimit-Policy": "1;w=60;s=user", "Helicone-User-Id": str(uuid.uuid4())}
    assert post(gw, body, **limited).status_code == 200
    hit = post(gw, body, **limited)
    assert hit.status_code == 200 and hit.headers["helicone-cache"] == "HIT"
    assert "helicone-ratelimit-remaining" not in hit.headers


def test_semantic_cache_matches_a_paraphrase_and_says_how_similar(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    semantic = {"Helicone-Cache-Semantic": "true", "Helicone-Cache-Similarity": "0.8"}
    topic = uuid.uuid4().hex[:8]
    first = post(gw, {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": f"What is the capital city of France {topic}?"}]}, **semantic)
    assert first.headers["helicone-cache"] == "MISS"
    paraphrase = post(gw, {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": f"what's the capital city of France {topic}"}]}, **semantic)
    assert paraphrase.headers["helicone-cache"] == "HIT"
    assert 0.8 <= float(paraphrase.headers["helicone-cache-similarity"]) <= 1
    assert paraphrase.json()["choices"] == first.json()["choices"]
    unrelated = post(gw, {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": f"How do I bake sourdough bread {topic}?"}]}, **semantic)
    assert unrelated.headers["helicone-cache"] == "MISS"
    other_model = post(gw, {"model": "gpt-4o", "messages": [
        {"role": "user", "content": f"What is the capital city of France {topic}?"}]}, **semantic)
    assert other_model.headers["helicone-cache"] == "MISS"
    embeddings = [r for r in fresh_fake.requests if r.path.endswith("/embeddings")]
    assert embeddings and embeddings[0].headers["authorization"] == "Bearer sk-client"


def test_semantic_guard_refuses_different_numbers_or_negations(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    semantic = {"Helicone-Cache-Semantic": "true", "Helicone-Cache-Similarity": "0.5"}
    topic = uuid.uuid4().hex[:8]
    def ask(text: str) -> str:
        r = post(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{text} {topic}"}]}, **semantic)
        return r.headers["helicone-cache"]
    assert ask("Is raw chicken safe to eat") == "MISS"
    assert ask("Is raw chicken not safe to eat") == "MISS"
    assert ask("Show the sales report for February 2024") == "MISS"
    assert ask("Show the sales report for February 2023") == "MISS"
    assert ask("show the sales report for february 2024") == "HIT"


def test_same_facts() -> None:
    from heliograph.proxy.caching import same_facts
    assert same_facts("user: convert 5 miles to km", "user: Convert 5 miles into km")
    assert not same_facts("user: convert 5 miles to km", "user: convert 6 miles to km")
    assert not same_facts("user: is it safe", "user: isn't it safe")


def test_semantic_cache_without_an_embeddings_key_is_a_clear_400(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    r = httpx.post(gw.url + "/anthropic/v1/messages", headers={**gw.auth, "x-api-key": "sk-ant",
                   "anthropic-version": "2023-06-01", "Helicone-Cache-Semantic": "true"},
                   json={"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "HELIOGRAPH_PROVIDER_KEY_OPENAI" in r.json()["error"]["message"]
    assert gw.record(r.headers["helicone-id"])["response_status"] == 400
