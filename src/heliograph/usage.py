"""Normalised token usage read from a finished call's response body.

Runs in the recorder, off the hot path: it gets the whole body at once (for streams, the raw SSE
text as received, possibly cut off mid-event) and must never raise on whatever upstream sent.

Token rules (helicone-contract §10.2, DESIGN §2 "A record"): `Usage.input_tokens` counts *all*
input tokens including cache reads and writes and `output_tokens` *all* output including reasoning,
which is what genai-prices prices; the Helicone columns `prompt_tokens` / `completion_tokens` are
derived from them with the cached and reasoning parts taken out, clamped at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
from sseclient import SSEClient

__all__ = ["Usage", "extract_usage", "sse_json"]

_Obj = dict[str, object]


@dataclass(slots=True)
class Usage:
    """What one call consumed, as the provider reported it (None = not reported)."""

    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def prompt_tokens(self) -> int | None:
        """Helicone's `prompt_tokens`: input without cache reads and writes."""
        if self.input_tokens is None:
            return None
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)

    @property
    def completion_tokens(self) -> int | None:
        """Helicone's `completion_tokens`: output without reasoning."""
        if self.output_tokens is None:
            return None
        return max(0, self.output_tokens - self.reasoning_tokens)

    @property
    def has_usage(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


def extract_usage(family: str, path: str, body: bytes, *, streamed: bool) -> Usage:
    """Usage from a response body of API `family` ("openai" or "anthropic").

    `path` is the upstream request path; only its suffix matters (embeddings produce no output).
    An unknown family, an error body or garbage gives `Usage()` or whatever could be read.
    """
    if family == "anthropic":
        return _anthropic_stream(body) if streamed else _anthropic_json(body)
    if family == "openai":
        embeddings = path.rstrip("/").endswith("/embeddings")
        return _openai_stream(body) if streamed else _openai_json(body, embeddings=embeddings)
    return Usage()


# --- OpenAI and OpenAI-compatible APIs (chat/completions, completions, embeddings, responses) ---


def _openai_json(body: bytes, *, embeddings: bool) -> Usage:
    out = Usage()
    response = _loads(body)
    if response is None:
        return out
    out.model = _str(response.get("model"))
    if isinstance(choices := response.get("choices"), list) and choices:
        if (first := _obj(choices[0])) is not None:
            out.finish_reason = _str(first.get("finish_reason"))
    elif response.get("object") == "response":
        out.finish_reason = _responses_finish_reason(response)
    if response.get("usage") is None:
        _apply_other_usage(out, response)
    else:
        _apply_openai_usage(out, response.get("usage"), embeddings=embeddings)
    return out


def _apply_other_usage(out: Usage, response: _Obj) -> None:
    """Shapes Helicone's async logger also reads (contract §9.1): Google's native `usageMetadata`
    and Bedrock/Llama's top-level `prompt_token_count` / `generation_token_count`."""
    if (meta := _obj(response.get("usageMetadata"))) is not None:
        # Gemini: the prompt count includes cached content; candidates exclude thinking tokens.
        thoughts = _int(meta.get("thoughtsTokenCount")) or 0
        candidates = _int(meta.get("candidatesTokenCount"))
        out.model = out.model or _str(response.get("modelVersion"))
        out.input_tokens = _int(meta.get("promptTokenCount"))
        out.output_tokens = None if candidates is None and not thoughts else (candidates or 0) + thoughts
        out.cache_read_tokens = _int(meta.get("cachedContentTokenCount")) or 0
        out.reasoning_tokens = thoughts
        out.total_tokens = _int(meta.get("totalTokenCount")) or _sum(out.input_tokens, out.output_tokens)
    elif "prompt_token_count" in response or "generation_token_count" in response:
        out.input_tokens = _int(response.get("prompt_token_count"))
        out.output_tokens = _int(response.get("generation_token_count"))
        out.total_tokens = _sum(out.input_tokens, out.output_tokens)


# Only these Responses API events carry the final status; `response.created` says "in_progress".
_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _openai_stream(body: bytes) -> Usage:
    out = Usage()
    usage: object = None
    groq_usage: object = None
    for event in sse_json(body, skip=_is_responses_delta):
        kind = event.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            # Responses API: every lifecycle event wraps the response object so far.
            if (response := _obj(event.get("response"))) is None:
                continue
            out.model = _str(response.get("model")) or out.model
            if response.get("usage") is not None:
                usage = response["usage"]
            if kind in _RESPONSES_TERMINAL:
                out.finish_reason = _responses_finish_reason(response)
            continue
        # Chat / legacy completion chunk. Azure's first chunk has model "" (content filter only).
        out.model = _str(event.get("model")) or out.model
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if (c := _obj(choice)) is not None and (reason := _str(c.get("finish_reason"))):
                out.finish_reason = reason
        if event.get("usage") is not None:
            usage = event["usage"]
        # Groq reports stream usage in `x_groq.usage` on the last chunk.
        if (x_groq := _obj(event.get("x_groq"))) is not None and x_groq.get("usage") is not None:
            groq_usage = x_groq["usage"]
    _apply_openai_usage(out, usage if usage is not None else groq_usage, embeddings=False)
    return out


def _is_responses_delta(name: str) -> bool:
    # Text deltas are most of a Responses stream and never carry usage: skip their JSON.
    return name.startswith("response.") and name.endswith(".delta")


def _responses_finish_reason(response: _Obj) -> str | None:
    details = _obj(response.get("incomplete_details")) or {}
    return _str(details.get("reason")) or _str(response.get("status"))


def _apply_openai_usage(out: Usage, raw: object, *, embeddings: bool) -> None:
    """Fill `out` from an OpenAI-style `usage` object (chat or Responses spelling)."""
    usage = _obj(raw)
    if usage is None:
        return
    input_tokens = _first_int(usage, "prompt_tokens", "input_tokens")
    output_tokens = _first_int(usage, "completion_tokens", "output_tokens")
    total = _int(usage.get("total_tokens"))
    if input_tokens is None and output_tokens is None and total is None:
        return
    if embeddings and output_tokens is None:
        output_tokens = 0
    in_details = (
        _obj(usage.get("prompt_tokens_details")) or _obj(usage.get("input_tokens_details")) or {}
    )
    out_details = (
        _obj(usage.get("completion_tokens_details"))
        or _obj(usage.get("output_tokens_details"))
        or {}
    )
    # DeepSeek names its cache hits at the top level; Together uses a bare `cached_tokens`.
    cache_read = (
        _int(in_details.get("cached_tokens"))
        or _int(usage.get("prompt_cache_hit_tokens"))
        or _int(usage.get("cached_tokens"))
        or 0
    )
    cache_write = _int(in_details.get("cache_write_tokens")) or 0
    reasoning = _int(out_details.get("reasoning_tokens")) or 0

    # Helicone's rule: a cached count above the prompt count means the prompt already excludes it.
    if input_tokens is not None and cache_read + cache_write > input_tokens:
        input_tokens += cache_read + cache_write
    # Same reasoning for output: more reasoning than completion means it was left out (xAI).
    if output_tokens is not None and reasoning > output_tokens:
        output_tokens += reasoning
    # Gemini's and xAI's OpenAI-compatible usage leaves thinking tokens out of completion_tokens
    # and only total_tokens counts them; they are billed as output, so take the difference.
    if total is not None and input_tokens is not None and output_tokens is not None:
        missing = total - input_tokens - output_tokens
        if missing > 0:
            output_tokens += missing
            reasoning = max(reasoning, missing)

    out.input_tokens = input_tokens
    out.output_tokens = output_tokens
    out.cache_read_tokens = cache_read
    out.cache_write_tokens = cache_write
    out.reasoning_tokens = reasoning
    out.total_tokens = total if total is not None else _sum(input_tokens, output_tokens)


# --- Anthropic Messages ---


def _anthropic_json(body: bytes) -> Usage:
    out = Usage()
    message = _loads(body)
    if message is None:
        return out
    out.model = _str(message.get("model"))
    out.finish_reason = _str(message.get("stop_reason"))
    counts = _AnthropicCounts()
    counts.update(message.get("usage"))
    counts.apply(out)
    return out


# Content deltas are most of an Anthropic stream and never carry usage: skip their JSON.
_ANTHROPIC_NO_USAGE = frozenset(
    {"content_block_start", "content_block_delta", "content_block_stop", "ping"}
)


def _anthropic_stream(body: bytes) -> Usage:
    out = Usage()
    counts = _AnthropicCounts()
    for event in sse_json(body, skip=_ANTHROPIC_NO_USAGE.__contains__):
        kind = event.get("type")
        if kind == "message_start" and (message := _obj(event.get("message"))) is not None:
            out.model = _str(message.get("model"))
            counts.update(message.get("usage"))
        elif kind == "message_delta":
            # Cumulative counts: output always, input/cache ones too on newer API versions.
            counts.update(event.get("usage"))
            if (delta := _obj(event.get("delta"))) is not None:
                out.finish_reason = _str(delta.get("stop_reason")) or out.finish_reason
    counts.apply(out)
    return out


@dataclass(slots=True)
class _AnthropicCounts:
    """Anthropic's own fields, merged across events: a later reported value wins."""

    input: int | None = None
    cache_write: int | None = None
    cache_read: int | None = None
    output: int | None = None

    def update(self, raw: object) -> None:
        if (usage := _obj(raw)) is None:
            return
        self.input = _or(_int(usage.get("input_tokens")), self.input)
        self.cache_write = _or(_int(usage.get("cache_creation_input_tokens")), self.cache_write)
        self.cache_read = _or(_int(usage.get("cache_read_input_tokens")), self.cache_read)
        self.output = _or(_int(usage.get("output_tokens")), self.output)

    def apply(self, out: Usage) -> None:
        if self.input is None and self.output is None:
            return
        cache_write, cache_read = self.cache_write or 0, self.cache_read or 0
        # Anthropic's input_tokens excludes cache reads and writes; ours counts all input.
        if self.input is not None:
            out.input_tokens = self.input + cache_write + cache_read
        out.output_tokens = self.output
        out.cache_write_tokens = cache_write
        out.cache_read_tokens = cache_read
        out.total_tokens = _sum(out.input_tokens, out.output_tokens)


# --- parsing helpers: tolerate any JSON shape, never raise ---


def sse_json(body: bytes, *, skip: Callable[[str], bool] | None = None) -> Iterator[_Obj]:
    """The JSON-object payloads of an SSE body, in order, except events whose name `skip`s.

    Shared with recording/assemble.py, which rebuilds the whole answer from the same events.

    sseclient-py does the framing (\\n\\n, \\r\\n\\r\\n, comments, multi-line data); a trailing
    event cut off mid-way comes out as invalid JSON and is dropped.
    """
    try:
        body.decode()
    except UnicodeDecodeError:
        # sseclient decodes strictly; a stream cut inside a multi-byte character must not raise.
        body = body.decode(errors="replace").encode()
    for event in SSEClient(iter((body,))).events():
        if (skip is not None and skip(event.event)) or event.data == "[DONE]":
            continue
        if (payload := _loads(event.data)) is not None:
            yield payload


def _loads(text: bytes | str) -> _Obj | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return _obj(value)


def _obj(value: object) -> _Obj | None:
    return value if isinstance(value, dict) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    # bool is an int subclass; negative counts are nonsense. Both are treated as absent.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _first_int(obj: _Obj, *keys: str) -> int | None:
    for key in keys:
        if (value := _int(obj.get(key))) is not None:
            return value
    return None


def _or(value: int | None, default: int | None) -> int | None:
    return default if value is None else value


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)
