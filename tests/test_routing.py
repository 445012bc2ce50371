"""Routing table, the /gateway allow-list and Azure, through a real server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from heliograph.proxy import routes
from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

CHAT = {"model": "some-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("prefix", "upstream_path"), [
    ("/openai/v1", "/v1"),
    ("/v1", "/v1"),
    ("/groq/openai/v1", "/openai/v1"),
    ("/together/v1", "/v1"),
    ("/openrouter/api/v1", "/api/v1"),
    ("/mistral/v1", "/v1"),
    ("/deepseek/v1", "/v1"),
    ("/fireworks/inference/v1", "/inference/v1"),
    ("/xai/v1", "/v1"),
    ("/gemini/v1beta/openai", "/v1beta/openai"),
    ("/perplexity", ""),
    ("/cerebras/v1", "/v1"),
    ("/deepinfra/v1/openai", "/v1/openai"),
    ("/ollama/v1", "/v1"),
    ("/vllm/v1", "/v1"),
])
def test_every_provider_prefix_forwards_the_rest_of_the_path(gateway: Gateway, fresh_fake: FakeUpstream,
                                                             prefix: str, upstream_path: str) -> None:
    r = httpx.post(gateway.url + prefix + "/chat/completions?trace=1", json=CHAT,
                   headers={**gateway.auth, "Authorization": "Bearer k"})
    assert r.status_code == 200, r.text
    assert fresh_fake.requests[-1].path == upstream_path + "/chat/completions"
    assert fresh_fake.requests[-1].query == "trace=1"
    provider = prefix.strip("/").split("/")[0]
    assert gateway.record(r.headers["helicone-id"])["provider"] == ("openai" if provider == "v1" else provider)


def test_any_method_and_path_is_forwarded(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    r = httpx.get(gateway.url + "/openai/v1/models", headers={**gateway.auth, "Authorization": "Bearer k"})
    assert r.status_code == 200 and r.json()["data"]
    assert (fresh_fake.requests[-1].method, fresh_fake.requests[-1].path) == ("GET", "/v1/models")


def test_unknown_prefix_is_a_clear_404(gateway: Gateway) -> None:
    r = httpx.post(gateway.url + "/nope/v1/chat/completions", json=CHAT, headers=gateway.auth)
    assert r.status_code == 404
    assert "No provider at /nope" in r.json()["error"]["message"]


def test_local_servers_are_routed_only_when_configured() -> None:
    table = routes.with_overrides({"ollama": "http://10.0.0.5:11434"})
    assert table["ollama"] == routes.Provider("ollama", "http://10.0.0.5:11434", "openai")
    assert not routes.LOCAL_PROVIDERS & set(routes.with_overrides({}))


def test_an_unconfigured_local_server_is_a_404_saying_how_to_enable_it(
        gateway: Gateway, fresh_fake: FakeUpstream, tmp_path: Path) -> None:
    unset = start_gateway(tmp_path, fresh_fake.url, extra_env={"HELIOGRAPH_UPSTREAM_OLLAMA": ""})
    try:
        r = httpx.get(unset.url + "/ollama/api/tags", headers=unset.auth)
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "HELIOGRAPH_UPSTREAM_OLLAMA=" in r.json()["error"]["message"]
        assert not fresh_fake.requests
    finally:
        unset.stop()
    configured = httpx.post(gateway.url + "/ollama/v1/chat/completions", json=CHAT,
                            headers={**gateway.auth, "Authorization": "Bearer k"})
    assert configured.status_code == 200, configured.text
    assert fresh_fake.requests[-1].path == "/v1/chat/completions"


def test_azure_needs_an_azure_api_base(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    path = "/azure/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01"
    bad = httpx.post(gateway.url + path, json=CHAT,
                     headers={**gateway.auth, "api-key": "az", "Helicone-OpenAI-Api-Base": "https://evil.example.com"})
    assert bad.status_code == 400 and "Azure" in bad.json()["error"]["message"]
    ok = httpx.post(gateway.url + path, json={"messages": CHAT["messages"]},
                    headers={**gateway.auth, "api-key": "az", "Helicone-OpenAI-Api-Base": "https://res.openai.azure.com"})
    assert ok.status_code == 200, ok.text
    assert fresh_fake.requests[-1].path == "/openai/deployments/my-gpt4o/chat/completions"
    assert fresh_fake.requests[-1].headers["api-key"] == "az"
    record = gateway.record(ok.headers["helicone-id"])
    assert record["provider"] == "azure" and record["request_model"] == "my-gpt4o"


@pytest.mark.parametrize(("target", "reason"), [
    ("https://example.com", "not an allowed provider"),
    ("http://127.0.0.1:9", "private or loopback"),
    ("http://10.1.2.3", "private or loopback"),
    ("http://localhost:11434", "private or loopback"),
    ("http://api.openai.com", "not an allowed provider"),
    ("ftp://api.openai.com", "not an absolute http(s) URL"),
])
def test_gateway_refuses_targets_not_allowed(gateway: Gateway, fresh_fake: FakeUpstream, target: str, reason: str) -> None:
    r = httpx.post(gateway.url + "/gateway/v1/chat/completions", json=CHAT,
                   headers={**gateway.auth, "Helicone-Target-URL": target})
    assert r.status_code == 400
    assert reason in r.json()["error"]["message"]
    assert fresh_fake.requests == []


def test_gateway_without_target_is_a_400(gateway: Gateway) -> None:
    r = httpx.post(gateway.url + "/gateway/v1/chat/completions", json=CHAT, headers=gateway.auth)
    assert r.status_code == 400 and "Helicone-Target-URL" in r.json()["error"]["message"]


def test_gateway_to_a_known_provider_uses_its_upstream(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    # api.groq.com is a known provider host; the test environment points groq at the fake.
    r = httpx.post(gateway.url + "/gateway/openai/v1/chat/completions", json=CHAT,
                   headers={**gateway.auth, "Authorization": "Bearer k",
                            "Helicone-Target-URL": "https://api.groq.com/ignored/path"})
    assert r.status_code == 200, r.text
    assert fresh_fake.requests[-1].path == "/openai/v1/chat/completions"
    assert gateway.record(r.headers["helicone-id"])["provider"] == "groq"


def test_gateway_allow_list_admits_a_listed_private_origin() -> None:
    allowed = frozenset({"http://127.0.0.1:9000"})
    target = routes.gateway_target("http://127.0.0.1:9000/v1", allowed)
    assert isinstance(target, routes.GatewayTarget) and target.origin == "http://127.0.0.1:9000"
    assert isinstance(routes.gateway_target("http://127.0.0.1:9001", allowed), str)
