"""Anthropic Messages wire shapes (``POST */messages``), JSON and SSE, and prompt caching.

A tool-calling answer is a short text block followed by a ``tool_use`` block, as Claude tends
to answer, so clients see more than one content block. The stream is ``message_start`` (usage
with ``input_tokens`` and the cache fields, ``output_tokens: 1``), then per block
``content_block_start`` / ``content_block_delta`` (``text_delta`` or ``input_json_delta``) /
``content_block_stop`` with one ``ping`` after the first start, then ``message_delta``
(``stop_reason`` and the final ``usage.output_tokens``) and ``message_stop``.

Prompt caching: ``input_tokens`` excludes cache tokens, as Anthropic's does. When the request
marks blocks with ``cache_control`` (or sets it at the top level), the prefix up to the last
marked block (tools, then system, then messages, counted like the prompt) is looked up by hash:
the first request with that prefix reports it as ``cache_creation_input_tokens``, later ones as
``cache_read_input_tokens``. There is no minimum cacheable length. The scenario items
``cached=N`` / ``cache-write=N`` replace this bookkeeping with fixed numbers.

Under the ``no-usage`` scenario the ``usage`` objects are left out entirely. The anthropic SDK's
``messages.stream()`` helper then fails (it reads ``usage.output_tokens``), while
``messages.create(stream=True)`` iterates the raw events fine.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from heliograph.testing.content import (
    PER_MESSAGE_TOKENS,
    PER_TOOL_TOKENS,
    PRIMING_TOKENS,
    Answer,
    Prompt,
    RequestError,
    argument_pieces,
    limit_of,
    message_tokens,
    pieces,
    sse_event,
    text_of,
    tool_call_for,
    words,
)

__all__ = ["cache_prefix", "error_body", "message_body", "message_frames", "message_prompt"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str, request_id: str) -> bytes:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})


def message_prompt(body: dict[str, Any], *, counting: bool = False) -> Prompt:
    """Read a Messages request; ``counting`` is for ``count_tokens``, which takes no max_tokens."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError("messages: must be a non-empty list of message objects")
    if not body.get("model"):
        raise RequestError("model: Field required")
    limit = limit_of(body.get("max_tokens"))
    if limit is None and not counting:
        raise RequestError("max_tokens: Field required")
    tools = body.get("tools") or []
    prompt_tokens = PRIMING_TOKENS + PER_TOOL_TOKENS * len(tools)
    system = body.get("system")
    if system:
        prompt_tokens += message_tokens(text_of(system))
    last_user = ""
    for message in messages:
        text = text_of(message.get("content"))
        prompt_tokens += message_tokens(text)
        if message.get("role") == "user":
            last_user = text
    last = messages[-1]
    # A user turn carrying tool results is the end of a tool round-trip: answer in text then,
    # or an agent loop driven by the fake would never finish.
    content = last.get("content")
    has_results = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    choice = body.get("tool_choice") or {}
    tool = None
    custom = [t for t in tools if isinstance(t, dict) and "input_schema" in t]
    if custom and last.get("role") == "user" and not has_results and choice.get("type") != "none":
        chosen = custom[0]
        if choice.get("type") == "tool":
            chosen = next((t for t in custom if t.get("name") == choice.get("name")), chosen)
        tool = tool_call_for(str(chosen.get("name", "tool")), chosen.get("input_schema"))
    return Prompt(
        model=str(body["model"]), last_user=last_user, prompt_tokens=prompt_tokens, tool=tool, limit=limit
    )


def cache_prefix(body: dict[str, Any]) -> tuple[bytes, int] | None:
    """(hash, tokens) of the prompt prefix up to the last ``cache_control`` mark, if any."""
    digest = hashlib.blake2b(str(body.get("model")).encode(), digest_size=16)
    tokens = PRIMING_TOKENS
    marked: tuple[bytes, int] | None = None

    def add(block: Any, block_tokens: int) -> None:
        nonlocal tokens, marked
        tokens += block_tokens
        digest.update(orjson.dumps(block, option=orjson.OPT_SORT_KEYS))
        if isinstance(block, dict) and block.get("cache_control"):
            marked = (digest.digest(), tokens)

    for tool in body.get("tools") or ():
        add(tool, PER_TOOL_TOKENS)
    turns: list[tuple[str, Any]] = [("system", body["system"])] if body.get("system") else []
    turns += [(str(m.get("role")), m.get("content")) for m in body.get("messages") or ()]
    for role, content in turns:
        tokens += PER_MESSAGE_TOKENS
        digest.update(role.encode())
        for block in content if isinstance(content, list) else [content]:
            add(block, words(text_of(block)))
    if body.get("cache_control"):  # automatic caching: everything so far
        marked = (digest.digest(), tokens)
    return marked


def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": max(answer.prompt_tokens - answer.cache_read - answer.cache_write, 0),
        "cache_creation_input_tokens": answer.cache_write,
        "cache_read_input_tokens": answer.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": answer.cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _stop_reason(answer: Answer) -> str:
    if answer.tool is not None:
        return "tool_use"
    return "max_tokens" if answer.truncated else "end_turn"


def _message(answer: Answer, request_id: str, content: list[Any], stop_reason: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    if answer.usage:
        # message_start reports one output token so far, as Anthropic does.
        message["usage"] = _usage(answer, answer.completion_tokens if stop_reason else 1)
    return message


def message_body(answer: Answer, request_id: str) -> dict[str, Any]:
    content: list[Any] = []
    if answer.text or answer.tool is None:
        content.append({"type": "text", "text": answer.text})
    if answer.tool is not None:
        content.append(
            {"type": "tool_use", "id": f"toolu_{request_id}", "name": answer.tool.name, "input": answer.tool.input}
        )
    return _message(answer, request_id, content, _stop_reason(answer))


def message_frames(answer: Answer, request_id: str) -> list[bytes]:
    frames = [sse_event("message_start", {"type": "message_start", "message": _message(answer, request_id, [], None)})]

    def emit(event_type: str, payload: dict[str, Any]) -> None:
        frames.append(sse_event(event_type, {"type": event_type, **payload}))

    index = 0
    if answer.text or answer.tool is None:
        emit("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
        emit("ping", {})
        for piece in pieces(answer.text):
            emit("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        emit("content_block_stop", {"index": index})
        index += 1
    if answer.tool is not None:
        block = {"type": "tool_use", "id": f"toolu_{request_id}", "name": answer.tool.name, "input": {}}
        emit("content_block_start", {"index": index, "content_block": block})
        if index == 0:
            emit("ping", {})
        # Anthropic opens every tool input with an empty fragment; clients must cope with it.
        for piece in ["", *argument_pieces(answer.tool.arguments)]:
            emit("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})
        emit("content_block_stop", {"index": index})
    delta: dict[str, Any] = {"delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None}}
    if answer.usage:
        delta["usage"] = {"output_tokens": answer.completion_tokens}
    emit("message_delta", delta)
    emit("message_stop", {})
    return frames
