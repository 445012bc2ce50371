"""Streams rebuilt as the provider's non-stream answer: the fake provider's streams must assemble
to exactly its JSON answers, and recorded golden streams (cut short ones too) to what arrived."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heliograph.recording.assemble import assemble_stream
from heliograph.testing import anthropic_api, openai_api, responses_api
from heliograph.testing.content import Answer, Prompt, make_answer, sse_data, sse_event, tool_call_for

GOLDEN = Path(__file__).parent / "golden" / "usage"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}
CREATED = 1_750_000_000


def answer(model: str, *, tool: bool = False, preamble: bool = False, limit: int | None = None) -> Answer:
    prompt = Prompt(model=model, last_user="Tell me about the harbour lights tonight please", prompt_tokens=31,
                    tool=tool_call_for("get_weather", SCHEMA) if tool else None, limit=limit)
    return make_answer(prompt, None, preamble=preamble)


def without_annotations(body: dict[str, Any]) -> dict[str, Any]:
    # OpenAI's JSON answer has `annotations: []`; a stream without annotation deltas has none.
    for choice in body["choices"]:
        choice["message"].pop("annotations", None)
    return body


def sse(events: list[dict[str, Any]], *, done: bool = True) -> bytes:
    return b"".join(sse_data(e) for e in events) + (b"data: [DONE]\n\n" if done else b"")


# -- the fake provider: stream and JSON answer must agree --------------------------------------------

@pytest.mark.parametrize("tool", [False, True], ids=["text", "tool_call"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_chat_stream_assembles_to_the_json_answer(tool: bool, include_usage: bool) -> None:
    reply = answer("gpt-4o-mini", tool=tool)
    body = b"".join(openai_api.chat_frames(reply, "abc", CREATED, include_usage))
    expected = without_annotations(openai_api.chat_body(reply, "abc", CREATED))
    if not include_usage:
        del expected["usage"]
    assert assemble_stream(body) == expected


def test_openai_legacy_completions_stream_assembles_to_a_text_completion() -> None:
    reply = answer("gpt-3.5-turbo-instruct", limit=3)
    body = b"".join(openai_api.completion_frames(reply, "abc", CREATED, True))
    assembled = assemble_stream(body)
    assert assembled == openai_api.completion_body(reply, "abc", CREATED)
    assert assembled is not None and assembled["object"] == "text_completion"
    assert assembled["choices"][0]["finish_reason"] == "length" and assembled["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("tool", [False, True], ids=["text", "function_call"])
@pytest.mark.parametrize("limit", [None, 2], ids=["completed", "incomplete"])
def test_openai_responses_stream_is_its_final_response(tool: bool, limit: int | None) -> None:
    reply = answer("gpt-4.1-mini", tool=tool, limit=limit)
    request = {"input": "hi", "max_output_tokens": limit}
    body = b"".join(responses_api.response_frames(reply, "abc", CREATED, request))
    assert assemble_stream(body) == responses_api.response_body(reply, "abc", CREATED, request)


@pytest.mark.parametrize("tool", [False, True], ids=["text", "text_and_tool_use"])
def test_anthropic_stream_assembles_to_the_message(tool: bool) -> None:
    reply = answer("claude-sonnet-4-6", tool=tool, preamble=True)
    body = b"".join(anthropic_api.message_frames(reply, "abc"))
    assembled = assemble_stream(body)
    assert assembled == anthropic_api.message_body(reply, "abc")
    if tool:
        assert assembled is not None and assembled["content"][-1]["input"] == {"city": "test", "days": 1}


# -- shapes the fake does not produce ----------------------------------------------------------------

def chunk(delta: dict[str, Any], index: int = 0, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": CREATED, "model": "gpt-4o",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def test_chat_parallel_tool_calls_are_assembled_by_index() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})
    body = sse([
        chunk({"role": "assistant", "content": None}),
        call(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        call(1, id="call_b", type="function", function={"name": "get_time", "arguments": ""}),
        call(0, function={"arguments": '{"city": '}),
        call(1, function={"arguments": '{"tz": "UTC"}'}),
        call(0, function={"arguments": '"Lisbon"}'}),
        chunk({}, finish="tool_calls"),
        {**chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
    ])
    assembled = assemble_stream(body)
    assert assembled is not None
    message = assembled["choices"][0]["message"]
    assert message["content"] is None and assembled["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}},
    ]
    assert assembled["usage"]["total_tokens"] == 13


def test_chat_choices_by_index_legacy_function_call_refusal_and_logprobs() -> None:
    token = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    body = sse([
        chunk({"role": "assistant", "content": ""}, index=1),
        chunk({"role": "assistant", "function_call": {"name": "lookup", "arguments": ""}}, index=0),
        chunk({"content": "Hi"}, index=1, logprobs={"content": [token]}),
        chunk({"function_call": {"arguments": '{"q": 1}'}}, index=0),
        chunk({"refusal": "I can't"}, index=2),
        chunk({}, index=0, finish="function_call"),
        chunk({}, index=1, finish="stop"),
    ])
    assembled = assemble_stream(body)
    assert assembled is not None
    first, second, third = assembled["choices"]
    assert [c["index"] for c in assembled["choices"]] == [0, 1, 2]
    assert first["message"]["function_call"] == {"name": "lookup", "arguments": '{"q": 1}'}
    assert first["finish_reason"] == "function_call"
    assert second["message"]["content"] == "Hi" and second["logprobs"] == {"content": [token], "refusal": None}
    assert third["message"]["refusal"] == "I can't" and third["message"]["content"] is None


def test_groq_usage_and_azure_content_filter_chunk() -> None:
    groq = assemble_stream((GOLDEN / "groq_stream.body").read_bytes())
    assert groq is not None and groq["usage"]["total_tokens"] == 43
    assert groq["choices"][0]["message"]["content"] == "Fast models answer before you blink."
    azure = assemble_stream((GOLDEN / "azure_chat_stream.body").read_bytes())
    # The first chunk (prompt filter results) has model "": the real model is kept.
    assert azure is not None and azure["model"] == "gpt-4o-2024-11-20"
    assert azure["choices"][0]["message"]["content"] == "Azure says hello."


def test_anthropic_thinking_signature_redacted_thinking_and_usage_merge() -> None:
    def event(kind: str, **payload: Any) -> bytes:
        return sse_event(kind, {"type": kind, **payload})

    def delta(index: int, **fields: Any) -> bytes:
        return event("content_block_delta", index=index, delta=fields)
    start: dict[str, Any] = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 7, "output_tokens": 1}}
    body = b"".join([
        event("message_start", message=start),
        event("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="Let me think"),
        delta(0, type="thinking_delta", thinking=" about it."),
        delta(0, type="signature_delta", signature="EqQBCgIYAh"),
        event("content_block_stop", index=0),
        event("content_block_start", index=1, content_block={"type": "redacted_thinking", "data": "EmwKAhgB"}),
        event("content_block_stop", index=1),
        event("content_block_start", index=2, content_block={"type": "text", "text": ""}),
        delta(2, type="text_delta", text="Lisbon"),
        delta(2, type="text_delta", text=" it is."),
        event("content_block_stop", index=2),
        event("content_block_start", index=3,
              content_block={"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}),
        delta(3, type="input_json_delta", partial_json=""),
        delta(3, type="input_json_delta", partial_json='{"q": "Lis'),
        delta(3, type="input_json_delta", partial_json='bon", "n": 2}'),
        event("content_block_stop", index=3),
        event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None},
              usage={"output_tokens": 42, "input_tokens": None}),
        event("message_stop"),
    ])
    assert assemble_stream(body) == {**start, "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "Let me think about it.", "signature": "EqQBCgIYAh"},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "text", "text": "Lisbon it is."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "Lisbon", "n": 2}},
    ], "usage": {"input_tokens": 50, "cache_read_input_tokens": 7, "output_tokens": 42}}


def test_golden_anthropic_stream_with_tool_use() -> None:
    assembled = assemble_stream((GOLDEN / "anthropic_stream_tool_use.body").read_bytes())
    assert assembled is not None and assembled["stop_reason"] == "tool_use"
    assert assembled["usage"]["output_tokens"] == 89 and assembled["usage"]["input_tokens"] == 472
    assert assembled["content"] == [
        {"type": "text", "text": "Okay, let me check the weather in San Francisco."},
        {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}},
    ]


# -- streams cut short: what arrived ----------------------------------------------------------------

def test_partial_streams_assemble_what_arrived() -> None:
    openai_cut = assemble_stream((GOLDEN / "openai_stream_truncated.body").read_bytes())
    assert openai_cut is not None and openai_cut["choices"][0]["message"]["content"] == "Once upon a time, in a"
    assert openai_cut["choices"][0]["finish_reason"] is None and "usage" not in openai_cut

    anthropic_cut = assemble_stream((GOLDEN / "anthropic_stream_truncated.body").read_bytes())
    assert anthropic_cut is not None and anthropic_cut["stop_reason"] is None
    assert anthropic_cut["content"] == [{"type": "text", "text": "Here is a summary of the quarterly report: revenue grew"}]


@pytest.mark.parametrize("tool", [False, True], ids=["text", "function_call"])
def test_partial_responses_stream_keeps_the_items_that_arrived(tool: bool) -> None:
    reply = answer("gpt-4.1-mini", tool=tool)
    frames = responses_api.response_frames(reply, "abc", CREATED, {})
    kept = [f for f in frames if b"output_item.done" not in f and b"response.completed" not in f
            and b"_text.done" not in f and b"content_part.done" not in f and b"arguments.done" not in f]
    cut = b"".join(kept[:-1]) + kept[-1][: len(kept[-1]) // 2]
    assembled = assemble_stream(cut)
    assert assembled is not None and assembled["status"] == "in_progress" and assembled["id"] == "resp_abc"
    item = assembled["output"][0]
    arrived = json.loads(kept[-2].split(b"data: ", 1)[1])["delta"]   # the last whole delta
    if tool:
        assert reply.tool is not None and reply.tool.arguments.startswith(item["arguments"])
        assert item["arguments"].endswith(arrived)
    else:
        text = item["content"][0]["text"]
        assert reply.text.startswith(text) and text.endswith(arrived)


def test_partial_tool_input_is_kept_as_text() -> None:
    reply = answer("claude-sonnet-4-6", tool=True)
    frames = anthropic_api.message_frames(reply, "abc")
    last_fragment = max(i for i, f in enumerate(frames) if b"input_json_delta" in f)
    cut = b"".join(frames[:last_fragment])
    assembled = assemble_stream(cut)
    assert assembled is not None
    tool_input = assembled["content"][-1]["input"]
    assert isinstance(tool_input, str) and reply.tool is not None and reply.tool.arguments.startswith(tool_input)


@pytest.mark.parametrize("body", [
    b"", b"not an event stream", b"data: [DONE]\n\n", b'data: {"hello": "world"}\n\n',
    b'event: message\ndata: {"candidates": []}\n\n', b"data: \xe2\x82\n\n",
])
def test_unknown_or_empty_streams_give_none(body: bytes) -> None:
    assert assemble_stream(body) is None
