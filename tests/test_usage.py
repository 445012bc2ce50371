"""Usage extraction: hand-checked golden bodies, and bodies broken in every way we could find."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from heliograph.usage import Usage, extract_usage

GOLDEN = Path(__file__).parent / "golden" / "usage"
CASES = sorted(p.stem for p in GOLDEN.glob("*.body"))

USAGE_FIELDS = (
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "has_usage",
)


def load(case: str) -> tuple[bytes, dict[str, Any]]:
    body = (GOLDEN / f"{case}.body").read_bytes()
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    return body, expected


def extract(body: bytes, request: dict[str, Any]) -> Usage:
    return extract_usage(request["family"], request["path"], body, streamed=request["streamed"])


def as_dict(usage: Usage) -> dict[str, object]:
    return {field: getattr(usage, field) for field in USAGE_FIELDS}


def test_every_golden_body_has_an_expected_file() -> None:
    assert len(CASES) >= 18
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == CASES


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    body, expected = load(case)
    assert as_dict(extract(body, expected["request"])) == expected["usage"]


@pytest.mark.parametrize("case", [c for c in CASES if load(c)[1]["request"]["streamed"]])
def test_crlf_separated_stream_reads_the_same(case: str) -> None:
    body, expected = load(case)
    crlf = body.replace(b"\n", b"\r\n")
    assert as_dict(extract(crlf, expected["request"])) == expected["usage"]


@pytest.mark.parametrize("case", CASES)
def test_every_truncation_of_a_golden_body_is_read_without_raising(case: str) -> None:
    body, expected = load(case)
    request = expected["request"]
    step = max(1, len(body) // 200)
    for end in [*range(0, len(body), step), *range(max(0, len(body) - 80), len(body))]:
        usage = extract(body[:end], request)
        assert usage.input_tokens is None or usage.input_tokens >= 0


# --- OpenAI-style details ---


def chat(usage: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps(
        {"model": "m", "choices": [{"finish_reason": "stop"}], "usage": usage, **extra}
    ).encode()


def openai(body: bytes, path: str = "/v1/chat/completions", *, streamed: bool = False) -> Usage:
    return extract_usage("openai", path, body, streamed=streamed)


def sse(*events: object, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def test_cached_count_above_prompt_count_means_prompt_already_excludes_it() -> None:
    usage = openai(
        chat(
            {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 900},
            }
        )
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.prompt_tokens) == (1000, 900, 100)


def test_cache_write_tokens_in_prompt_details() -> None:
    usage = openai(
        chat(
            {
                "prompt_tokens": 3000,
                "completion_tokens": 10,
                "total_tokens": 3010,
                "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 1500},
            }
        )
    )
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        3000,
        1000,
        1500,
    )
    assert usage.prompt_tokens == 500


def test_total_is_input_plus_output_when_not_reported() -> None:
    usage = openai(chat({"prompt_tokens": 7, "completion_tokens": 3}))
    assert usage.total_tokens == 10


def test_total_below_the_sum_is_kept_as_reported() -> None:
    usage = openai(chat({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 9}))
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
        usage.reasoning_tokens,
    ) == (7, 3, 9, 0)


def test_stream_usage_chunk_wins_over_x_groq() -> None:
    body = sse(
        {
            "model": "m",
            "choices": [{"delta": {}, "finish_reason": "stop"}],
            "x_groq": {"usage": {"prompt_tokens": 1}},
        },
        {
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        },
    )
    assert openai(body, streamed=True).input_tokens == 2


def test_stream_last_finish_reason_wins_and_empty_model_is_ignored() -> None:
    body = sse(
        {"model": "gpt-x", "choices": [{"delta": {"content": "a"}, "finish_reason": None}]},
        {"model": "", "choices": [{"delta": {}, "finish_reason": "length"}]},
    )
    usage = openai(body, streamed=True)
    assert (usage.model, usage.finish_reason, usage.has_usage) == ("gpt-x", "length", False)


def test_stream_with_comments_event_names_and_multiline_data() -> None:
    body = (
        b": OPENROUTER PROCESSING\n\n"
        b'event: message\ndata: {"model": "m",\n'
        b'data: "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1}}\n\n'
        b"data: [DONE]\n\n"
    )
    usage = openai(body, streamed=True)
    assert (usage.model, usage.input_tokens, usage.output_tokens) == ("m", 4, 1)


def test_responses_stream_incomplete() -> None:
    response = {
        "model": "o4-mini",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "usage": {
            "input_tokens": 10,
            "output_tokens": 64,
            "output_tokens_details": {"reasoning_tokens": 64},
        },
    }
    body = sse(
        {
            "type": "response.created",
            "response": {**response, "status": "in_progress", "usage": None},
        },
        {"type": "response.incomplete", "response": response},
        done=False,
    )
    usage = openai(body, "/v1/responses", streamed=True)
    assert (usage.finish_reason, usage.output_tokens, usage.completion_tokens) == (
        "max_output_tokens",
        64,
        0,
    )


def test_responses_stream_cut_before_completion_has_model_but_no_usage() -> None:
    body = sse(
        {"type": "response.created", "response": {"model": "gpt-4.1", "status": "in_progress"}},
        done=False,
    )
    usage = openai(body, "/v1/responses", streamed=True)
    assert (usage.model, usage.finish_reason, usage.has_usage) == ("gpt-4.1", None, False)


def test_error_body_has_no_usage() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}}'
    assert openai(body) == Usage()


# --- Anthropic details ---


def anthropic_stream(*events: dict[str, Any]) -> Usage:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    return extract_usage("anthropic", "/v1/messages", body, streamed=True)


START = {
    "type": "message_start",
    "message": {
        "model": "claude-x",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30,
            "output_tokens": 1,
        },
    },
}


def test_anthropic_message_delta_with_output_only_keeps_input_side() -> None:
    usage = anthropic_stream(
        START,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"output_tokens": 40},
        },
    )
    assert (usage.input_tokens, usage.cache_write_tokens, usage.cache_read_tokens) == (60, 20, 30)
    assert (usage.output_tokens, usage.total_tokens, usage.finish_reason) == (40, 100, "max_tokens")


def test_anthropic_message_delta_counts_replace_message_start() -> None:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {
            "input_tokens": 11,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": 31,
            "output_tokens": 5,
        },
    }
    usage = anthropic_stream(START, delta)
    assert (
        usage.input_tokens,
        usage.cache_write_tokens,
        usage.cache_read_tokens,
        usage.output_tokens,
    ) == (62, 20, 31, 5)


def test_anthropic_error_event_mid_stream_keeps_what_was_seen() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    usage = anthropic_stream(START, error)
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.finish_reason) == (
        "claude-x",
        60,
        1,
        None,
    )


def test_anthropic_json_without_cache_fields() -> None:
    body = (
        b'{"type":"message","model":"claude-x","stop_reason":"end_turn",'
        b'"usage":{"input_tokens":9,"output_tokens":4}}'
    )
    usage = extract_usage("anthropic", "/v1/messages", body, streamed=False)
    assert (usage.input_tokens, usage.prompt_tokens, usage.output_tokens, usage.total_tokens) == (
        9,
        9,
        4,
        13,
    )


# --- derived columns ---


def test_derived_columns_clamp_at_zero() -> None:
    usage = Usage(input_tokens=5, output_tokens=2, cache_read_tokens=10, reasoning_tokens=3)
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, 0)


def test_no_usage() -> None:
    assert (Usage().prompt_tokens, Usage().completion_tokens, Usage().has_usage) == (
        None,
        None,
        False,
    )
    assert Usage(output_tokens=0).has_usage


# --- garbage never raises ---

GARBAGE: list[bytes] = [
    b"",
    b"\x00\xff\xfe garbage \x80\x81",
    b"null",
    b"[]",
    b"42",
    b'"a string"',
    b"{",
    b"[" * 100_000,
    b'{"usage": 5, "choices": 7, "model": 3}',
    b'{"usage": {"prompt_tokens": "12", "completion_tokens": true, "total_tokens": -4}}',
    b'{"usage": {"prompt_tokens": 1.5, "prompt_tokens_details": [], "output_tokens_details": 1}}',
    b'{"choices": [null, 3], "usage": null}',
    b'{"type": "message_start", "message": []}',
    b'{"usage": {"input_tokens": null, "cache_read_input_tokens": "3"}, "stop_reason": 5}',
    b"data: \n\ndata: [DONE]\n\ndata: {not json}\n\n",
    b'data: {"choices": "abc", "usage": [1], "x_groq": {"usage": "no"}}\n\n',
    b'data: {"choices": 5, "model": null}\n\n',
    b'data: {"type": "response.completed", "response": "nope"}\n\n',
    b'data: {"type": "response.completed", "response": {"usage": {"input_tokens": {}}}}\n\n',
    b'event: message_start\ndata: {"type": "message_start", "message": {"usage": 7}}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"input_tokens":-1}}\n\n',
    b"data: \xe2\x82\n\n",
    b"\r\r\r\n\n\n::::\n\ndata",
]


@pytest.mark.parametrize("family", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/messages", ""]
)
@pytest.mark.parametrize("streamed", [False, True])
def test_garbage_never_raises(family: str, path: str, streamed: bool) -> None:
    for body in GARBAGE:
        usage = extract_usage(family, path, body, streamed=streamed)
        assert isinstance(usage, Usage)
        assert usage.input_tokens is None or usage.input_tokens >= 0


def test_random_bytes_never_raise() -> None:
    rng = random.Random(20250602)
    for _ in range(300):
        body = rng.randbytes(rng.randint(0, 400))
        for family in ("openai", "anthropic"):
            for streamed in (False, True):
                extract_usage(family, "/v1/chat/completions", body, streamed=streamed)


def test_unknown_family_reads_nothing() -> None:
    body, _ = load("openai_chat")
    assert extract_usage("bedrock", "/v1/chat/completions", body, streamed=False) == Usage()
