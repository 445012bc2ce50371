"""dashboard/conversation.py: stored bodies of each API family → the messages the detail page shows."""

from __future__ import annotations

from typing import Any

from heliograph.dashboard.conversation import Message, conversation


def shape(messages: list[Message] | None) -> list[tuple[str, list[tuple[str, str]], bool]]:
    assert messages is not None
    return [(m.role, [(p.kind, p.text) for p in m.parts], m.answer) for m in messages]


def test_openai_chat_with_tool_round_trip_and_image() -> None:
    request = {"model": "gpt-4o", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]}
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Mild, 18C."}}]}
    messages = conversation(request, response, "/v1/chat/completions")
    assert shape(messages) == [
        ("system", [("text", "Be brief.")], False),
        ("user", [("text", "Weather here?"), ("placeholder", "[image: image/png, 2.9 KB]")], False),
        ("assistant", [("tool_call", '{\n  "city": "Paris"\n}')], False),
        ("tool", [("tool_result", "18C")], False),
        ("assistant", [("text", "Mild, 18C.")], True),
    ]
    assert messages is not None
    call, result = messages[2].parts[0], messages[3].parts[0]
    assert (call.name, call.call_id, result.call_id) == ("weather", "call_1", "call_1")


def test_openai_chat_answer_with_tool_calls_and_several_choices() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    response = {"choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{\"a\": 1"}}]}},   # cut short: kept as is
        {"index": 1, "message": {"role": "assistant", "content": "hello", "reasoning_content": "think"}},
    ]}
    messages = conversation(request, response)
    assert shape(messages)[1:] == [("assistant", [("tool_call", '{"a": 1')], True),
                                   ("assistant", [("thinking", "think"), ("text", "hello")], True)]
    assert messages is not None and [m.name for m in messages[1:]] == ["choice 0", "choice 1"]


def test_anthropic_messages_with_thinking_tool_use_and_results() -> None:
    request = {"model": "claude-sonnet-4", "system": [{"type": "text", "text": "You are terse."}], "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                                  "data": "QUJD"}},
                                     {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"x": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "a cat"}], "is_error": False},
                                     {"type": "text", "text": "and?"}]},
    ]}
    response = {"type": "message", "role": "assistant", "content": [
        {"type": "redacted_thinking", "data": "xx"}, {"type": "text", "text": "A cat."}]}
    messages = conversation(request, response, "/v1/messages")
    assert shape(messages) == [
        ("system", [("text", "You are terse.")], False),
        ("user", [("placeholder", "[image: image/jpeg, 3 B]"), ("text", "What is this?")], False),
        ("assistant", [("thinking", "hmm"), ("tool_call", '{\n  "x": 1\n}')], False),
        ("tool", [("tool_result", "a cat")], False),
        ("user", [("text", "and?")], False),
        ("assistant", [("thinking", "[redacted thinking]"), ("text", "A cat.")], True),
    ]
    assert messages is not None and messages[3].parts[0].call_id == "toolu_1"


def test_responses_api_items() -> None:
    request = {"model": "gpt-4.1", "instructions": "Be kind.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Sum 2+2"},
                                     {"type": "input_image", "image_url": "https://example.com/x.png"}]},
        {"type": "function_call", "call_id": "fc_1", "name": "add", "arguments": '{"a":2,"b":2}'},
        {"type": "function_call_output", "call_id": "fc_1", "output": "4"},
    ]}
    response = {"object": "response", "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "easy"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]},
    ]}
    assert shape(conversation(request, response, "/v1/responses")) == [
        ("system", [("text", "Be kind.")], False),
        ("user", [("text", "Sum 2+2"), ("placeholder", "[image: https://example.com/x.png]")], False),
        ("assistant", [("tool_call", '{\n  "a": 2,\n  "b": 2\n}')], False),
        ("tool", [("tool_result", "4")], False),
        ("assistant", [("thinking", "easy")], True),
        ("assistant", [("text", "4")], True),
    ]
    assert shape(conversation({"input": "hi"}, None, "/v1/responses")) == [("user", [("text", "hi")], False)]


def test_completions_and_embeddings() -> None:
    completion = conversation({"model": "gpt-3.5-turbo-instruct", "prompt": "Once"},
                              {"choices": [{"index": 0, "text": " upon a time"}]}, "/v1/completions")
    assert shape(completion) == [("user", [("text", "Once")], False), ("assistant", [("text", " upon a time")], True)]
    embedding = conversation({"model": "text-embedding-3-small", "input": ["a", "b"]},
                             {"object": "list", "data": [{"embedding": [0.1, 0.2, 0.3]}, {"embedding": [0.0] * 3}]},
                             "/v1/embeddings")
    assert shape(embedding) == [("user", [("text", "a")], False), ("user", [("text", "b")], False),
                                ("assistant", [("placeholder", "[embedding: 2 vectors, 3 dimensions]")], True)]


def test_error_answer_shows_the_prompt_only() -> None:
    messages = conversation({"messages": [{"role": "user", "content": "hi"}]},
                            {"error": {"message": "rate limited", "type": "rate_limit"}})
    assert shape(messages) == [("user", [("text", "hi")], False)]


def test_unknown_shapes_are_none() -> None:
    assert conversation(None, None) is None
    assert conversation("plain text", {"x": 1}) is None
    assert conversation({"foo": "bar"}, {"choices": []}) is None
    assert conversation([1, 2], None) is None


def test_hostile_values_never_raise() -> None:
    weird: Any = {"messages": [None, 3, {"role": "wizard", "content": {"type": "mystery"}},
                               {"role": "user", "content": [None, {"type": "image_url"}, {"type": "file", "file": {}}]},
                               {"role": "assistant", "tool_calls": [None, {"function": None}]}]}
    messages = conversation(weird, {"choices": [None, {"message": "nope"}], "content": 5})
    assert shape(messages) == [
        ("user", [("placeholder", "[mystery block]")], False),
        ("user", [("placeholder", "[image]"), ("placeholder", "[file: attached]")], False),
        ("assistant", [("tool_call", "")], False),
    ]
