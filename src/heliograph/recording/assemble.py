"""A streamed answer rebuilt as the provider's non-stream JSON, as Helicone stores it.

Runs in the recorder, off the hot path, on the decoded SSE body as received (possibly cut off
mid-event: a partial stream assembles what arrived). The stream's shape picks the assembler:

    chat.completion.chunk        → chat.completion (OpenAI and compatible APIs)
    text_completion chunks       → text_completion (legacy /completions)
    response.* events            → the `response` of response.completed / incomplete / failed
    message_start … message_stop → an Anthropic `message`

Anything else gives None and the raw SSE is stored as the body. Never raises on what upstream sent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from ..usage import sse_json

__all__ = ["assemble_stream"]

_Obj = dict[str, Any]


def assemble_stream(body: bytes) -> _Obj | None:
    """The non-stream JSON object for SSE `body`, or None when its shape is not one we know."""
    events = iter(sse_json(body))
    first = next(events, None)
    if first is None:
        return None
    assembler = _assembler_for(first)
    if assembler is None:
        return None
    return assembler(_chain(first, events))


def _assembler_for(event: _Obj) -> Callable[[Iterable[_Obj]], _Obj | None] | None:
    kind = event.get("type")
    if isinstance(kind, str):
        if kind.startswith("response."):
            return _responses
        if kind in ("message_start", "ping", "content_block_start"):
            return _anthropic
    if event.get("object") == "text_completion":
        return _completion
    if event.get("object") == "chat.completion.chunk" or "choices" in event:
        return _chat
    return None


def _chain(first: _Obj, rest: Iterator[_Obj]) -> Iterator[_Obj]:
    yield first
    yield from rest


# --- OpenAI chat completions -----------------------------------------------------------------


def _chat(events: Iterable[_Obj]) -> _Obj | None:
    out: _Obj = {"id": None, "object": "chat.completion", "created": None, "model": None}
    choices: dict[int, _Obj] = {}
    usage: Any = None
    groq_usage: Any = None
    for event in events:
        _take_header(out, event, ("id", "created", "model", "service_tier", "system_fingerprint"))
        for raw in _list(event.get("choices")):
            if (choice := _dict(raw)) is not None:
                _chat_choice(choices, choice)
        if event.get("usage") is not None:
            usage = event["usage"]
        if (x_groq := _dict(event.get("x_groq"))) is not None and x_groq.get("usage") is not None:
            groq_usage = x_groq["usage"]
    if out["id"] is None and not choices:
        return None
    out["choices"] = [_finish_chat_choice(choices[i]) for i in sorted(choices)]
    if usage is not None or groq_usage is not None:
        out["usage"] = usage if usage is not None else groq_usage
    return out


def _chat_choice(choices: dict[int, _Obj], chunk: _Obj) -> None:
    index = _index(chunk.get("index"))
    choice = choices.setdefault(index, {
        "index": index, "message": {"role": "assistant", "content": None, "refusal": None},
        "logprobs": None, "finish_reason": None, "_tools": {}})
    message: _Obj = choice["message"]
    delta = _dict(chunk.get("delta")) or {}
    if isinstance(role := delta.get("role"), str) and role:
        message["role"] = role
    for field in ("content", "refusal", "reasoning_content", "reasoning"):
        # `reasoning_content` / `reasoning`: DeepSeek's, OpenRouter's and Groq's thinking text.
        if isinstance(piece := delta.get(field), str):
            message[field] = (message.get(field) or "") + piece
    if isinstance(annotations := delta.get("annotations"), list):
        message.setdefault("annotations", []).extend(annotations)
    if (call := _dict(delta.get("function_call"))) is not None:
        legacy = message.setdefault("function_call", {"name": "", "arguments": ""})
        _concat(legacy, call, ("name", "arguments"))
    tools: dict[int, _Obj] = choice["_tools"]
    for raw in _list(delta.get("tool_calls")):
        if (call := _dict(raw)) is None:
            continue
        tool = tools.setdefault(_index(call.get("index"), len(tools)),
                                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if isinstance(call_id := call.get("id"), str) and call_id:
            tool["id"] = call_id
        if isinstance(kind := call.get("type"), str) and kind:
            tool["type"] = kind
        _concat(tool["function"], _dict(call.get("function")) or {}, ("name", "arguments"))
    if (logprobs := _dict(chunk.get("logprobs"))) is not None:
        merged = choice["logprobs"] = choice["logprobs"] or {"content": None, "refusal": None}
        for field in ("content", "refusal"):
            if isinstance(tokens := logprobs.get(field), list):
                merged[field] = (merged[field] or []) + tokens
    if isinstance(reason := chunk.get("finish_reason"), str) and reason:
        choice["finish_reason"] = reason


def _finish_chat_choice(choice: _Obj) -> _Obj:
    tools: dict[int, _Obj] = choice.pop("_tools")
    if tools:
        choice["message"]["tool_calls"] = [tools[i] for i in sorted(tools)]
    return choice


# --- OpenAI legacy completions ---------------------------------------------------------------


def _completion(events: Iterable[_Obj]) -> _Obj | None:
    out: _Obj = {"id": None, "object": "text_completion", "created": None, "model": None}
    choices: dict[int, _Obj] = {}
    usage: Any = None
    for event in events:
        _take_header(out, event, ("id", "created", "model", "system_fingerprint"))
        for raw in _list(event.get("choices")):
            if (chunk := _dict(raw)) is None:
                continue
            index = _index(chunk.get("index"))
            choice = choices.setdefault(index, {"text": "", "index": index, "logprobs": None, "finish_reason": None})
            if isinstance(text := chunk.get("text"), str):
                choice["text"] += text
            if (logprobs := _dict(chunk.get("logprobs"))) is not None:
                # tokens, token_logprobs, top_logprobs, text_offset: one list entry per token.
                merged = choice["logprobs"] = choice["logprobs"] or {}
                for field, value in logprobs.items():
                    if isinstance(value, list):
                        merged[field] = merged.get(field, []) + value
            if isinstance(reason := chunk.get("finish_reason"), str) and reason:
                choice["finish_reason"] = reason
        if event.get("usage") is not None:
            usage = event["usage"]
    out["choices"] = [choices[i] for i in sorted(choices)]
    if usage is not None:
        out["usage"] = usage
    return out


# --- OpenAI Responses API --------------------------------------------------------------------

_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _responses(events: Iterable[_Obj]) -> _Obj | None:
    """The final `response` when the stream got that far; else the last one seen with the items
    that arrived (text and arguments from their deltas)."""
    latest: _Obj | None = None
    items: dict[int, _Obj] = {}
    for event in events:
        kind = event.get("type")
        if (response := _dict(event.get("response"))) is not None:
            if kind in _RESPONSES_TERMINAL:
                return response
            latest = response
            continue
        position = _index(event.get("output_index"), -1)
        if kind in ("response.output_item.added", "response.output_item.done"):
            if (item := _dict(event.get("item"))) is not None and position >= 0:
                items[position] = copy.deepcopy(item)
        elif (item := items.get(position)) is None:
            continue
        elif kind == "response.content_part.added":
            if (part := _dict(event.get("part"))) is not None:
                parts = item.setdefault("content", [])
                if isinstance(parts, list):
                    parts.append(copy.deepcopy(part))
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            parts = item.get("content")
            at = _index(event.get("content_index"))
            if isinstance(parts, list) and at < len(parts) and (part := _dict(parts[at])) is not None:
                field = "text" if kind == "response.output_text.delta" else "refusal"
                part[field] = str(part.get(field) or "") + str(event.get("delta") or "")
        elif kind == "response.function_call_arguments.delta":
            item["arguments"] = str(item.get("arguments") or "") + str(event.get("delta") or "")
    if latest is None:
        return None
    partial = dict(latest)
    partial["output"] = [items[i] for i in sorted(items)]
    return partial


# --- Anthropic Messages ----------------------------------------------------------------------

# Blocks whose `input` arrives as input_json_delta fragments.
_JSON_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_DELTA_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}


def _anthropic(events: Iterable[_Obj]) -> _Obj | None:
    message: _Obj | None = None
    blocks: dict[int, _Obj] = {}
    inputs: dict[int, str] = {}
    for event in events:
        kind = event.get("type")
        if kind == "message_start":
            message = copy.deepcopy(_dict(event.get("message")) or {})
        elif kind == "content_block_start":
            if (block := _dict(event.get("content_block"))) is not None:
                blocks[_index(event.get("index"))] = copy.deepcopy(block)
        elif kind == "content_block_delta":
            index = _index(event.get("index"))
            delta = _dict(event.get("delta")) or {}
            block = blocks.setdefault(index, {})
            delta_kind = delta.get("type")
            if delta_kind == "input_json_delta":
                inputs[index] = inputs.get(index, "") + str(delta.get("partial_json") or "")
            elif delta_kind == "citations_delta":
                block.setdefault("citations", []).append(delta.get("citation"))
            elif isinstance(delta_kind, str) and (field := _DELTA_FIELDS.get(delta_kind)):
                block[field] = str(block.get(field) or "") + str(delta.get(field) or "")
        elif kind == "message_delta" and message is not None:
            for key, value in (_dict(event.get("delta")) or {}).items():
                message[key] = value
            if (usage := _dict(event.get("usage"))) is not None:
                # Cumulative counts; a field left null (or out) keeps message_start's value.
                merged = _dict(message.get("usage")) or {}
                merged.update({k: v for k, v in usage.items() if v is not None})
                message["usage"] = merged
    if message is None:
        return None
    for index, text in inputs.items():
        block = blocks[index]
        if block.get("type") in _JSON_INPUT_BLOCKS or "input" in block:
            block["input"] = _parsed_input(text, block.get("input"))
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def _parsed_input(text: str, default: Any) -> Any:
    if not text.strip():
        return default if default is not None else {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Cut off mid-argument: what arrived is kept as text rather than lost.
        return text


# --- helpers: tolerate any JSON shape --------------------------------------------------------


def _take_header(out: _Obj, event: _Obj, fields: tuple[str, ...]) -> None:
    for field in fields:
        value = event.get(field)
        # Azure's first chunk has model "" (content filter results only): a later one wins.
        if value is not None and value != "":
            out[field] = value


def _concat(target: _Obj, source: _Obj, fields: tuple[str, ...]) -> None:
    for field in fields:
        if isinstance(piece := source.get(field), str):
            target[field] = str(target.get(field) or "") + piece


def _index(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _dict(value: Any) -> _Obj | None:
    return value if isinstance(value, dict) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
