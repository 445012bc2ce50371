"""The fake upstream, driven by the real openai and anthropic SDKs (and raw HTTP where the SDKs
would hide what is on the wire)."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from heliograph.testing import FakeUpstream

CLAUDE = "claude-haiku-4-5"  # the anthropic SDK warns (an error here) on deprecated model names
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
OPENAI_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER_SCHEMA}]
QUESTION: Any = [{"role": "user", "content": "What is the weather like in Paris today"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.clear()


@pytest.fixture
def oai(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def raw(
    fake: FakeUpstream, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request over plain http.client: status, lower-cased headers, undecoded body."""
    conn = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
    try:
        conn.request(method, path, body=None if body is None else orjson.dumps(body), headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sse_payloads(body: bytes) -> list[Any]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


BEARER = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


# --- OpenAI chat ------------------------------------------------------------------------------


def test_chat_non_stream_content_usage_and_recording(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    response = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief"}, *QUESTION],
    )
    completion = response.parse()
    assert response.headers["x-request-id"].startswith("req_")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Echo: What is the weather like in Paris today"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    # 3 + (4 + 2 words) + (4 + 8 words); reply has 9 words.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (21, 9, 30)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 0
    [received] = fake.requests
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.json["messages"][1] == QUESTION[0]


def test_chat_stream_without_usage_matches_non_stream(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    request = {"model": "m", "messages": QUESTION, "stream": True}
    status, headers, body = raw(fake, "POST", "/v1/chat/completions", request, BEARER)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")


def test_chat_stream_include_usage_like_openai(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="o3-mini", messages=QUESTION)
    chunks = list(
        oai.chat.completions.create(
            model="o3-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
    )
    *content, last = chunks
    assert last.choices == [] and last.usage == plain.usage
    assert all(c.usage is None and len(c.choices) == 1 for c in content)
    assert plain.usage is not None and plain.usage.completion_tokens_details is not None
    assert plain.usage.completion_tokens_details.reasoning_tokens == 16
    assert plain.usage.completion_tokens == 9 + 16
    body = {"model": "m", "messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    payloads = sse_payloads(raw(fake, "POST", "/v1/chat/completions", body, BEARER)[2])
    assert all("usage" in p for p in payloads)
    assert [p["usage"] is None for p in payloads].count(False) == 1


def test_chat_tool_call_non_stream_and_stream(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, tools=OPENAI_TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "test", "unit": "celsius"}

    with oai.chat.completions.stream(model="gpt-4o-mini", messages=QUESTION, tools=OPENAI_TOOLS) as stream:
        final = stream.get_final_completion()
    [streamed] = final.choices[0].message.tool_calls or []
    assert streamed.id.startswith("call_") and streamed.function.arguments == call.function.arguments
    assert final.choices[0].finish_reason == "tool_calls"

    # After the tool answered, the model talks instead of calling again.
    follow_up: Any = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    again = oai.chat.completions.create(model="gpt-4o-mini", messages=follow_up, tools=OPENAI_TOOLS)
    assert again.choices[0].finish_reason == "stop"


def test_azure_path_and_api_key(fake: FakeUpstream) -> None:
    with openai.AzureOpenAI(
        azure_endpoint=fake.url, api_key="azure-key", api_version="2024-10-21", max_retries=0
    ) as client:
        completion = client.chat.completions.create(model="my-deployment", messages=QUESTION)
    assert completion.model == "my-deployment"
    [received] = fake.requests
    assert received.path == "/openai/deployments/my-deployment/chat/completions"
    assert received.query == "api-version=2024-10-21" and received.headers["api-key"] == "azure-key"


def test_legacy_completions_and_models(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.choices[0].text == "Echo: Say hi - fake upstream reply"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    streamed = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == completion.choices[0].text
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]


# --- embeddings -------------------------------------------------------------------------------


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_meaningful_and_decode_from_base64(oai: openai.OpenAI) -> None:
    texts = [
        "What is the capital of France?",
        "Please tell me: what's the capital of France",
        "How do I bake sourdough bread at home",
    ]
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    default = oai.embeddings.create(model="text-embedding-3-small", input=texts)
    as_float = oai.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    vectors = [d.embedding for d in as_float.data]
    for decoded, exact in zip(default.data, vectors, strict=True):
        assert decoded.embedding == pytest.approx(exact, abs=1e-6)
    assert all(len(v) == 256 and math.isclose(_cosine(v, v), 1.0) for v in vectors)
    assert _cosine(vectors[0], vectors[1]) > 0.95
    assert abs(_cosine(vectors[0], vectors[2])) < 0.3
    assert default.usage.prompt_tokens == 6 + 8 + 8
    small = oai.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=32)
    assert len(small.data[0].embedding) == 32


# --- Responses API ----------------------------------------------------------------------------


def test_responses_non_stream_and_stream(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-5-mini", input="Tell me a joke", instructions="Be funny")
    assert response.output_text == "Echo: Tell me a joke"
    assert response.usage is not None
    assert response.usage.input_tokens == 3 + (4 + 2) + (4 + 4)
    assert response.usage.output_tokens_details.reasoning_tokens == 16
    assert response.usage.input_tokens_details.cached_tokens == 0

    with oai.responses.stream(model="gpt-5-mini", input="Tell me a joke", instructions="Be funny") as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.count("response.output_text.delta") > 1
    assert final.output_text == response.output_text and final.usage == response.usage

    raw_events = list(oai.responses.create(model="gpt-4o", input="Tell me a joke", stream=True))
    assert [e.sequence_number for e in raw_events] == list(range(len(raw_events)))


def test_responses_tool_call_streamed(oai: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": False}]
    with oai.responses.stream(model="gpt-4o", input="Weather in Paris?", tools=tools) as stream:
        final = stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "test", "unit": "celsius"}


# --- Anthropic --------------------------------------------------------------------------------


def test_anthropic_messages_non_stream_and_stream(fake: FakeUpstream, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=CLAUDE, max_tokens=256, system="Be brief", messages=QUESTION)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: What is the weather like in Paris today"
    assert message.stop_reason == "end_turn" and message.model == CLAUDE
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 9)
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0

    with claude.messages.stream(model=CLAUDE, max_tokens=256, system="Be brief", messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == message.content[0].text
    assert final.usage.input_tokens == 21 and final.usage.output_tokens == 9

    status, headers, body = raw(
        fake,
        "POST",
        "/v1/messages",
        {"model": CLAUDE, "max_tokens": 5, "messages": QUESTION, "stream": True},
        {"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and "request-id" in headers
    events = [line[7:] for line in body.split(b"\n") if line.startswith(b"event: ")]
    assert events[:3] == [b"message_start", b"content_block_start", b"ping"]
    assert events[-3:] == [b"content_block_stop", b"message_delta", b"message_stop"]
    assert sse_payloads(body)[-2]["delta"]["stop_reason"] == "max_tokens"  # max_tokens=5 cut it


def test_anthropic_tool_use_streamed_and_not(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=CLAUDE, max_tokens=256, messages=QUESTION, tools=ANTHROPIC_TOOLS)
    assert message.stop_reason == "tool_use"
    text, tool_use = message.content
    assert text.type == "text" and tool_use.type == "tool_use"
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "test", "unit": "celsius"}

    with claude.messages.stream(model=CLAUDE, max_tokens=256, messages=QUESTION, tools=ANTHROPIC_TOOLS) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[1].type == "tool_use" and final.content[1].input == tool_use.input
    assert final.usage.output_tokens == message.usage.output_tokens

    follow_up: Any = [
        *QUESTION,
        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]},
    ]
    done = claude.messages.create(model=CLAUDE, max_tokens=256, messages=follow_up, tools=ANTHROPIC_TOOLS)
    assert done.stop_reason == "end_turn"
    counted = claude.messages.count_tokens(model=CLAUDE, messages=follow_up, tools=ANTHROPIC_TOOLS)
    assert counted.input_tokens == done.usage.input_tokens


def test_anthropic_prompt_cache_write_then_read(claude: anthropic.Anthropic) -> None:
    system: Any = [{"type": "text", "text": "You are a very helpful assistant", "cache_control": {"type": "ephemeral"}}]
    first = claude.messages.create(model=CLAUDE, max_tokens=64, system=system, messages=QUESTION)
    second = claude.messages.create(model=CLAUDE, max_tokens=64, system=system, messages=QUESTION)
    prefix = 3 + 4 + 6  # priming + system message with 6 words
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (prefix, 0)
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, prefix)
    assert first.usage.input_tokens == second.usage.input_tokens == 4 + 8


# --- scenarios --------------------------------------------------------------------------------


def test_429_raises_rate_limit_error_with_retry_after(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="m", messages=QUESTION, extra_headers={"X-Fake-Scenario": "status=429"})
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


def test_anthropic_error_shapes(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(
            model=CLAUDE, max_tokens=16, messages=QUESTION, extra_headers={"X-Fake-Scenario": "status=529"}
        )
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Fake upstream scenario: HTTP 529"},
        "request_id": caught.value.request_id,
    }


def test_drop_after_breaks_the_sdk_stream(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", messages=QUESTION, stream=True, extra_headers={"X-Fake-Scenario": "drop-after=2"}
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 2


def test_fail_times_then_success_with_sdk_retries(fake: FakeUpstream) -> None:
    scenario = {"X-Fake-Scenario": "status=503,fail-times=2,retry-after-ms=1"}
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="k", max_retries=2) as client:
        completion = client.chat.completions.create(model="m", messages=QUESTION, extra_headers=scenario)
    assert completion.choices[0].message.content
    assert len(fake.requests) == 3
    # The counter is per key: a new key fails again, the exhausted one keeps succeeding.
    headers = {**BEARER, **scenario}
    assert raw(fake, "POST", "/v1/chat/completions", {"messages": QUESTION}, headers)[0] == 200
    assert raw(fake, "POST", "/v1/chat/completions", {"messages": QUESTION}, {**headers, "X-Fake-Key": "b"})[0] == 503
    fake.clear()
    assert raw(fake, "POST", "/v1/chat/completions", {"messages": QUESTION}, headers)[0] == 503


def test_auth_required(fake: FakeUpstream) -> None:
    status, _, body = raw(fake, "POST", "/v1/chat/completions", {"model": "m", "messages": QUESTION})
    assert status == 401
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
    status, _, body = raw(fake, "POST", "/v1/messages", {"model": CLAUDE, "max_tokens": 8, "messages": QUESTION})
    assert status == 401
    assert orjson.loads(body)["error"]["type"] == "authentication_error"
    no_key = {"Authorization": ""}
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="k", max_retries=0, default_headers=no_key) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_unknown_route_and_bad_scenario(fake: FakeUpstream) -> None:
    status, _, body = raw(fake, "POST", "/v1/nope", {}, BEARER)
    assert status == 404 and orjson.loads(body)["error"]["type"] == "invalid_request_error"
    typo = {**BEARER, "X-Fake-Scenario": "stauts=500"}
    status, _, body = raw(fake, "POST", "/v1/chat/completions", {"messages": QUESTION}, typo)
    assert status == 400 and b"stauts" in body


def test_content_scenarios(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    scenario = {"X-Fake-Scenario": "reply=Hello%2C world,model=gpt-4o-2024-08-06,cached=5"}
    completion = oai.chat.completions.create(model="gpt-4o", messages=QUESTION, extra_headers=scenario)
    assert completion.choices[0].message.content == "Hello, world"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.usage and completion.usage.prompt_tokens_details
    assert completion.usage.prompt_tokens_details.cached_tokens == 5

    bare = oai.chat.completions.create(model="m", messages=QUESTION, extra_headers={"X-Fake-Scenario": "no-usage"})
    assert bare.usage is None
    chunks = oai.chat.completions.create(
        model="m",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Fake-Scenario": "no-usage"},
    )
    assert all(c.usage is None and c.choices for c in chunks)

    message = claude.messages.create(
        model=CLAUDE, max_tokens=64, messages=QUESTION, extra_headers={"X-Fake-Scenario": "cached=10,cache-write=3"}
    )
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (10, 3)
    assert message.usage.input_tokens == 15 - 10 - 3


def test_gzip(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    headers = {**BEARER, "Accept-Encoding": "gzip", "X-Fake-Scenario": "gzip"}
    status, response_headers, body = raw(fake, "POST", "/v1/chat/completions", {"messages": QUESTION}, headers)
    assert status == 200 and response_headers["content-encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(body))["object"] == "chat.completion"
    completion = oai.chat.completions.create(model="m", messages=QUESTION, extra_headers={"X-Fake-Scenario": "gzip"})
    assert completion.choices[0].message.content


def test_timing_scenarios(oai: openai.OpenAI) -> None:
    start = time.perf_counter()
    oai.chat.completions.create(model="m", messages=QUESTION, extra_headers={"X-Fake-Scenario": "delay=150"})
    assert time.perf_counter() - start >= 0.15

    stream = oai.chat.completions.create(
        model="m", messages=QUESTION, stream=True, extra_headers={"X-Fake-Scenario": "stall-after=2,stall=200"}
    )
    arrivals = [time.perf_counter() for _ in stream]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert gaps[1] >= 0.19 and max(gaps) == gaps[1]

    # A client timing out on a long stall gets a timeout, and the server lets the handler go.
    with pytest.raises(openai.APITimeoutError):
        for _ in oai.chat.completions.create(
            model="m", messages=QUESTION, stream=True, timeout=0.3, extra_headers={"X-Fake-Scenario": "stall-after=1"}
        ):
            pass


def test_start_from_async_code_and_port_clash(fake: FakeUpstream) -> None:
    async def start_inside_a_running_loop() -> str:
        with FakeUpstream() as other:
            return other.url

    assert asyncio.run(start_inside_a_running_loop()).startswith("http://127.0.0.1:")
    with pytest.raises(OSError):
        FakeUpstream(port=fake.port).start()


def test_standalone_module_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "heliograph.testing", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        with openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
            assert client.chat.completions.create(model="m", messages=QUESTION).choices[0].message.content
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
        if process.stdout is not None:
            process.stdout.close()
