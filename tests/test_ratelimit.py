"""Rate limits through a real server: one process in memory, and two processes sharing Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, free_port, redis_url, run_cli, start_gateway

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "limit me"}]}


def post(gw: Gateway, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/openai/v1/chat/completions", json=BODY,
                      headers={**gw.auth, "Authorization": "Bearer k", **headers})


def fresh_user() -> dict[str, str]:
    return {"Helicone-User-Id": str(uuid.uuid4())}


def test_token_bucket_counts_down_then_refuses(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    headers = {"Helicone-RateLimit-Policy": "3;w=60;s=user", **fresh_user()}
    answers = [post(gateway, **headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["helicone-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[0].headers["helicone-ratelimit-limit"] == "3"
    assert answers[0].headers["helicone-ratelimit-policy"] == "3;w=60;s=user"
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert int(refused.headers["helicone-ratelimit-reset"]) > 0
    assert refused.headers["x-helicone-error"] == "rate_limited"
    assert len(fresh_fake.requests) == 3
    record = gateway.record(refused.headers["helicone-id"])
    assert record["response_status"] == 429 and record["error"] == "rate_limited"


def test_the_openai_sdk_sees_a_rate_limit_error(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    headers = {"Helicone-RateLimit-Policy": "1;w=60;s=user", **fresh_user()}
    with openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key="k", default_headers={**gateway.auth, **headers},
                       max_retries=0) as client:
        client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**BODY)  # type: ignore[call-overload]


def test_anthropic_route_refuses_in_anthropic_shape(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    headers = {"Helicone-RateLimit-Policy": "1;w=60;s=user", **fresh_user()}
    with anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="k",
                             default_headers={**gateway.auth, **headers}, max_retries=0) as client:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        with pytest.raises(anthropic.RateLimitError) as info:
            client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.response.json()["error"]["type"] == "rate_limit_error"


def test_users_have_their_own_buckets_and_the_seed_syntax_is_accepted(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    policy = {"Helicone-RateLimit-Policy": "1;w=60;u=user"}
    alice, bob = fresh_user(), fresh_user()
    assert post(gateway, **policy, **alice).headers["helicone-ratelimit-policy"] == "1;w=60;s=user"
    assert post(gateway, **policy, **alice).status_code == 429
    assert post(gateway, **policy, **bob).status_code == 200


def test_property_segment_and_missing_segment(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    policy = {"Helicone-RateLimit-Policy": "1;w=60;s=tenant"}
    tenant = {"Helicone-Property-Tenant": str(uuid.uuid4())}
    assert post(gateway, **policy, **tenant).status_code == 200
    assert post(gateway, **policy, **tenant).status_code == 429
    missing = post(gateway, **policy)
    assert missing.status_code == 200
    assert missing.headers["helicone-ratelimit-policy"] == "1;w=60;s=tenant"
    assert "helicone-ratelimit-remaining" not in missing.headers


@pytest.mark.parametrize(("policy", "reason"), [("10;w=5", "w"), ("ten;w=60", "quota"), ("10;w=60;u=tokens", "u")])
def test_an_invalid_policy_is_ignored_and_says_why(gateway: Gateway, fresh_fake: FakeUpstream, policy: str, reason: str) -> None:
    r = post(gateway, **{"Helicone-RateLimit-Policy": policy})
    assert r.status_code == 200
    assert reason in r.headers["helicone-ratelimit-ignored"]
    assert "helicone-ratelimit-limit" not in r.headers


def test_cent_limits_charge_the_real_cost(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    # A tenth of a cent: the first call is allowed (balance > 0), its real cost is charged after.
    headers = {"Helicone-RateLimit-Policy": "0.001;w=3600;u=cents;s=user", **fresh_user()}
    statuses = []
    for _ in range(40):
        statuses.append(post(gateway, **headers, **{"X-Fake-Scenario": "reply=" + "word%20" * 300}).status_code)
        if statuses[-1] == 429:
            break
        time.sleep(0.05)  # the charge happens once the answer is complete
    assert statuses[0] == 200 and statuses[-1] == 429


@pytest.fixture
def redis_prefix() -> str:
    redis_url()
    return f"hg-test-{uuid.uuid4()}:"


def test_two_processes_share_one_limit_through_redis(fake: FakeUpstream, tmp_path: Path, redis_prefix: str) -> None:
    env = {"HELIOGRAPH_REDIS_URL": redis_url(), "HELIOGRAPH_REDIS_KEY_PREFIX": redis_prefix}
    first = start_gateway(tmp_path, fake.url, extra_env=env)
    second = start_gateway(tmp_path, fake.url, extra_env=env, reuse_key=first.key)
    try:
        headers = {"Helicone-RateLimit-Policy": "5;w=3600", "Authorization": "Bearer k"}
        statuses = [httpx.post(gw.url + "/openai/v1/chat/completions", json=BODY,
                               headers={**gw.auth, **headers}).status_code
                    for gw in [first, second] * 6]
        assert statuses.count(200) == 5 and statuses.count(429) == 7
    finally:
        first.stop()
        second.stop()


def test_workers_run_with_redis(fake: FakeUpstream, tmp_path: Path, redis_prefix: str) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HELIOGRAPH_")}
    env |= {"HELIOGRAPH_DB_URL": db, "HELIOGRAPH_UPSTREAM_OPENAI": fake.url, "HELIOGRAPH_REDIS_KEY_PREFIX": redis_prefix}
    key = run_cli("keys", "create", "--name", "w", env=env).stdout.strip().splitlines()[-1]
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "heliograph.cli.main", "serve", "--port", str(port),
                                "--workers", "2", "--redis", redis_url()], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "workers did not start"
            time.sleep(0.1)
        headers = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer k",
                   "Helicone-RateLimit-Policy": "4;w=3600"}
        statuses = [httpx.post(f"http://127.0.0.1:{port}/openai/v1/chat/completions", json=BODY,
                               headers=headers).status_code for _ in range(6)]
        assert statuses == [200] * 4 + [429] * 2
    finally:
        process.terminate()
        process.wait(timeout=60)
