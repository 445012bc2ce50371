"""Streamed answers translated event by event, and the answer vocabulary both translators share.

:mod:`heliograph.proxy.translate` is the public surface (it re-exports this module's names) and
holds the request and whole-body translations; this module holds what answers have in common —
stop reasons, usage, ids, error bodies — and the two stream translators. Both take the upstream's
raw SSE bytes cut anywhere (``feed``) and return complete events in the client's format; ``close``
ends the stream once the upstream has finished. What only streams have:

Anthropic → OpenAI::

    message_start                    first chunk: {"role": "assistant", "content": ""}
    content_block_start tool_use     tool_calls[i] with id, name and empty arguments
    text_delta / input_json_delta    content / tool_calls[i].function.arguments
    message_delta                    chunk with finish_reason (usage kept for later)
    message_stop                     usage-only chunk when include_usage, then [DONE]
    error                            {"error": {...}} in OpenAI's shape; no [DONE] after it
    ping, content_block_stop, thinking and signature deltas: nothing

OpenAI → Anthropic::

    first chunk                      message_start (input tokens unknown yet: 0)
    delta.content / delta.refusal    text block: content_block_start, text_delta
    delta.tool_calls[i]              tool_use block: content_block_start, input_json_delta
    finish_reason, usage-only chunk  kept for the end
    [DONE] (or close)                content_block_stop, message_delta with stop_reason and the
                                     whole usage (the SDK takes input_tokens from it), message_stop
    {"error": {...}}                 event: error in Anthropic's shape

Upstream SSE framing is cut at blank lines here and parsed by sseclient-py. Chunk ids keep the
upstream id (prefixed), chunk `model` is the model that answered.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sseclient import SSEClient

__all__ = [
    "AnthropicToOpenAIStream",
    "Json",
    "OpenAIToAnthropicStream",
    "anthropic_error_to_openai",
    "anthropic_stop_reason",
    "anthropic_usage",
    "openai_error_to_anthropic",
    "openai_finish_reason",
    "openai_usage",
    "prefixed_id",
    "tool_use_id",
]

Json = dict[str, Any]

DONE = b"data: [DONE]\n\n"
_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")
_NOT_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")


# --- answer vocabulary, shared with the whole-body translators ---------------------------------

_FINISH_REASON = {  # Anthropic stop_reason → OpenAI finish_reason
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
_STOP_REASON = {  # OpenAI finish_reason → Anthropic stop_reason
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
    "content_filter": "refusal",
}


def openai_finish_reason(stop_reason: Any) -> str:
    return _FINISH_REASON.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_stop_reason(finish_reason: Any) -> str:
    return _STOP_REASON.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def openai_usage(usage: Mapping[str, Any]) -> Json:
    """Anthropic usage as OpenAI's: prompt_tokens counts cache reads and writes too."""
    read, write = _count(usage.get("cache_read_input_tokens")), _count(usage.get("cache_creation_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + read + write
    completion = _count(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": write}}


def anthropic_usage(usage: Mapping[str, Any] | None) -> Json:
    """OpenAI usage as Anthropic's, whose input_tokens excludes cache reads and writes.

    Anthropic's Message always has usage, so an answer without it reports zeros."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    read, write = _count(details.get("cached_tokens")), _count(details.get("cache_write_tokens"))
    return {"input_tokens": max(_count(usage.get("prompt_tokens")) - read - write, 0),
            "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
            "output_tokens": _count(usage.get("completion_tokens"))}


# --- errors ------------------------------------------------------------------------------------

_OPENAI_ERROR = {  # Anthropic error type → OpenAI (type, code)
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "timeout"),
}
_ANTHROPIC_ERROR_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
    504: "timeout_error", 529: "overloaded_error",
}
_ANTHROPIC_ERROR_BY_CODE = {  # OpenAI error code or type → Anthropic type, when no status says
    "invalid_request_error": "invalid_request_error", "invalid_api_key": "authentication_error",
    "rate_limit_exceeded": "rate_limit_error", "requests": "rate_limit_error", "tokens": "rate_limit_error",
    "insufficient_quota": "billing_error", "server_error": "api_error",
}


def anthropic_error_to_openai(body: bytes, *, status: int | None = None) -> bytes:
    """An Anthropic error body in OpenAI's shape; `status` types a body that doesn't say."""
    kind, message = _error_parts(body)
    default = ("server_error" if status is None or status >= 500 else "invalid_request_error", None)
    error_type, code = _OPENAI_ERROR.get(kind or "", default)
    return orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}})


def openai_error_to_anthropic(body: bytes, *, status: int | None = None) -> bytes:
    """An OpenAI-style error body in Anthropic's shape, typed by `status` when given."""
    kind, message = _error_parts(body)
    error_type = _ANTHROPIC_ERROR_BY_STATUS.get(status or 0)
    if error_type is None:
        default = "api_error" if status is None or status >= 500 else "invalid_request_error"
        error_type = _ANTHROPIC_ERROR_BY_CODE.get(kind or "", default)
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def _error_parts(body: bytes) -> tuple[str | None, str]:
    """(the most specific error kind, message) from either family's error body or plain text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body.decode(errors="replace").strip()[:1000] or "upstream error"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return None, error
    if not isinstance(error, dict):
        detail = parsed.get("message") or parsed.get("detail") if isinstance(parsed, dict) else None
        return None, str(detail or body.decode(errors="replace")[:1000])
    code = error.get("code")
    kind = code if isinstance(code, str) and code else error.get("type")
    return (kind if isinstance(kind, str) else None), str(error.get("message") or "upstream error")


def prefixed_id(value: Any, prefix: str) -> str:
    """The upstream id, prefixed as the client's SDK family expects; a fresh one if missing."""
    if not isinstance(value, str) or not value:
        return prefix + uuid.uuid4().hex
    return value if value.startswith(prefix) else prefix + value


def tool_use_id(value: Any) -> str:
    """An OpenAI tool call id as Anthropic accepts it (letters, digits, _ and - only)."""
    if not isinstance(value, str) or not value:
        return "toolu_" + uuid.uuid4().hex
    return _NOT_TOOL_ID.sub("_", value)


# --- streams ---------------------------------------------------------------------------------------


class _Events:
    """The JSON payloads of whole SSE events out of bytes cut anywhere; None stands for [DONE].

    Anthropic's payloads repeat the event name as "type", so the name itself isn't needed."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._pending + data
        end = max(buffer.rfind(b) + len(b) if b in buffer else -1 for b in _BOUNDARIES)
        if end < 0:
            self._pending = buffer
            return []
        self._pending = buffer[end:]
        return _parse(buffer[:end])

    def rest(self) -> list[Any]:
        """A last event the upstream didn't end with a blank line."""
        rest, self._pending = self._pending, b""
        return _parse(rest + b"\n\n") if rest.strip() else []


def _parse(complete: bytes) -> list[Any]:
    try:
        complete.decode()
    except UnicodeDecodeError:  # sseclient decodes strictly; don't let bad bytes end the stream
        complete = complete.decode(errors="replace").encode()
    out: list[Any] = []
    for event in SSEClient(iter((complete,))).events():
        if event.data == "[DONE]":
            out.append(None)
            continue
        try:
            out.append(orjson.loads(event.data))
        except orjson.JSONDecodeError:
            continue  # a provider's comment or garbage: nothing a client could use either
    return out


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


class AnthropicToOpenAIStream:
    """An Anthropic Messages stream as OpenAI chat.completion.chunk events."""

    __slots__ = ("_base", "_done", "_events", "_finished", "_include_usage", "_started", "_tools", "_usage")

    def __init__(self, request_model: str, include_usage: bool, *, created: int | None = None) -> None:
        self._events = _Events()
        self._include_usage = include_usage
        self._base: Json = {"id": prefixed_id(None, "chatcmpl-"), "object": "chat.completion.chunk",
                            "created": int(time.time()) if created is None else created, "model": request_model}
        self._usage: Json = {}
        self._tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._started = self._finished = self._done = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for payload in self._events.feed(data):
            self._translate(_dict(payload), out)
        return b"".join(out)

    def close(self) -> bytes:
        out: list[bytes] = []
        for payload in self._events.rest():
            self._translate(_dict(payload), out)
        self._end(out)
        return b"".join(out)

    def _translate(self, event: Json, out: list[bytes]) -> None:
        if self._done:
            return
        kind = event.get("type")
        if kind == "message_start":
            message = _dict(event.get("message"))
            self._base["id"] = prefixed_id(message.get("id"), "chatcmpl-")
            self._base["model"] = message.get("model") or self._base["model"]
            self._add_usage(message.get("usage"))
            self._start(out)
        elif kind == "content_block_start":
            block = _dict(event.get("content_block"))
            if block.get("type") == "tool_use":
                index = self._tools[event.get("index", -1)] = len(self._tools)
                call = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}
                self._chunk(out, {"tool_calls": [call]})
            elif block.get("type") == "text" and block.get("text"):
                self._chunk(out, {"content": block["text"]})
        elif kind == "content_block_delta":
            delta = _dict(event.get("delta"))
            if delta.get("type") == "text_delta" and delta.get("text"):
                self._chunk(out, {"content": delta["text"]})
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                tool = self._tools.get(event.get("index", -1))
                if tool is not None:
                    call = {"index": tool, "function": {"arguments": delta["partial_json"]}}
                    self._chunk(out, {"tool_calls": [call]})
        elif kind == "message_delta":
            self._add_usage(event.get("usage"))
            self._finish(out, _dict(event.get("delta")).get("stop_reason"))
        elif kind == "message_stop":
            self._end(out)
        elif kind == "error":
            out.append(b"data: " + anthropic_error_to_openai(orjson.dumps(event)) + b"\n\n")
            self._done = True

    def _add_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative: they replace message_start's, not add to them.
        self._usage.update((k, v) for k, v in _dict(usage).items() if v is not None)

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            self._chunk(out, {"role": "assistant", "content": ""})

    def _chunk(self, out: list[bytes], delta: Json, finish_reason: str | None = None) -> None:
        if not self._started:
            self._start(out)
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._base, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None  # as OpenAI sends it when usage was asked for
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")

    def _finish(self, out: list[bytes], stop_reason: Any) -> None:
        if not self._finished:
            self._finished = True
            self._chunk(out, {}, openai_finish_reason(stop_reason))

    def _end(self, out: list[bytes]) -> None:
        if self._done:
            return
        self._done = True
        if self._started:
            self._finish(out, None)
            if self._include_usage and self._usage:
                usage = {**self._base, "choices": [], "usage": openai_usage(self._usage)}
                out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        out.append(DONE)


class OpenAIToAnthropicStream:
    """An OpenAI chat.completion.chunk stream as Anthropic Messages events.

    `include_usage` is accepted so both translators are built alike; Anthropic's events always
    carry usage, so it changes nothing here.
    """

    __slots__ = ("_block", "_done", "_events", "_model", "_next_index", "_started", "_stop_reason",
                 "_tools", "_usage")

    def __init__(self, request_model: str, include_usage: bool = True) -> None:
        del include_usage
        self._events = _Events()
        self._model = request_model
        self._started = self._done = False
        self._block: int | None = None  # the open content block's index
        self._next_index = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index → Anthropic block index
        self._stop_reason = "end_turn"
        self._usage: Json | None = None

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for payload in self._events.feed(data):
            self._translate(payload, out)
        return b"".join(out)

    def close(self) -> bytes:
        out: list[bytes] = []
        for payload in self._events.rest():
            self._translate(payload, out)
        self._end(out)
        return b"".join(out)

    def _translate(self, chunk: Any, out: list[bytes]) -> None:
        if self._done:
            return
        if chunk is None:  # [DONE]
            self._end(out)
            return
        chunk = _dict(chunk)
        if "error" in chunk:
            out.append(_event("error", orjson.loads(openai_error_to_anthropic(orjson.dumps(chunk)))))
            self._done = True
            return
        self._start(out, chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
        delta = _dict(choice.get("delta"))
        # Refusals read as text; DeepSeek-style reasoning_content has no signature to be thinking.
        for text in (delta.get("content"), delta.get("refusal")):
            if isinstance(text, str) and text:
                self._text(out, text)
        for call in delta.get("tool_calls") or ():
            self._tool_call(out, _dict(call))
        if choice.get("finish_reason"):
            self._stop_reason = anthropic_stop_reason(choice["finish_reason"])

    def _start(self, out: list[bytes], chunk: Json) -> None:
        if self._started:
            return
        self._started = True
        self._model = chunk.get("model") or self._model
        message: Json = {"id": prefixed_id(chunk.get("id"), "msg_"), "type": "message", "role": "assistant",
                   "model": self._model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        out.append(_event("message_start", {"message": message}))

    def _open(self, out: list[bytes], block: Json) -> int:
        self._stop_block(out)
        self._block = index = self._next_index
        self._next_index += 1
        out.append(_event("content_block_start", {"index": index, "content_block": block}))
        return index

    def _stop_block(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(_event("content_block_stop", {"index": self._block}))
            self._block = None

    def _text(self, out: list[bytes], text: str) -> None:
        if self._block is None or self._block in self._tools.values():
            self._open(out, {"type": "text", "text": ""})
        out.append(_event("content_block_delta", {"index": self._block,
                                                  "delta": {"type": "text_delta", "text": text}}))

    def _tool_call(self, out: list[bytes], call: Json) -> None:
        function = _dict(call.get("function"))
        position = call.get("index", 0)
        index = self._tools.get(position)
        if index is None:
            block: Json = {"type": "tool_use", "id": tool_use_id(call.get("id")), "name": function.get("name") or "",
                     "input": {}}
            index = self._tools[position] = self._open(out, block)
        if arguments := function.get("arguments"):
            # OpenAI sends one call after another; a late piece of an earlier call still names its block.
            out.append(_event("content_block_delta", {"index": index,
                                                      "delta": {"type": "input_json_delta", "partial_json": arguments}}))

    def _end(self, out: list[bytes]) -> None:
        if self._done:
            return
        self._done = True
        self._start(out, {})
        if self._next_index == 0:  # Anthropic's messages always have a content block
            self._open(out, {"type": "text", "text": ""})
        self._stop_block(out)
        usage = anthropic_usage(self._usage)
        delta = {"delta": {"stop_reason": self._stop_reason, "stop_sequence": None}, "usage": usage}
        out.append(_event("message_delta", delta))
        out.append(_event("message_stop", {}))


def _event(kind: str, payload: Json) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
