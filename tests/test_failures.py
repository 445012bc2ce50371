"""Upstream failures, interrupted streams and client disconnects: clear errors, every call recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from heliograph.testing import FakeUpstream

from .conftest import Gateway, free_port, start_gateway

MESSAGES = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]


@pytest.fixture(scope="module")
def impatient(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that gives up on a silent provider after one second."""
    gw = start_gateway(tmp_path_factory.mktemp("impatient"), fake.url, extra_env={
        "HELIOGRAPH_UPSTREAM_READ_TIMEOUT": "1",
        "HELIOGRAPH_UPSTREAM_DEAD": f"http://127.0.0.1:{free_port()}", "HELIOGRAPH_CUSTOM_PROVIDERS": "dead"})
    yield gw
    gw.stop()


@pytest.fixture
def oai(impatient: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=impatient.url + "/openai/v1", api_key="sk-x",
                       default_headers=impatient.auth, max_retries=0) as made:
        yield made


def test_unreachable_provider_is_a_502_in_openai_shape_and_recorded(impatient: Gateway) -> None:
    r = httpx.post(impatient.url + "/dead/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                   headers=impatient.auth)
    assert r.status_code == 502
    assert "Could not reach dead" in r.json()["error"]["message"]
    record = impatient.record(r.headers["helicone-id"])
    assert record["response_status"] == 502 and record["error"] == "upstream_unavailable"


def test_silent_provider_is_a_504(oai: openai.OpenAI, impatient: Gateway, fresh_fake: FakeUpstream) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Fake-Scenario": "delay=3000"})
    assert info.value.status_code == 504
    assert "did not answer" in info.value.message
    record = impatient.record(info.value.response.headers["helicone-id"])
    assert record["error"] == "upstream_timeout"


def test_stream_dropped_mid_way_ends_cleanly_and_is_recorded_partial(
        oai: openai.OpenAI, impatient: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Fake-Scenario": "drop-after=2"})
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in raw.parse():
            received.append(chunk)
    assert len(received) >= 1
    assert "broke off" in str(info.value)
    record = impatient.record(raw.headers["helicone-id"])
    assert record["partial"] is True and record["error"] == "stream_interrupted"
    assert record["response_status"] == 200


def test_stream_that_stalls_ends_cleanly_and_is_recorded_partial(
        oai: openai.OpenAI, impatient: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Fake-Scenario": "stall-after=2,stall=5000"})
    with pytest.raises(openai.APIError) as info:
        list(raw.parse())
    assert "read timeout" in str(info.value)
    record = impatient.record(raw.headers["helicone-id"])
    assert record["partial"] is True and record["error"] == "upstream_timeout"


def test_client_disconnect_closes_upstream_and_is_recorded(impatient: Gateway, fresh_fake: FakeUpstream) -> None:
    with httpx.Client() as http, http.stream(
            "POST", impatient.url + "/openai/v1/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
            headers={**impatient.auth, "Authorization": "Bearer k", "X-Fake-Scenario": "chunk-delay=300"}) as r:
        request_id = r.headers["helicone-id"]
        next(r.iter_raw())
    record = impatient.record(request_id)
    assert record["partial"] is True and record["error"] == "client_disconnected"


def test_stream_without_usage_is_unpriced_not_free(oai: openai.OpenAI, impatient: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"X-Fake-Scenario": "no-usage"})
    list(raw.parse())
    record = impatient.record(raw.headers["helicone-id"])
    assert record["pricing_status"] == "unpriced" and record["cost"] is None


def test_unknown_model_is_unpriced(oai: openai.OpenAI, impatient: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="my-private-finetune-xyz", messages=MESSAGES)
    record = impatient.record(raw.headers["helicone-id"])
    assert record["prompt_tokens"] == raw.parse().usage.prompt_tokens
    assert record["pricing_status"] == "unpriced" and record["cost"] is None


def test_price_override_from_the_config_file(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "heliograph.toml"
    config.write_text('[prices."my-private-finetune-xyz"]\ninput = 1000.0\noutput = 2000.0\n')
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_CONFIG": str(config)})
    try:
        with openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="k", default_headers=gw.auth, max_retries=0) as c:
            raw = c.chat.completions.with_raw_response.create(model="my-private-finetune-xyz", messages=MESSAGES)
        usage = raw.parse().usage
        record = gw.record(raw.headers["helicone-id"])
        assert record["pricing_status"] == "priced"
        assert record["cost"] == pytest.approx((usage.prompt_tokens * 1000 + usage.completion_tokens * 2000) / 1e6)
    finally:
        gw.stop()
