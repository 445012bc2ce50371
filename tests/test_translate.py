"""OpenAI chat completions ↔ Anthropic Messages translation for cross-provider fallbacks.

Whole bodies are checked against fixtures and round trips, and parsed with the real SDK types;
streams come from the fake upstream, are fed through the translators in odd-sized pieces, and
are read back by the real SDKs' streaming helpers over a mock transport.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from heliograph.proxy.translate import (
    DEFAULT_MAX_TOKENS,
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_error_to_openai,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_error_to_anthropic,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)
from heliograph.testing import FakeUpstream

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                                   "parameters": WEATHER_SCHEMA}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}]
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"Authorization": "Bearer k"}
PIECES = (1, 7, 13, 64)  # chunk sizes that cut events, lines and UTF-8 characters anywhere


# --- requests: OpenAI → Anthropic --------------------------------------------------------------


def test_openai_request_maps_every_supported_feature() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in these places?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg"}},
                {"type": "file", "file": {"filename": "notes.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}},
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call.2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "4C"}]},
            {"role": "user", "content": "Thanks, and tomorrow?", "name": "ana"},
        ],
        "tools": OPENAI_TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-123",
        "seed": 7,
        "n": 1,
        "logprobs": False,
    }
    assert openai_to_anthropic_request(body, "claude-haiku-4-5") == {
        "model": "claude-haiku-4-5",
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in these places?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/map.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                 "title": "notes.pdf"},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ]},
            # Both tool results and the next user text make one user turn, results first.
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "4C"}]},
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ]},
        ],
        "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "user-123"},
    }


def test_openai_request_defaults_and_merges() -> None:
    body = {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": ""},  # empty turns vanish instead of breaking alternation
        {"role": "user", "content": "three"},
    ], "max_tokens": None}
    out = openai_to_anthropic_request(body, "claude-sonnet-4-6")
    assert out == {"model": "claude-sonnet-4-6", "max_tokens": DEFAULT_MAX_TOKENS, "messages": [
        {"role": "user", "content": [{"type": "text", "text": t} for t in ("one", "two", "three")]}]}
    assert openai_to_anthropic_request({**body, "max_tokens": 50}, "m")["max_tokens"] == 50
    both = {**body, "max_tokens": 50, "max_completion_tokens": 70}
    assert openai_to_anthropic_request(both, "m")["max_tokens"] == 70


_NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(("openai_choice", "parallel", "anthropic_choice", "back_choice"), [
    ("auto", None, {"type": "auto"}, "auto"),
    ("none", None, {"type": "none"}, "none"),
    ("required", None, {"type": "any"}, "required"),
    (_NAMED, None, {"type": "tool", "name": "get_weather"}, _NAMED),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}, "auto"),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}, "required"),
    (None, None, None, None),
])
def test_tool_choice_both_ways(openai_choice: Any, parallel: Any, anthropic_choice: Any, back_choice: Any) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "tools": OPENAI_TOOLS,
                            "tool_choice": openai_choice, "parallel_tool_calls": parallel}
    out = openai_to_anthropic_request(body, "claude-haiku-4-5")
    assert out.get("tool_choice") == anthropic_choice
    back = anthropic_to_openai_request(out, "gpt-4o")
    assert back.get("tool_choice") == back_choice
    assert back.get("parallel_tool_calls") == parallel


def test_response_format_json_schema_maps_both_ways() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}}
    out = openai_to_anthropic_request(body, "claude-sonnet-4-6")
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    back = anthropic_to_openai_request(out, "gpt-4o")
    assert back["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": schema, "strict": True}}
    plain = {**body, "response_format": {"type": "text"}}
    assert "output_config" not in openai_to_anthropic_request(plain, "claude-sonnet-4-6")


def _openai(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}


def _openai_messages(*messages: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages)}


_USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(("body", "named"), [
    (_openai(n=2), "n > 1"),
    (_openai(modalities=["text", "audio"]), "modalities"),
    (_openai(audio={"voice": "alloy", "format": "mp3"}), "audio"),
    (_openai(logprobs=True), "logprobs"),
    (_openai(top_logprobs=3), "top_logprobs"),
    (_openai(response_format={"type": "json_object"}), "json_object"),
    (_openai(reasoning_effort="high"), "reasoning_effort"),
    (_openai(verbosity="low"), "verbosity"),
    (_openai(frequency_penalty=0.5), "frequency_penalty"),
    (_openai(presence_penalty=-1), "presence_penalty"),
    (_openai(logit_bias={"50256": -100}), "logit_bias"),
    (_openai(functions=[{"name": "f"}]), "functions"),
    (_openai(web_search_options={}), "web_search_options"),
    (_openai(temperature=1.5), "temperature"),
    (_openai(brand_new_parameter=1), "'brand_new_parameter'"),
    (_openai(tools=[{"type": "custom", "custom": {"name": "sql"}}]), "'custom' tool"),
    (_openai(tools=OPENAI_TOOLS, tool_choice={"type": "allowed_tools", "allowed_tools": {}}), "allowed_tools"),
    (_openai_messages({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}),
     "input_audio"),
    (_openai_messages({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}), "file parts"),
    (_openai_messages({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}), "image/tiff"),
    (_openai_messages({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}),
     "image URLs"),
    (_openai_messages(_USER, {"role": "assistant", "content": "ok"}, {"role": "system", "content": "new rules"}, _USER),
     "after the conversation started"),
    (_openai_messages(_USER, {"role": "assistant", "content": "The answer is"}), "ending with an assistant message"),
    (_openai_messages(_USER, {"role": "function", "name": "f", "content": "x"}), "role 'function'"),
    (_openai_messages(_USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "x"}), "not a JSON object"),
    (_openai_messages(_USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}]}), "custom tool calls"),
    (_openai_messages(_USER, {"role": "assistant", "content": None, "audio": {"id": "audio_1"}}, _USER), "audio"),
    ({"model": "gpt-4o", "messages": []}, "non-empty"),
])
def test_openai_request_refuses_what_anthropic_cannot_do(body: dict[str, Any], named: str) -> None:
    with pytest.raises(TranslationError) as caught:
        openai_to_anthropic_request(body, "claude-haiku-4-5")
    assert named in str(caught.value)


@pytest.mark.parametrize("extra", [
    {"n": 1}, {"logprobs": False}, {"reasoning_effort": "none"}, {"seed": 1}, {"store": True},
    {"service_tier": "auto"}, {"prompt_cache_key": "k"}, {"frequency_penalty": 0}, {"logit_bias": {}},
    {"modalities": ["text"]}, {"metadata": {"a": "b"}}, {"temperature": 1}, {"top_logprobs": None},
])
def test_openai_request_accepts_harmless_values(extra: dict[str, Any]) -> None:
    assert openai_to_anthropic_request(_openai(**extra), "claude-haiku-4-5")["messages"]


# --- requests: Anthropic → OpenAI --------------------------------------------------------------


def test_anthropic_request_maps_every_supported_feature() -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "4C"}],
                 "is_error": False},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
        "tools": [{**ANTHROPIC_TOOLS[0], "cache_control": {"type": "ephemeral"}, "strict": True}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "temperature": 0.5,
        "top_p": 0.8,
        "stop_sequences": ["END", "STOP"],
        "stream": True,
        "metadata": {"user_id": "user-123"},
        "thinking": {"type": "disabled"},
        "service_tier": "auto",
    }
    assert anthropic_to_openai_request(body, "gpt-4o-mini") == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "file", "file": {"filename": "document.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}},
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "4C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA,
                                                    "description": "Weather now", "strict": True}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["END", "STOP"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-123",
    }


def _anthropic(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}


def _anthropic_content(*blocks: Any) -> dict[str, Any]:
    return _anthropic(messages=[{"role": "user", "content": list(blocks)}])


@pytest.mark.parametrize(("body", "named"), [
    (_anthropic(thinking={"type": "enabled", "budget_tokens": 2048}), "thinking"),
    (_anthropic(thinking={"type": "adaptive"}), "thinking"),
    (_anthropic(output_config={"effort": "high"}), "output_config.effort"),
    (_anthropic(top_k=5), "top_k"),
    (_anthropic(inference_geo="eu"), "inference_geo"),
    (_anthropic(container="c_1"), "'container'"),
    (_anthropic(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]), "'mcp_servers'"),
    (_anthropic(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "web_search_20250305"),
    (_anthropic(tools=[{**ANTHROPIC_TOOLS[0], "input_examples": [{"city": "Rome"}]}]), "input_examples"),
    (_anthropic(output_config={"format": {"type": "text"}}), "output_config.format"),
    (_anthropic_content({"type": "image", "source": {"type": "file", "file_id": "file_1"}}), "file source"),
    (_anthropic_content({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}),
     "text source"),
    (_anthropic_content({"type": "search_result", "source": "s", "title": "t", "content": []}), "'search_result'"),
    (_anthropic_content({"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}), "tool results with images"),
    (_anthropic(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The answer is"}]),
     "prefill"),
    (_anthropic(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]},
        {"role": "user", "content": "go on"}]), "'server_tool_use'"),
    (_anthropic(messages=[]), "non-empty"),
])
def test_anthropic_request_refuses_what_openai_cannot_do(body: dict[str, Any], named: str) -> None:
    with pytest.raises(TranslationError) as caught:
        anthropic_to_openai_request(body, "gpt-4o")
    assert named in str(caught.value)


def _mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _mutations(child, (*path, key))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copied = copy.copy(value)
    copied[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copied


FULL_OPENAI = {"model": "gpt-4o", "max_tokens": 5, "tools": OPENAI_TOOLS, "tool_choice": _NAMED, "stop": ["x"],
               "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
               "messages": [
                   {"role": "system", "content": [{"type": "text", "text": "s"}]},
                   {"role": "user", "content": [{"type": "text", "text": "t"},
                                                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                                                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}}]},
                   {"role": "assistant", "content": "a", "tool_calls": [
                       {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "r"}]},
                   {"role": "user", "content": "u"}]}
FULL_ANTHROPIC = {"model": "claude-haiku-4-5", "max_tokens": 5, "system": [{"type": "text", "text": "s"}],
                  "tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "tool", "name": "get_weather"},
                  "metadata": {"user_id": "u"}, "output_config": {"format": {"type": "json_schema", "schema": {}}},
                  "messages": [
                      {"role": "user", "content": [
                          {"type": "text", "text": "t"},
                          {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                          {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                    "content": [{"type": "text", "text": "r"}]}]}]}


@pytest.mark.parametrize(("translate", "body"), [
    (openai_to_anthropic_request, FULL_OPENAI), (anthropic_to_openai_request, FULL_ANTHROPIC)],
    ids=["openai", "anthropic"])
def test_malformed_requests_are_refused_never_crash(translate: Callable[[Any, str], Any], body: Any) -> None:
    """Every value in a valid request swapped for each wrong type: translated or refused, nothing else."""
    translate(body, "m")
    refused = 0
    for path in _mutations(body):
        for wrong in (None, 0, 1.5, True, "x", [], {}, [1], {"type": 1}):
            try:
                translate(_replaced(body, path, wrong), "m")
            except TranslationError:
                refused += 1
    assert refused > 100


# --- round trips -------------------------------------------------------------------------------


def test_openai_request_round_trip() -> None:
    original = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": OPENAI_TOOLS,
        "tool_choice": "required",
        "max_completion_tokens": 100,
        "temperature": 0.3,
        "stop": ["END"],
        "user": "u1",
    }
    there = openai_to_anthropic_request(copy.deepcopy(original), "claude-haiku-4-5")
    assert anthropic_to_openai_request(there, "gpt-4o-mini") == original


def test_anthropic_request_round_trip() -> None:
    original = {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "18C"},
                                         {"type": "text", "text": "Tomorrow too?"}]},
        ],
        "system": [{"type": "text", "text": "Be brief."}],
        "max_tokens": 512,
        "top_p": 0.5,
        "stop_sequences": ["END"],
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "metadata": {"user_id": "u1"},
    }
    there = anthropic_to_openai_request(copy.deepcopy(original), "gpt-4o")
    assert openai_to_anthropic_request(there, "claude-sonnet-4-6") == original


# --- whole answers -----------------------------------------------------------------------------

ANTHROPIC_MESSAGE = {
    "id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Let me look. "},
                {"type": "text", "text": "One moment."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
              "output_tokens": 7, "service_tier": "standard"},
}


def test_anthropic_message_becomes_a_chat_completion_the_sdk_parses() -> None:
    body = anthropic_to_openai_response(orjson.dumps(ANTHROPIC_MESSAGE), "gpt-4o-mini", created=1_700_000_000)
    completion = ChatCompletion.model_validate_json(body)
    assert completion.id == "chatcmpl-msg_01ABC"
    assert completion.model == "claude-haiku-4-5"  # the model that answered, not the one asked for
    assert completion.created == 1_700_000_000
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look. One moment."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id == "toolu_01"
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (60, 7, 67)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 30
    assert completion.usage.prompt_tokens_details.cache_write_tokens == 20


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"), (None, "stop"),
])
def test_stop_reasons(stop_reason: str | None, finish_reason: str) -> None:
    message = {**ANTHROPIC_MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}
    completion = ChatCompletion.model_validate_json(anthropic_to_openai_response(orjson.dumps(message), "m"))
    assert completion.choices[0].finish_reason == finish_reason
    if stop_reason not in ("stop_sequence", "pause_turn", "model_context_window_exceeded", None):
        back = Message.model_validate_json(openai_to_anthropic_response(
            anthropic_to_openai_response(orjson.dumps(message), "m"), "m"))
        assert back.stop_reason == stop_reason


def test_whole_answer_round_trip_keeps_content_usage_and_ids() -> None:
    there = anthropic_to_openai_response(orjson.dumps(ANTHROPIC_MESSAGE), "gpt-4o-mini")
    back = Message.model_validate_json(openai_to_anthropic_response(there, "claude-haiku-4-5"))
    assert back.id == "msg_chatcmpl-msg_01ABC"
    assert back.model == "claude-haiku-4-5"
    assert [b.type for b in back.content] == ["text", "tool_use"]
    assert back.content[0].type == "text" and back.content[0].text == "Let me look. One moment."
    assert back.content[1].type == "tool_use" and back.content[1].input == {"city": "Paris"}
    assert back.usage.input_tokens == 10
    assert back.usage.cache_creation_input_tokens == 20
    assert back.usage.cache_read_input_tokens == 30
    assert back.usage.output_tokens == 7


def test_openai_answer_odd_shapes() -> None:
    empty: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                          "finish_reason": "content_filter"}]}
    message = Message.model_validate_json(openai_to_anthropic_response(orjson.dumps(empty), "gpt-4o"))
    assert message.content[0].type == "text" and message.content[0].text == "I can't."
    assert message.stop_reason == "refusal"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (0, 0)  # upstream sent none
    bad_args = copy.deepcopy(empty)
    bad_args["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]
    with pytest.raises(TranslationError, match="not a JSON object"):
        openai_to_anthropic_response(orjson.dumps(bad_args), "gpt-4o")
    with pytest.raises(TranslationError, match="no choices"):
        openai_to_anthropic_response(orjson.dumps({**empty, "choices": []}), "gpt-4o")
    with pytest.raises(TranslationError, match="not a JSON"):
        anthropic_to_openai_response(b"<html>bad gateway</html>", "gpt-4o")


def _post(fake: FakeUpstream, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    response = httpx.post(fake.url + path, json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response


def test_translated_requests_work_against_the_fake_upstream(fake: FakeUpstream) -> None:
    client_body = {"model": "gpt-4o-mini", "max_completion_tokens": 100, "tools": OPENAI_TOOLS,
                   "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is the weather in Paris today?"}]}
    upstream = _post(fake, "/v1/messages", openai_to_anthropic_request(client_body, "claude-haiku-4-5"),
                     ANTHROPIC_HEADERS)
    completion = ChatCompletion.model_validate_json(anthropic_to_openai_response(upstream.content, "gpt-4o-mini"))
    assert completion.model == "claude-haiku-4-5"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls

    anthropic_body = {"model": "claude-sonnet-4-6", "max_tokens": 100, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "Name three colours please"}]}
    upstream = _post(fake, "/v1/chat/completions", anthropic_to_openai_request(anthropic_body, "gpt-4o-mini"),
                     OPENAI_HEADERS)
    message = Message.model_validate_json(openai_to_anthropic_response(upstream.content, "claude-sonnet-4-6"))
    assert message.model == "gpt-4o-mini" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text.startswith("Echo: Name three colours")


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "anthropic_type", "sdk_error"), [
    (400, "invalid_request_error", openai.BadRequestError),
    (401, "authentication_error", openai.AuthenticationError),
    (429, "rate_limit_error", openai.RateLimitError),
    (529, "overloaded_error", openai.InternalServerError),
])
def test_anthropic_errors_reach_openai_clients(status: int, anthropic_type: str, sdk_error: type[Exception]) -> None:
    upstream = orjson.dumps({"type": "error", "error": {"type": anthropic_type, "message": "Nope: details"}})
    body = anthropic_error_to_openai(upstream, status=status)
    error = orjson.loads(body)["error"]
    assert error["message"] == "Nope: details" and set(error) == {"message", "type", "param", "code"}
    with _openai_client(lambda _: httpx2.Response(status, content=body)) as client, \
            pytest.raises(sdk_error) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "Nope: details" in str(caught.value)


@pytest.mark.parametrize(("status", "openai_error", "anthropic_type", "sdk_error"), [
    (400, {"message": "Bad", "type": "invalid_request_error", "code": None}, "invalid_request_error",
     anthropic.BadRequestError),
    (401, {"message": "Bad", "type": "invalid_request_error", "code": "invalid_api_key"}, "authentication_error",
     anthropic.AuthenticationError),
    (429, {"message": "Bad", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit_error",
     anthropic.RateLimitError),
    (500, {"message": "Bad", "type": "server_error", "code": None}, "api_error", anthropic.InternalServerError),
])
def test_openai_errors_reach_anthropic_clients(status: int, openai_error: dict[str, Any], anthropic_type: str,
                                              sdk_error: type[Exception]) -> None:
    body = openai_error_to_anthropic(orjson.dumps({"error": openai_error}), status=status)
    assert orjson.loads(body) == {"type": "error", "error": {"type": anthropic_type, "message": "Bad"}}
    without_status = orjson.loads(openai_error_to_anthropic(orjson.dumps({"error": openai_error})))
    assert without_status["error"]["type"] == anthropic_type
    with _anthropic_client(lambda _: httpx2.Response(status, content=body)) as client, pytest.raises(sdk_error):
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_error_bodies_that_are_not_json() -> None:
    assert orjson.loads(anthropic_error_to_openai(b"upstream exploded", status=502))["error"]["message"] == \
        "upstream exploded"
    assert orjson.loads(openai_error_to_anthropic(b'{"error": "plain string"}', status=404)) == \
        {"type": "error", "error": {"type": "not_found_error", "message": "plain string"}}


# --- streams -----------------------------------------------------------------------------------


def _first_data(sse: bytes) -> dict[str, Any]:
    line = next(line for line in sse.splitlines() if line.startswith(b"data: "))
    data: dict[str, Any] = orjson.loads(line[len(b"data: "):])
    return data


def _without_id(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "id"}


def _feed(translator: AnthropicToOpenAIStream | OpenAIToAnthropicStream, data: bytes, size: int) -> bytes:
    out = b"".join(translator.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + translator.close()


def _openai_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(api_key="k", base_url="http://translated/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def _anthropic_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url="http://translated", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def _sse(body: bytes) -> Callable[[httpx2.Request], httpx2.Response]:
    return lambda _: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


@pytest.fixture
def anthropic_stream(fake: FakeUpstream) -> Iterator[Callable[..., tuple[bytes, dict[str, Any]]]]:
    """(SSE bytes, the same answer as JSON) from the fake upstream's Messages API."""

    def fetch(tools: bool, scenario: str = "") -> tuple[bytes, dict[str, Any]]:
        body: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 100,
                                "messages": [{"role": "user", "content": "Tell me about the weather in Paris ☀️ today"}]}
        if tools:
            body["tools"] = ANTHROPIC_TOOLS
        headers = {**ANTHROPIC_HEADERS, "X-Fake-Scenario": scenario} if scenario else ANTHROPIC_HEADERS
        whole = _post(fake, "/v1/messages", body, headers).json()
        streamed = _post(fake, "/v1/messages", {**body, "stream": True}, headers).content
        return streamed, whole

    yield fetch


@pytest.mark.parametrize("size", PIECES)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_anthropic_stream_read_by_the_openai_sdk(anthropic_stream: Callable[..., tuple[bytes, dict[str, Any]]],
                                                 tools: bool, size: int) -> None:
    streamed, whole = anthropic_stream(tools, "cached=5,cache-write=3")
    translated = _feed(AnthropicToOpenAIStream("gpt-4o-mini", include_usage=True), streamed, size)
    expected = ChatCompletion.model_validate_json(anthropic_to_openai_response(orjson.dumps(whole), "gpt-4o-mini"))
    with _openai_client(_sse(translated)) as client, client.chat.completions.stream(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
            stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    upstream_id = _first_data(streamed)["message"]["id"]
    assert final.id == f"chatcmpl-{upstream_id}" and final.model == "claude-haiku-4-5"
    got, want = final.choices[0], expected.choices[0]
    assert got.finish_reason == want.finish_reason == ("tool_calls" if tools else "stop")
    assert got.message.content == want.message.content
    assert "☀️" in (got.message.content or "") or tools
    got_calls = [(c.function.name, orjson.loads(c.function.arguments)) for c in got.message.tool_calls or []]
    want_calls = [(c.function.name, orjson.loads(c.function.arguments))
                  for c in want.message.tool_calls or [] if c.type == "function"]
    assert got_calls == want_calls and bool(got_calls) == tools
    assert all(c.id.startswith("toolu_") for c in got.message.tool_calls or [])
    assert final.usage == expected.usage
    assert final.usage is not None and final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 5


def test_anthropic_stream_without_usage_and_with_crlf(
        anthropic_stream: Callable[..., tuple[bytes, dict[str, Any]]]) -> None:
    streamed, _ = anthropic_stream(True)
    plain = _feed(AnthropicToOpenAIStream("gpt-4o-mini", include_usage=False, created=5), streamed, 10_000)
    crlf = _feed(AnthropicToOpenAIStream("gpt-4o-mini", include_usage=False, created=5),
                 streamed.replace(b"\n", b"\r\n"), 5)
    assert crlf == plain
    chunks = [orjson.loads(e[len(b"data: "):]) for e in plain.split(b"\n\n") if e and e != b"data: [DONE]"]
    assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)
    assert plain.endswith(b"data: [DONE]\n\n") and plain.count(b"[DONE]") == 1
    with _openai_client(_sse(plain)) as client:
        pieces = list(client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                     messages=[{"role": "user", "content": "x"}]))
    assert pieces[0].choices[0].delta.role == "assistant"
    assert pieces[-1].choices[0].finish_reason == "tool_calls"


def test_anthropic_stream_error_event_raises_in_the_openai_sdk() -> None:
    upstream = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
                b'"role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,'
                b'"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
                b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\n'
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":"Hel"}}\n\n'
                b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    translator = AnthropicToOpenAIStream("gpt-4o", include_usage=True)
    translated = _feed(translator, upstream, 9)
    assert b"[DONE]" not in translated and translator.close() == b""
    with _openai_client(_sse(translated)) as client, pytest.raises(openai.APIError, match="Overloaded"):
        for _ in client.chat.completions.create(model="gpt-4o", stream=True, messages=[{"role": "user", "content": "x"}]):
            pass


@pytest.fixture
def openai_stream(fake: FakeUpstream) -> Iterator[Callable[..., tuple[bytes, dict[str, Any]]]]:
    """(SSE bytes with usage, the same answer as JSON) from the fake upstream's chat completions."""

    def fetch(tools: bool, scenario: str = "") -> tuple[bytes, dict[str, Any]]:
        body: dict[str, Any] = {"model": "gpt-4o-mini", "max_completion_tokens": 100,
                                "messages": [{"role": "user", "content": "Tell me about the weather in Paris ☀️ today"}]}
        if tools:
            body["tools"] = OPENAI_TOOLS
        headers = {**OPENAI_HEADERS, "X-Fake-Scenario": scenario} if scenario else OPENAI_HEADERS
        whole = _post(fake, "/v1/chat/completions", body, headers).json()
        stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        return _post(fake, "/v1/chat/completions", stream_body, headers).content, whole

    yield fetch


@pytest.mark.parametrize("size", PIECES)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
def test_openai_stream_read_by_the_anthropic_sdk(openai_stream: Callable[..., tuple[bytes, dict[str, Any]]],
                                                 tools: bool, size: int) -> None:
    streamed, whole = openai_stream(tools, "cached=4")
    translated = _feed(OpenAIToAnthropicStream("claude-haiku-4-5", include_usage=False), streamed, size)
    expected = Message.model_validate_json(openai_to_anthropic_response(orjson.dumps(whole), "claude-haiku-4-5"))
    with _anthropic_client(_sse(translated)) as client, client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "x"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert final.id == f"msg_{_first_data(streamed)['id']}" and final.model == "gpt-4o-mini"
    assert final.stop_reason == expected.stop_reason == ("tool_use" if tools else "end_turn")
    assert [_without_id(b.to_dict()) for b in final.content] == [_without_id(b.to_dict()) for b in expected.content]
    assert all(b.id.startswith("call_") for b in final.content if b.type == "tool_use")
    assert "".join(texts) == "".join(b.text for b in expected.content if b.type == "text")
    assert final.usage.input_tokens == expected.usage.input_tokens
    assert final.usage.output_tokens == expected.usage.output_tokens
    assert final.usage.cache_read_input_tokens == expected.usage.cache_read_input_tokens == 4


def _openai_chunks(*deltas: dict[str, Any], finish: str = "tool_calls") -> bytes:
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}})
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_openai_stream_with_parallel_tool_calls_and_odd_ids() -> None:
    upstream = _openai_chunks(
        {"role": "assistant", "content": "Two lookups."},
        {"tool_calls": [{"index": 0, "id": "call:1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
    )
    translated = _feed(OpenAIToAnthropicStream("claude-sonnet-4-6"), upstream, 3)
    with _anthropic_client(_sse(translated)) as client, client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert final.id == "msg_chatcmpl-9" and final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    calls = [(b.id, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [("call_1", {"city": "Paris"}), ("call_2", {"city": "Oslo"})]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 5)


def test_openai_stream_edge_cases() -> None:
    # Only [DONE]: still a whole message with one (empty) text block, as Anthropic always sends.
    translated = _feed(OpenAIToAnthropicStream("claude-haiku-4-5"), b"data: [DONE]\n\n", 4)
    with _anthropic_client(_sse(translated)) as client, client.messages.stream(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-haiku-4-5" and final.stop_reason == "end_turn"
    assert [(b.type, getattr(b, "text", None)) for b in final.content] == [("text", "")]

    # No [DONE] from the upstream: close() ends the message; a second close() adds nothing.
    translator = OpenAIToAnthropicStream("claude-haiku-4-5")
    body = _openai_chunks({"content": "Hi"}, finish="length").removesuffix(b"data: [DONE]\n\n")
    out = translator.feed(body)
    assert b"message_stop" not in out
    end = translator.close()
    assert b'"stop_reason":"max_tokens"' in end and end.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert translator.close() == b""

    # A mid-stream error becomes Anthropic's error event, which the SDK raises.
    error = b'data: {"error": {"message": "Rate limited", "type": "requests", "code": "rate_limit_exceeded"}}\n\n'
    translated = _feed(OpenAIToAnthropicStream("claude-haiku-4-5"),
                       _openai_chunks({"content": "Hi"}).split(b"\n\n")[0] + b"\n\n" + error, 6)
    assert translated.count(b"event: error") == 1 and b"message_stop" not in translated
    with _anthropic_client(_sse(translated)) as client, pytest.raises(anthropic.APIStatusError, match="Rate limited"):
        for _ in client.messages.create(model="claude-haiku-4-5", max_tokens=5, stream=True,
                                        messages=[{"role": "user", "content": "x"}]):
            pass


def test_translated_streams_are_the_same_however_the_bytes_are_cut(
        anthropic_stream: Callable[..., tuple[bytes, dict[str, Any]]],
        openai_stream: Callable[..., tuple[bytes, dict[str, Any]]]) -> None:
    anthropic_bytes, _ = anthropic_stream(True)
    openai_bytes, _ = openai_stream(True)
    whole = _feed(AnthropicToOpenAIStream("m", include_usage=True, created=1), anthropic_bytes, len(anthropic_bytes))
    for size in (1, 2, 5, 11):
        assert _feed(AnthropicToOpenAIStream("m", include_usage=True, created=1), anthropic_bytes, size) == whole
    reverse = _feed(OpenAIToAnthropicStream("m"), openai_bytes, len(openai_bytes))
    for size in (1, 3, 17):
        assert _feed(OpenAIToAnthropicStream("m"), openai_bytes, size) == reverse
