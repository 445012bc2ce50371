"""OpenAI chat completions ↔ Anthropic Messages, for fallbacks that cross provider families.

A `Helicone-Fallback` alternative on the other family means sending the client's request in the
other API's shape and turning the answer back into exactly what the client's SDK parses. All of
this is pure (dicts and bytes in, dicts and bytes out). This module is the public surface: it
holds the request and whole-answer translations and re-exports :mod:`.translate_stream`, which
translates streams event by event and holds what all answers share (stop reasons, usage, ids,
error bodies).

What maps, both ways::

    system / developer messages (leading)   system
    user and assistant text, text parts     text blocks; consecutive same-role turns merged
    image_url: data: URL / http(s) URL      image: base64 source / url source
    file part with inline PDF data          document: base64 PDF source
    assistant tool_calls (JSON arguments)   tool_use blocks (input object)
    tool messages                           tool_result blocks at the head of one user turn
    tools (function parameters, strict)     tools (input_schema, strict)
    tool_choice auto/none/required/named    tool_choice auto/none/any/tool
    parallel_tool_calls: false              disable_parallel_tool_use: true
    max_completion_tokens or max_tokens     max_tokens (DEFAULT_MAX_TOKENS when absent)
    temperature (0–1), top_p, stop          temperature, top_p, stop_sequences
    response_format json_schema             output_config.format json_schema
    safety_identifier or user               metadata.user_id
    finish_reason                           stop_reason (see _FINISH_REASON / _STOP_REASON)
    usage prompt_tokens with cached_tokens  input_tokens + cache_read_input_tokens
      and cache_write_tokens                  + cache_creation_input_tokens

Refused with :class:`TranslationError` (the gateway answers 400 naming the feature): whatever would
change what the model is asked or what the client gets back without anyone noticing. That is
`n` > 1, audio in or out, logprobs, json_object mode, penalties and logit_bias, `verbosity`,
legacy `functions`, web search, moderation, custom and server tools, top_k, temperature above 1,
`inference_geo`, document and image sources other than inline data or URLs, a system message in
mid-conversation, a conversation ending on an assistant turn (Anthropic would continue it as a
prefill; OpenAI answers it with a new turn), and every parameter not named in this docstring.
Reasoning controls (`reasoning_effort`, `thinking`, `output_config.effort`) are
refused too rather than dropped: the two families budget reasoning differently, a model on one
side may not support the other's setting at all, and Anthropic's thinking blocks carry signatures
no OpenAI answer can supply — a silent downgrade would make the fallback answer a different
question. "Off" values (`reasoning_effort: none`, `thinking: disabled`) pass.

Dropped because they change neither the prompt nor the answer: `seed`, `store`, `metadata` and
`service_tier` (OpenAI's), prompt-cache hints (`cache_control`, `prompt_cache_*`), `prediction`,
`stream_options` (the stream translators are told about usage directly), image `detail`, message
`name`, tool-result `is_error` (the error text itself still reaches the model), earlier thinking
blocks (providers strip those from past turns anyway), Anthropic's `speed`, `diagnostics`,
`user_profile_id` and `workspace_id`. Temperature and top_p pass through as given: newer Claude
models reject them, and that upstream 400 is clearer than a silently ignored setting.

Answers: the response keeps the upstream's id (prefixed `chatcmpl-` / `msg_` when it lacks it)
and the upstream's `model`, so the record shows which alternative answered. A response that
cannot be expressed (an OpenAI tool call whose arguments are not a JSON object, no choices) also
raises TranslationError; after a successful upstream call the gateway should answer that with 502.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import orjson

from heliograph.proxy.translate_stream import (
    AnthropicToOpenAIStream,
    Json,
    OpenAIToAnthropicStream,
    anthropic_error_to_openai,
    anthropic_stop_reason,
    anthropic_usage,
    openai_error_to_anthropic,
    openai_finish_reason,
    openai_usage,
    prefixed_id,
    tool_use_id,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_stop_reason",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "anthropic_usage",
    "openai_error_to_anthropic",
    "openai_finish_reason",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "openai_usage",
    "prefixed_id",
    "tool_use_id",
]

DEFAULT_MAX_TOKENS = 4096


class TranslationError(ValueError):
    """The request or answer uses something the other API can't express faithfully."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _malformed_is_refused(translate: Callable[_P, _R]) -> Callable[_P, _R]:
    """Bodies come from clients and upstreams: a shape nobody checked for is a refusal, not a crash."""

    @wraps(translate)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return translate(*args, **kwargs)
        except (AttributeError, TypeError, KeyError) as exc:
            raise TranslationError(f"a body with an unexpected shape can't be translated ({exc})") from exc

    return guarded


# --- requests: OpenAI chat completions → Anthropic Messages ------------------------------------

_NO_ANTHROPIC = "has no Anthropic equivalent"
_REASONING = "reasoning controls differ between providers; remove it or use a fallback of the same provider"

# Parameters accepted only with a harmless value: name → (harmless?, why the rest is refused).
_OPENAI_ONLY_IF: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v == 1, "n > 1: Anthropic returns one answer per request"),
    "modalities": (lambda v: v == ["text"], "output modalities other than text"),
    "audio": (lambda v: False, f"audio output {_NO_ANTHROPIC}"),
    "logprobs": (lambda v: v is False, f"logprobs {_NO_ANTHROPIC}"),
    "top_logprobs": (lambda v: False, f"top_logprobs {_NO_ANTHROPIC}"),
    "frequency_penalty": (lambda v: v == 0, f"frequency_penalty {_NO_ANTHROPIC}"),
    "presence_penalty": (lambda v: v == 0, f"presence_penalty {_NO_ANTHROPIC}"),
    "logit_bias": (lambda v: not v, f"logit_bias {_NO_ANTHROPIC}"),
    "reasoning_effort": (lambda v: v == "none", f"reasoning_effort: {_REASONING}"),
    "verbosity": (lambda v: v == "medium", f"verbosity {_NO_ANTHROPIC}"),
    "functions": (lambda v: False, "legacy functions: send them as tools"),
    "function_call": (lambda v: False, "legacy function_call: use tool_choice"),
    "web_search_options": (lambda v: False, f"web_search_options {_NO_ANTHROPIC}"),
    "moderation": (lambda v: False, f"moderation {_NO_ANTHROPIC}"),
}
_OPENAI_DROPPED = frozenset({
    "model", "seed", "store", "metadata", "service_tier", "prediction", "stream_options",
    "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
})
_OPENAI_MAPPED = frozenset({
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "user", "safety_identifier",
})

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


@_malformed_is_refused
def openai_to_anthropic_request(body: Json, model: str) -> Json:
    """A chat.completions request body as a Messages request body for `model`."""
    for key, value in body.items():
        if value is None or key in _OPENAI_MAPPED or key in _OPENAI_DROPPED:
            continue
        harmless, why = _OPENAI_ONLY_IF.get(key, (lambda v: False, f"'{key}' {_NO_ANTHROPIC}"))
        if not harmless(value):
            raise TranslationError(why)
    system, messages = _anthropic_turns(body.get("messages"))
    out: Json = {"model": model, "messages": messages}
    if system:
        out["system"] = system
    limit = _first(body, "max_completion_tokens", "max_tokens")
    out["max_tokens"] = limit if limit is not None else DEFAULT_MAX_TOKENS
    if (temperature := body.get("temperature")) is not None:
        if not isinstance(temperature, (int, float)) or temperature > 1:
            raise TranslationError("temperature above 1: Anthropic's range is 0 to 1")
        out["temperature"] = temperature
    if (top_p := body.get("top_p")) is not None:
        out["top_p"] = top_p
    if stop := body.get("stop"):
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if tools := body.get("tools"):
        out["tools"] = [_anthropic_tool(tool) for tool in tools]
        choice = _anthropic_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if (fmt := _anthropic_format(body.get("response_format"))) is not None:
        out["output_config"] = {"format": fmt}
    if (user := _first(body, "safety_identifier", "user")) is not None:
        out["metadata"] = {"user_id": user}
    return out


def _anthropic_turns(messages: Any) -> tuple[list[Json], list[Json]]:
    """(system blocks, alternating turns) from OpenAI messages."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("'messages' must be a non-empty list")
    system: list[Json] = []
    turns: list[Json] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            if turns:
                raise TranslationError(f"{where}: a {role} message after the conversation started; "
                                       "Anthropic takes system instructions only before it")
            system.extend(_anthropic_text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _anthropic_user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _anthropic_assistant_blocks(message, where)
            role = "assistant"
        elif role == "tool":
            blocks, role = [_anthropic_tool_result(message, where)], "user"
        else:
            raise TranslationError(f"{where}: role {role!r} {_NO_ANTHROPIC}")
        if not blocks:
            continue  # Anthropic rejects empty turns; OpenAI ignores them
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise TranslationError("'messages' has no user or assistant content")
    if turns[-1]["role"] == "assistant":
        raise TranslationError("a conversation ending with an assistant message: Anthropic would "
                               "continue that message instead of answering it")
    for turn in turns:  # Anthropic wants tool results first in a user turn
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _anthropic_text_blocks(content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}: content must be a string or a list of parts")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal"):
            raise TranslationError(f"{where}: content part {kind!r} is not allowed here")
        if text := part.get(kind):
            blocks.append({"type": "text", "text": text})
    return blocks


def _anthropic_user_blocks(content: Any, where: str) -> list[Json]:
    if not isinstance(content, list):
        return _anthropic_text_blocks(content, where)
    blocks: list[Json] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.extend(_anthropic_text_blocks([part], where))
        elif kind == "image_url":
            blocks.append(_anthropic_image(part.get("image_url"), where))
        elif kind == "file":
            blocks.append(_anthropic_document(part.get("file"), where))
        else:
            raise TranslationError(f"{where}: content part {kind!r} {_NO_ANTHROPIC}")
    return blocks


def _anthropic_image(image: Any, where: str) -> Json:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise TranslationError(f"{where}: image_url without a url")
    if match := _DATA_URL.fullmatch(url):
        if match["type"] not in _IMAGE_TYPES:
            raise TranslationError(f"{where}: image type {match['type']} is not supported by Anthropic")
        return {"type": "image", "source": {"type": "base64", "media_type": match["type"], "data": match["data"]}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{where}: image URLs must be data: URLs or http(s) URLs")


def _anthropic_document(file: Any, where: str) -> Json:
    data = file.get("file_data") if isinstance(file, dict) else None
    match = _DATA_URL.fullmatch(data) if isinstance(data, str) else None
    if match is None or match["type"] != "application/pdf":
        raise TranslationError(f"{where}: file parts other than inline PDF data (file_data) {_NO_ANTHROPIC}")
    block: Json = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                  "data": match["data"]}}
    if isinstance(file, dict) and file.get("filename"):
        block["title"] = file["filename"]
    return block


def _anthropic_assistant_blocks(message: Json, where: str) -> list[Json]:
    for key in ("audio", "function_call"):
        if message.get(key):
            raise TranslationError(f"{where}: assistant {key} {_NO_ANTHROPIC}")
    blocks = _anthropic_text_blocks(message.get("content") or "", where)
    if message.get("refusal") and not blocks:
        blocks.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise TranslationError(f"{where}: custom tool calls {_NO_ANTHROPIC}")
        arguments = _json_object(function.get("arguments") or "{}")
        if arguments is None:
            raise TranslationError(f"{where}: tool call arguments that are not a JSON object")
        blocks.append({"type": "tool_use", "id": tool_use_id(call.get("id")),
                       "name": function.get("name"), "input": arguments})
    return blocks


def _anthropic_tool_result(message: Json, where: str) -> Json:
    block: Json = {"type": "tool_result", "tool_use_id": tool_use_id(message.get("tool_call_id"))}
    content = message.get("content")
    if isinstance(content, list):
        if texts := _anthropic_text_blocks(content, where):
            block["content"] = texts
    elif content:
        block["content"] = str(content)
    return block


def _anthropic_tool(tool: Any) -> Json:
    kind = tool.get("type") if isinstance(tool, dict) else None
    function = tool.get("function") if isinstance(tool, dict) else None
    if kind != "function" or not isinstance(function, dict):
        raise TranslationError(f"tools: a {kind!r} tool {_NO_ANTHROPIC}; only function tools translate")
    out: Json = {"name": function.get("name"),
                 "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if isinstance(function.get("strict"), bool):
        out["strict"] = function["strict"]
    return out


def _anthropic_tool_choice(choice: Any, parallel: Any) -> Json | None:
    if choice is None:
        out: Json | None = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "none"):
        out = {"type": choice}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        kind = choice.get("type") if isinstance(choice, dict) else choice
        raise TranslationError(f"tool_choice {kind!r} {_NO_ANTHROPIC}")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _anthropic_format(response_format: Any) -> Json | None:
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind in (None, "text"):
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if not isinstance(schema, dict):
        # json_object promises "some JSON object"; Anthropic only constrains to a given schema.
        raise TranslationError(f"response_format {kind!r} {_NO_ANTHROPIC} (json_schema with a schema maps)")
    return {"type": "json_schema", "schema": schema}


# --- requests: Anthropic Messages → OpenAI chat completions ------------------------------------

_NO_OPENAI = "has no OpenAI equivalent"

_ANTHROPIC_ONLY_IF: dict[str, tuple[Callable[[Any], bool], str]] = {
    "thinking": (lambda v: isinstance(v, dict) and v.get("type") == "disabled", f"thinking: {_REASONING}"),
    "top_k": (lambda v: False, f"top_k {_NO_OPENAI}"),
    "inference_geo": (lambda v: False, "inference_geo: another provider can't honour the region"),
}
_ANTHROPIC_DROPPED = frozenset({
    "model", "service_tier", "cache_control", "speed", "diagnostics", "user_profile_id", "workspace_id",
})
_ANTHROPIC_MAPPED = frozenset({
    "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences", "stream",
    "tools", "tool_choice", "metadata", "output_config",
})
_TOOL_KEYS = frozenset({"type", "name", "description", "input_schema", "strict", "cache_control",
                        "eager_input_streaming"})


@_malformed_is_refused
def anthropic_to_openai_request(body: Json, model: str) -> Json:
    """A Messages request body as a chat.completions request body for `model`."""
    for key, value in body.items():
        if value is None or key in _ANTHROPIC_MAPPED or key in _ANTHROPIC_DROPPED:
            continue
        harmless, why = _ANTHROPIC_ONLY_IF.get(key, (lambda v: False, f"'{key}' {_NO_OPENAI}"))
        if not harmless(value):
            raise TranslationError(why)
    messages = _openai_system(body.get("system")) + _openai_messages(body.get("messages"))
    out: Json = {"model": model, "messages": messages}
    # max_completion_tokens, not the deprecated max_tokens that OpenAI's reasoning models reject.
    if body.get("max_tokens") is not None:
        out["max_completion_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        # Anthropic clients always get usage, so it must be asked for.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if tools := body.get("tools"):
        out["tools"] = [_openai_tool(tool) for tool in tools]
        out.update(_openai_tool_choice(body.get("tool_choice")))
    if (config := body.get("output_config")) is not None:
        out.update(_openai_format(config))
    if user := (body.get("metadata") or {}).get("user_id"):
        out["user"] = user
    return out


def _openai_system(system: Any) -> list[Json]:
    if not system:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [{"role": "system", "content": _openai_text(_openai_parts(system, "system"))}]


def _openai_messages(messages: Any) -> list[Json]:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("'messages' must be a non-empty list")
    out: list[Json] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise TranslationError(f"{where}: content must be a string or a list of blocks")
        if role == "user":
            # OpenAI wants each tool result as its own message, right after the assistant's calls.
            rest = []
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(_openai_tool_message(block, where))
                else:
                    rest.append(block)
            if parts := _openai_parts(rest, where):
                out.append({"role": "user", "content": _openai_text(parts)})
        elif role == "assistant":
            out.append(_openai_assistant(blocks, where))
        else:
            raise TranslationError(f"{where}: role {role!r} {_NO_OPENAI}")
    if messages[-1].get("role") == "assistant":
        raise TranslationError("a conversation ending with an assistant message (a prefill) "
                               f"{_NO_OPENAI}")
    return out


def _openai_parts(blocks: Any, where: str) -> list[Json]:
    if not isinstance(blocks, list):
        raise TranslationError(f"{where}: content must be a string or a list of blocks")
    parts: list[Json] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        source = _dict(block.get("source")) if isinstance(block, dict) else {}
        source_type = source.get("type")
        if kind == "text":
            if block.get("text"):
                parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and source_type in ("base64", "url"):
            url = source["url"] if source_type == "url" else f"data:{source.get('media_type')};base64,{source.get('data')}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document" and source_type == "base64" and source.get("media_type") == "application/pdf":
            parts.append({"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                                   "file_data": f"data:application/pdf;base64,{source.get('data')}"}})
        else:
            what = f"{kind} block with a {source_type} source" if source_type else f"{kind!r} block"
            raise TranslationError(f"{where}: {what} {_NO_OPENAI}")
    return parts


def _openai_text(parts: list[Json]) -> str | list[Json]:
    """A lone text part as a plain string, which every OpenAI-compatible server accepts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _openai_tool_message(result: Json, where: str) -> Json:
    content = result.get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    parts = _openai_parts(blocks, where)
    if any(part["type"] != "text" for part in parts):
        raise TranslationError(f"{where}: tool results with images or documents {_NO_OPENAI}")
    return {"role": "tool", "tool_call_id": result.get("tool_use_id"), "content": _openai_text(parts) if parts else ""}


def _openai_assistant(blocks: list[Any], where: str) -> Json:
    texts: list[Json] = []
    calls: list[Json] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.extend(_openai_parts([block], where))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise TranslationError(f"{where}: assistant {kind!r} block {_NO_OPENAI}")
    message: Json = {"role": "assistant", "content": _openai_text(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _openai_tool(tool: Any) -> Json:
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise TranslationError(f"tools: server tool {kind!r} {_NO_OPENAI}")
    if unknown := sorted(set(tool) - _TOOL_KEYS):
        raise TranslationError(f"tools: {', '.join(unknown)} {_NO_OPENAI}")
    function: Json = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _openai_tool_choice(choice: Any) -> Json:
    if choice is None:
        return {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    out: Json = {}
    if kind in ("auto", "none"):
        out["tool_choice"] = kind
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise TranslationError(f"tool_choice {kind!r} {_NO_OPENAI}")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def _openai_format(config: Any) -> Json:
    if not isinstance(config, dict):
        raise TranslationError("output_config must be an object")
    for key, value in config.items():
        if value is not None and key != "format":
            raise TranslationError(f"output_config.{key}: {_REASONING}" if key == "effort"
                                   else f"output_config.{key} {_NO_OPENAI}")
    fmt = config.get("format")
    if fmt is None:
        return {}
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise TranslationError(f"output_config.format {_NO_OPENAI} unless it is a json_schema with a schema")
    # Anthropic's format is a guarantee, which is what OpenAI's strict mode gives.
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "response", "schema": fmt["schema"], "strict": True}}}


# --- whole answers --------------------------------------------------------------------------


@_malformed_is_refused
def anthropic_to_openai_response(body: bytes, request_model: str, *, created: int | None = None) -> bytes:
    """A Message as a ChatCompletion; `model` is the one that answered."""
    message = _load(body, "Anthropic message")
    text, calls = [], []
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        # thinking blocks only come back when thinking was asked for, which is refused.
    reply: Json = {"role": "assistant", "content": "".join(text) if text or not calls else None,
                   "refusal": None, "annotations": []}
    if calls:
        reply["tool_calls"] = calls
    out: Json = {
        "id": prefixed_id(message.get("id"), "chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model") or request_model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": openai_finish_reason(message.get("stop_reason"))}],
    }
    if isinstance(usage := message.get("usage"), dict):
        out["usage"] = openai_usage(usage)
    return orjson.dumps(out)


@_malformed_is_refused
def openai_to_anthropic_response(body: bytes, request_model: str) -> bytes:
    """A ChatCompletion's first choice as a Message; `model` is the one that answered."""
    completion = _load(body, "OpenAI chat completion")
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None:
        raise TranslationError("the OpenAI-style answer has no choices")
    reply = choice.get("message") or {}
    content: list[Json] = []
    text = reply.get("content")
    if isinstance(text, list):  # some OpenAI-compatible servers answer with parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    text = (text or "") + (reply.get("refusal") or "")
    calls = reply.get("tool_calls") or []
    if text or not calls:
        content.append({"type": "text", "text": text})
    for call in calls:
        function = call.get("function") or {}
        arguments = _json_object(function.get("arguments") or "{}")
        if arguments is None:
            raise TranslationError("the OpenAI-style answer has tool call arguments that are not a JSON object")
        content.append({"type": "tool_use", "id": tool_use_id(call.get("id")),
                        "name": function.get("name"), "input": arguments})
    return orjson.dumps({
        "id": prefixed_id(completion.get("id"), "msg_"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or request_model,
        "content": content,
        "stop_reason": anthropic_stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,  # OpenAI doesn't say which stop sequence matched
        "usage": anthropic_usage(completion.get("usage")),
    })


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _first(body: Json, *keys: str) -> Any:
    return next((body[key] for key in keys if body.get(key) is not None), None)


def _json_object(text: Any) -> Json | None:
    try:
        value = orjson.loads(text) if isinstance(text, (str, bytes)) else text
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _load(body: bytes, what: str) -> Json:
    value = _json_object(body)
    if value is None:
        raise TranslationError(f"the upstream answer is not a JSON {what}")
    return value
