"""OpenAI wire shapes: chat completions, legacy completions, embeddings, models, errors.

Each ``*_prompt`` function reads a request body into a :class:`Prompt` (raising
:class:`RequestError` for bodies the real API would reject); each builder turns an
:class:`Answer` into the JSON body or the list of SSE frames OpenAI would send. Streams follow
OpenAI exactly: with ``stream_options.include_usage`` every chunk carries ``"usage": null`` and
a last chunk with ``"choices": []`` carries the usage; without it there is no usage at all.
"""

from __future__ import annotations

from typing import Any

import orjson

from heliograph.testing.content import (
    PER_TOOL_TOKENS,
    PRIMING_TOKENS,
    Answer,
    Prompt,
    RequestError,
    argument_pieces,
    embed,
    embedding_b64,
    limit_of,
    message_tokens,
    pieces,
    sse_data,
    text_of,
    tool_call_for,
    words,
)

__all__ = [
    "chat_body",
    "chat_frames",
    "chat_prompt",
    "completion_body",
    "completion_frames",
    "completion_prompt",
    "embeddings_body",
    "error_body",
    "models_body",
    "usage",
]

DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_fake"

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(status: int, message: str) -> bytes:
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


# --- chat completions -------------------------------------------------------------------------


def chat_prompt(body: dict[str, Any], default_model: str) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError("'messages' must be a non-empty array of message objects")
    tools = body.get("tools") or []
    prompt_tokens = PRIMING_TOKENS + PER_TOOL_TOKENS * len(tools)
    last_user = ""
    for message in messages:
        text = text_of(message.get("content"))
        prompt_tokens += message_tokens(text)
        if message.get("role") == "user":
            last_user = text
    tool = None
    choice = body.get("tool_choice")
    if tools and messages[-1].get("role") == "user" and choice != "none":
        chosen = tools[0]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            chosen = next((t for t in tools if (t.get("function") or {}).get("name") == wanted), chosen)
        function = chosen.get("function") or {}
        tool = tool_call_for(str(function.get("name", "tool")), function.get("parameters"))
    return Prompt(
        model=str(body.get("model") or default_model),
        last_user=last_user,
        prompt_tokens=prompt_tokens,
        tool=tool,
        limit=limit_of(body.get("max_completion_tokens", body.get("max_tokens"))),
    )


def usage(answer: Answer) -> dict[str, Any]:
    """OpenAI chat usage; a scripted cache hit larger than the prompt grows the prompt."""
    prompt = max(answer.prompt_tokens, answer.cache_read)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": prompt + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": answer.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(answer: Answer) -> str:
    if answer.tool is not None:
        return "tool_calls"
    return "length" if answer.truncated else "stop"


def chat_body(answer: Answer, request_id: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
    if answer.tool is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": f"call_{request_id}",
                "type": "function",
                "function": {"name": answer.tool.name, "arguments": answer.tool.arguments},
            }
        ]
    body: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(answer)}],
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if answer.usage:
        body["usage"] = usage(answer)
    return body


def chat_frames(answer: Answer, request_id: str, created: int, include_usage: bool) -> list[bytes]:
    with_usage = include_usage and answer.usage
    base: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": answer.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    if with_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**base, "choices": [choice]})

    frames: list[bytes] = []
    if answer.tool is not None:
        call = {
            "index": 0,
            "id": f"call_{request_id}",
            "type": "function",
            "function": {"name": answer.tool.name, "arguments": ""},
        }
        frames.append(chunk({"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}))
        frames.extend(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in argument_pieces(answer.tool.arguments)
        )
    else:
        frames.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        frames.extend(chunk({"content": piece}) for piece in pieces(answer.text))
    frames.append(chunk({}, _finish_reason(answer)))
    if with_usage:
        frames.append(sse_data({**base, "choices": [], "usage": usage(answer)}))
    frames.append(DONE)
    return frames


# --- legacy completions -----------------------------------------------------------------------


def _prompt_texts(value: Any, field: str) -> list[str]:
    """Strings, or token-id arrays rendered as one word per token so they count the same."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(f"t{v}" for v in value)]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(f"t{t}" for t in v) for v in value]
    raise RequestError(f"'{field}' must be a string, an array of strings or an array of token arrays")


def completion_prompt(body: dict[str, Any], default_model: str) -> Prompt:
    texts = _prompt_texts(body.get("prompt"), "prompt")
    return Prompt(
        model=str(body.get("model") or default_model),
        last_user=texts[-1],
        prompt_tokens=sum(map(words, texts)),
        tool=None,
        limit=limit_of(body.get("max_tokens")),
    )


def _completion_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def completion_body(answer: Answer, request_id: str, created: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": answer.model,
        "choices": [{"text": answer.text, "index": 0, "logprobs": None, "finish_reason": _finish_reason(answer)}],
        "system_fingerprint": FINGERPRINT,
    }
    if answer.usage:
        body["usage"] = _completion_usage(answer)
    return body


def completion_frames(answer: Answer, request_id: str, created: int, include_usage: bool) -> list[bytes]:
    with_usage = include_usage and answer.usage
    base: dict[str, Any] = {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": answer.model,
        "system_fingerprint": FINGERPRINT,
    }
    if with_usage:
        base["usage"] = None

    def chunk(text: str, finish_reason: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**base, "choices": [choice]})

    frames = [chunk(piece) for piece in pieces(answer.text)]
    frames.append(chunk("", _finish_reason(answer)))
    if with_usage:
        frames.append(sse_data({**base, "choices": [], "usage": _completion_usage(answer)}))
    frames.append(DONE)
    return frames


# --- embeddings and models --------------------------------------------------------------------


def embeddings_body(body: dict[str, Any], default_model: str, model_override: str | None) -> dict[str, Any]:
    texts = _prompt_texts(body.get("input"), "input")
    dims = body.get("dimensions", 256)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8192:
        raise RequestError("'dimensions' must be an integer between 1 and 8192")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestError("'encoding_format' must be 'float' or 'base64'")
    data: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        vector = embed(text, dims)
        # orjson would reject bytes, and the SDK wants a str anyway.
        embedding: Any = embedding_b64(vector).decode() if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(map(words, texts))
    return {
        "object": "list",
        "data": data,
        "model": model_override or str(body.get("model") or default_model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


MODELS = (
    ("gpt-4o-mini", "openai"),
    ("gpt-4o", "openai"),
    ("gpt-4.1-mini", "openai"),
    ("o3-mini", "openai"),
    ("gpt-5-mini", "openai"),
    ("text-embedding-3-small", "openai"),
    ("claude-haiku-4-5", "anthropic"),
    ("claude-sonnet-4-6", "anthropic"),
    ("fake-model", "heliograph"),
)
MODELS_CREATED = 1_700_000_000


def models_body(anthropic: bool) -> dict[str, Any]:
    """The model list, in Anthropic's shape when the client sent ``anthropic-version``."""
    if anthropic:
        data = [
            {"type": "model", "id": name, "display_name": name, "created_at": "2024-10-22T00:00:00Z"}
            for name, _ in MODELS
        ]
        return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": MODELS_CREATED, "owned_by": owner} for name, owner in MODELS
        ],
    }
