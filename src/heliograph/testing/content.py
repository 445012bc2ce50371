"""Deterministic content shared by every API the fake upstream speaks.

Everything here is a pure function of the request, so the same request always gets the same
answer, streamed or not. Token counts are deliberately simple so tests can predict them:

* ``words(s)`` is the number of whitespace-separated words in ``s``.
* prompt tokens = ``3 + Σ over messages (4 + words(text of the message)) + 16 × number of tools``.
  Anthropic's ``system`` and the Responses API's ``instructions`` count as one more message; a
  Responses ``input`` string is one message. Legacy completions: ``Σ words(prompt)``; embeddings:
  ``Σ words(input)``.
* completion tokens = ``words(reply text)``; a tool call adds ``4 + words(tool name and argument
  JSON, punctuation read as spaces)``. Models whose name starts with ``o1``, ``o3``, ``o4`` or
  ``gpt-5`` add 16 reasoning tokens, included in the completion tokens as OpenAI does.
* total = prompt + completion.

The reply is ``"Echo: "`` followed by the first 12 words of the last user message, padded with
``"- fake upstream reply"`` when that message has fewer than 4 words; ``max_tokens``-style limits
truncate it to that many words (finish reason ``length`` / ``max_tokens``).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from heliograph.testing.scenario import Scenario

__all__ = [
    "Answer",
    "Prompt",
    "RequestError",
    "ToolCall",
    "argument_pieces",
    "embed",
    "embedding_b64",
    "limit_of",
    "make_answer",
    "message_tokens",
    "pieces",
    "sse_data",
    "sse_event",
    "text_of",
    "tool_call_for",
    "words",
]

PRIMING_TOKENS = 3
PER_MESSAGE_TOKENS = 4
PER_TOOL_TOKENS = 16
TOOL_CALL_TOKENS = 4
REASONING_TOKENS = 16
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
REPLY_WORDS = 12
MIN_ECHO_WORDS = 4
PADDING = "- fake upstream reply"
WORDS_PER_PIECE = 2
ARGUMENT_PIECE_CHARS = 8
EMBEDDING_DIMS = 256

_PIECE_RE = re.compile(r"\s*\S+")
_JSON_PUNCTUATION = str.maketrans({c: " " for c in '{}[]",:'})


def words(text: str) -> int:
    return len(text.split())


def message_tokens(text: str) -> int:
    return PER_MESSAGE_TOKENS + words(text)


def text_of(content: Any) -> str:
    """The readable text of a message content in any of the three APIs' shapes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text for text in map(text_of, content) if text)
    if isinstance(content, dict):
        # text parts, tool results (Anthropic `content`, Responses `output`), tool inputs.
        for key in ("text", "content", "output"):
            if key in content:
                return text_of(content[key])
        for key in ("input", "arguments"):
            if key in content:
                value = content[key]
                return value if isinstance(value, str) else orjson.dumps(value).decode()
    return ""


def reply_for(last_user: str) -> str:
    echoed = last_user.split()[:REPLY_WORDS]
    reply = " ".join(["Echo:", *echoed])
    return f"{reply} {PADDING}" if len(echoed) < MIN_ECHO_WORDS else reply


def pieces(text: str) -> list[str]:
    """Split ``text`` into stream deltas of a couple of words; they concatenate back to ``text``."""
    tokens = _PIECE_RE.findall(text)
    covered = sum(map(len, tokens))
    if covered < len(text):  # trailing whitespace, or whitespace only
        tokens.append(text[covered:])
    return ["".join(tokens[i : i + WORDS_PER_PIECE]) for i in range(0, len(tokens), WORDS_PER_PIECE)]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # compact JSON, as OpenAI sends it
    input: dict[str, Any]  # the same, parsed, as Anthropic sends it


_DEFAULTS_BY_TYPE: dict[str, Any] = {
    "string": "test",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def tool_call_for(name: str, schema: Any) -> ToolCall:
    """Arguments filling the schema's required parameters with plausible fixed values."""
    arguments: dict[str, Any] = {}
    if isinstance(schema, dict):
        properties = schema.get("properties") or {}
        for param in schema.get("required") or ():
            prop = properties.get(param) or {}
            if prop.get("enum"):
                arguments[param] = prop["enum"][0]
                continue
            kind = prop.get("type", "string")
            if isinstance(kind, list):
                kind = kind[0] if kind else "string"
            arguments[param] = _DEFAULTS_BY_TYPE.get(kind, "test")
    return ToolCall(name=name, arguments=orjson.dumps(arguments).decode(), input=arguments)


def argument_pieces(arguments: str) -> list[str]:
    return [arguments[i : i + ARGUMENT_PIECE_CHARS] for i in range(0, len(arguments), ARGUMENT_PIECE_CHARS)]


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the fake model needs to know about a request, whatever API it came through."""

    model: str
    last_user: str
    prompt_tokens: int
    tool: ToolCall | None  # the tool to call, when the model should call one
    limit: int | None  # max output tokens asked for


class RequestError(ValueError):
    """The request body is not something the real API would accept (answered with a 400)."""


@dataclass(slots=True)
class Answer:
    """What the fake model says, independent of the API that will carry it."""

    model: str
    text: str
    tool: ToolCall | None
    truncated: bool
    prompt_tokens: int
    completion_tokens: int  # includes reasoning tokens
    reasoning_tokens: int
    cache_read: int
    cache_write: int
    usage: bool  # False under the `no-usage` scenario


def make_answer(prompt: Prompt, scenario: Scenario | None, *, preamble: bool = False) -> Answer:
    """Decide the reply. ``preamble`` puts a short sentence before a tool call, as Claude does."""
    model = scenario.model if scenario is not None and scenario.model else prompt.model
    tool, limit = prompt.tool, prompt.limit
    truncated = False
    if tool is not None:
        text = f"Calling {tool.name}." if preamble else ""
        call_text = f"{tool.name} {tool.arguments}".translate(_JSON_PUNCTUATION)
        completion = words(text) + TOOL_CALL_TOKENS + words(call_text)
    else:
        text = scenario.reply if scenario is not None and scenario.reply is not None else reply_for(prompt.last_user)
        if limit is not None and words(text) > limit:
            text = " ".join(text.split()[:limit])
            truncated = True
        completion = words(text)
    reasoning = REASONING_TOKENS if model.startswith(REASONING_PREFIXES) else 0
    return Answer(
        model=model,
        text=text,
        tool=tool,
        truncated=truncated,
        prompt_tokens=prompt.prompt_tokens,
        completion_tokens=completion + reasoning,
        reasoning_tokens=reasoning,
        cache_read=(scenario.cached or 0) if scenario is not None else 0,
        cache_write=(scenario.cache_write or 0) if scenario is not None else 0,
        usage=scenario is None or not scenario.no_usage,
    )


# --- embeddings -------------------------------------------------------------------------------
# Hashed bag of words: texts sharing content words point the same way, unrelated texts are
# nearly orthogonal. Stop words are dropped (unless nothing else is left) so that two unrelated
# questions do not look alike just because both say "what is the".

_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    "a about an and any are as at be but by can could do does did explain for from give had has have "
    "how i if in into is it its just know me my of on or our please s show so some tell than that the "
    "their them then there these they this those to us was we were what when where which who why will "
    "with would you your".split()
)


@lru_cache(maxsize=65_536)
def _bucket(word: str) -> int:
    # A stable hash (unlike hash()) so vectors are identical across processes and runs.
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def _stem(word: str) -> str:
    # Just enough stemming that plurals match ("cats" ~ "cat"); anything more is not needed.
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def embed(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    """A deterministic, L2-normalised hashed bag-of-words vector of ``dims`` floats."""
    tokens = _WORD_RE.findall(text.lower())
    content = [t for t in tokens if t not in _STOP_WORDS] or tokens
    vector = [0.0] * dims
    for token in content:
        bucket = _bucket(_stem(token))
        vector[bucket % dims] += 1.0 if bucket >> 63 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # no words at all: any fixed unit vector will do
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def embedding_b64(vector: list[float]) -> bytes:
    """Little-endian float32, base64-encoded: what OpenAI returns for ``encoding_format=base64``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector))


# --- wire helpers -----------------------------------------------------------------------------


def limit_of(value: Any) -> int | None:
    """A max-tokens field, or None when absent or not a non-negative integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def sse_data(obj: Any) -> bytes:
    """An OpenAI-style SSE frame: ``data:`` only."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(event: str, obj: Any) -> bytes:
    """An SSE frame with an ``event:`` line, as Anthropic and the Responses API send."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
