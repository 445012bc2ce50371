"""Pricing: hand-checked golden costs, never a silent 0, overrides, agreement with genai-prices."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

from heliograph.pricing import PriceOverride, parse_overrides, price
from heliograph.usage import Usage, extract_usage

GOLDEN = Path(__file__).parent / "golden" / "usage"
CASES = sorted(p.stem for p in GOLDEN.glob("*.body"))
NOON = datetime(2025, 6, 2, 12, tzinfo=UTC)


def golden(case: str) -> tuple[Usage, dict[str, Any]]:
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    request = expected["request"]
    body = (GOLDEN / f"{case}.body").read_bytes()
    usage = extract_usage(request["family"], request["path"], body, streamed=request["streamed"])
    return usage, expected


@pytest.mark.parametrize("case", CASES)
def test_golden_cost(case: str) -> None:
    usage, expected = golden(case)
    at = datetime.fromisoformat(expected["priced_at"])
    cost, status = price(expected["provider"], usage.model, usage, at=at)
    assert status == expected["pricing_status"]
    if expected["cost_usd"] is None:
        assert cost is None
    else:
        assert cost == pytest.approx(expected["cost_usd"], rel=1e-9, abs=0)


@pytest.mark.parametrize("case", [c for c in CASES if "prices_per_mtok" in golden(c)[1]])
def test_golden_cost_matches_its_stated_prices(case: str) -> None:
    # Guards the hand arithmetic in the golden files against the prices they state.
    _, expected = golden(case)
    prices, u = expected["prices_per_mtok"], expected["usage"]
    by_hand = (
        u["prompt_tokens"] * prices["input"]
        + u["cache_read_tokens"] * prices.get("cache_read", prices["input"])
        + u["cache_write_tokens"] * prices.get("cache_write", prices["input"])
        + u["output_tokens"] * prices["output"]
    ) / 1e6
    assert by_hand == pytest.approx(expected["cost_usd"], rel=1e-9, abs=0)


USAGE = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000, total_tokens=1500)


# --- never a silent 0 ---


def test_no_model_is_unpriced() -> None:
    assert price("openai", None, USAGE) == (None, "unpriced")


def test_no_usage_is_unpriced() -> None:
    assert price("openai", "gpt-4o", Usage(model="gpt-4o", finish_reason="stop")) == (
        None,
        "unpriced",
    )


def test_unknown_model_is_unpriced() -> None:
    assert price("openai", "my-finetune-that-does-not-exist", USAGE) == (None, "unpriced")
    assert price("groq", "gpt-4o", USAGE) == (None, "unpriced")


@pytest.mark.parametrize("provider", ["ollama", "vllm", "local"])
def test_self_hosted_models_are_unpriced_even_with_a_known_name(provider: str) -> None:
    assert price(provider, "gpt-4o", USAGE) == (None, "unpriced")


def test_zero_tokens_reported_is_priced_zero() -> None:
    assert price("openai", "gpt-4o", Usage(input_tokens=0, output_tokens=0)) == (0.0, "priced")


# --- provider mapping ---


@pytest.mark.parametrize(
    ("provider", "model", "genai_provider"),
    [
        ("xai", "grok-3-mini", "x-ai"),
        ("gemini", "gemini-2.5-flash", "google"),
        ("gemini", "models/gemini-2.5-flash", "google"),
        ("azure", "gpt-4o-2024-11-20", "azure"),
        ("openrouter", "openai/gpt-4o", "openrouter"),
        ("cerebras", "llama3.1-8b", "cerebras"),
        ("perplexity", "sonar", "perplexity"),
    ],
)
def test_provider_names_map_to_genai_prices(provider: str, model: str, genai_provider: str) -> None:
    reference = calc_price(
        gp(USAGE),
        model.removeprefix("models/"),
        provider_id=genai_provider,
        genai_request_timestamp=NOON,
    )
    assert price(provider, model, USAGE, at=NOON) == (float(reference.total_price), "priced")


@pytest.mark.parametrize("provider", ["deepinfra", "gateway", "some-new-host"])
def test_providers_unknown_to_genai_prices_look_the_model_up_by_name(provider: str) -> None:
    reference = calc_price(gp(USAGE), "gpt-4o", genai_request_timestamp=NOON)
    assert price(provider, "gpt-4o", USAGE, at=NOON) == (float(reference.total_price), "priced")
    assert price(provider, "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo-unknown", USAGE) == (
        None,
        "unpriced",
    )


def test_price_depends_on_time_of_day_where_genai_prices_says_so() -> None:
    evening = datetime(2025, 6, 2, 20, tzinfo=UTC)
    noon_cost, _ = price("deepseek", "deepseek-chat", USAGE, at=NOON)
    evening_cost, _ = price("deepseek", "deepseek-chat", USAGE, at=evening)
    assert noon_cost is not None and evening_cost is not None and evening_cost < noon_cost


# --- the fast path computes exactly what genai-prices computes ---


def gp(usage: Usage) -> GPUsage:
    return GPUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_tokens or None,
        cache_write_tokens=usage.cache_write_tokens or None,
        output_tokens=usage.output_tokens,
    )


@pytest.mark.parametrize(
    ("provider", "genai_provider", "model"),
    [
        ("openai", "openai", "gpt-4o-mini"),
        ("openai", "openai", "o3"),
        ("anthropic", "anthropic", "claude-sonnet-4-5"),  # tiered above 200K input
        ("anthropic", "anthropic", "claude-opus-4-1"),
        ("gemini", "google", "gemini-2.5-pro"),  # tiered above 200K input
        ("deepseek", "deepseek", "deepseek-chat"),
        ("perplexity", "perplexity", "sonar-pro"),  # per-request fee
        ("groq", "groq", "llama-3.3-70b-versatile"),
        ("mistral", "mistral", "mistral-large-latest"),
    ],
)
def test_price_equals_genai_prices_calc_price(
    provider: str, genai_provider: str, model: str
) -> None:
    rng = random.Random(model)
    for _ in range(200):
        input_tokens = rng.choice([0, 1, 999, 150_000, 200_000, 200_001, 900_000])
        cache_read = rng.randint(0, input_tokens)
        cache_write = rng.randint(0, input_tokens - cache_read) if provider == "anthropic" else 0
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=rng.choice([0, 1, 4_321, 64_000]),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
        reference = calc_price(
            gp(usage), model, provider_id=genai_provider, genai_request_timestamp=NOON
        )
        assert price(provider, model, usage, at=NOON) == (float(reference.total_price), "priced"), (
            usage
        )


def test_usage_genai_prices_rejects_is_unpriced_not_an_error() -> None:
    # More cached than input cannot happen from extract_usage, but a hand-made Usage can say it.
    odd = Usage(input_tokens=10, output_tokens=5, cache_read_tokens=50)
    cost, status = price("openai", "gpt-4o", odd)
    assert (cost is None) == (status == "unpriced")


def test_output_only_usage_is_priced() -> None:
    cost, status = price("openai", "gpt-4o", Usage(output_tokens=1000), at=NOON)
    assert status == "priced"
    assert cost == pytest.approx(0.01)


# --- overrides ---


def test_override_wins_over_genai_prices() -> None:
    overrides = {"gpt-4o": PriceOverride(input=1.0, output=2.0)}
    # 200 uncached + 1000 cache reads at the input price (no cache price given), 300 output.
    cost, status = price("openai", "gpt-4o", USAGE, overrides)
    assert status == "priced"
    assert cost == pytest.approx((1200 * 1.0 + 300 * 2.0) / 1e6)


def test_override_cache_prices() -> None:
    overrides = {"m": PriceOverride(input=10.0, output=20.0, cache_read=1.0, cache_write=12.5)}
    usage = Usage(
        input_tokens=1000, output_tokens=100, cache_read_tokens=500, cache_write_tokens=300
    )
    expected = (200 * 10.0 + 500 * 1.0 + 300 * 12.5 + 100 * 20.0) / 1e6
    cost, status = price("anthropic", "m", usage, overrides)
    assert status == "priced"
    assert cost == pytest.approx(expected)


def test_override_prices_a_self_hosted_model() -> None:
    overrides = {"llama3.2:3b": PriceOverride(input=0.0, output=0.0)}
    assert price("ollama", "llama3.2:3b", USAGE, overrides) == (0.0, "priced")


def test_override_matches_the_exact_model_name_only() -> None:
    overrides = {"llama3.2:3b": PriceOverride(input=1.0, output=1.0)}
    assert price("ollama", "LLAMA3.2:3B", USAGE, overrides) == (None, "unpriced")
    assert price("ollama", "llama3.2", USAGE, overrides) == (None, "unpriced")


def test_override_still_needs_usage() -> None:
    overrides = {"m": PriceOverride(input=1.0, output=1.0)}
    assert price("ollama", "m", Usage(model="m"), overrides) == (None, "unpriced")


def test_parse_overrides() -> None:
    parsed = parse_overrides(
        {
            "a": {"input": 1, "output": 2.5},
            "b": {"input": 0, "output": 0, "cache_read": 0.1, "cache_write": 3},
        }
    )
    assert parsed == {
        "a": PriceOverride(input=1.0, output=2.5),
        "b": PriceOverride(input=0.0, output=0.0, cache_read=0.1, cache_write=3.0),
    }
    assert isinstance(parsed["a"].input, float)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"input": 1, "output": 2, "cache_raed": 1}, "model 'my-model': unknown key 'cache_raed'"),
        ({"input": 1}, "model 'my-model': missing key 'output'"),
        ({"input": -1, "output": 2}, "model 'my-model': key 'input' must be a non-negative number"),
        (
            {"input": 1, "output": "2"},
            "model 'my-model': key 'output' must be a non-negative number",
        ),
        (
            {"input": True, "output": 2},
            "model 'my-model': key 'input' must be a non-negative number",
        ),
        (
            {"input": 1, "output": float("nan")},
            "model 'my-model': key 'output' must be a non-negative number",
        ),
        (
            {"input": 1, "output": 2, "cache_read": None},
            "model 'my-model': key 'cache_read' must be a non-negative number",
        ),
        (5, "model 'my-model': expected a table"),
    ],
)
def test_parse_overrides_names_the_model_and_the_bad_key(table: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_overrides({"my-model": table})
