"""Cost in USD of a recorded call: a configured price, else genai-prices' bundled snapshot.

Never a silent 0: no model, no reported usage, a self-hosted provider or a model genai-prices does
not know gives `(None, "unpriced")`. A call that bills nothing at all (`billable` is False: reads,
model lists, token counting, files, batches) is `not_billable` at $0, decided by the caller.
Prices are never fetched over the network.

Speed: the recorder prices thousands of records a second, and genai-prices' general calculation
(unit decomposition in Decimal) costs ~60 µs a call. Its prices are linear in the four token
counts we have, except for per-request fees (a constant) and tiered prices (the tier depends on the
input size), so for each price table we ask genai-prices once for the cost of one token of each
kind and afterwards multiply. Above the first tier threshold we call genai-prices itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Literal

from genai_prices import Usage as GPUsage
from genai_prices import calc_price
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

from ..usage import Usage

__all__ = ["PriceOverride", "PricingStatus", "billable", "parse_overrides", "price"]

PricingStatus = Literal["priced", "unpriced", "not_billable"]

_UNPRICED: Final[tuple[None, PricingStatus]] = (None, "unpriced")

# Heliograph provider name -> genai-prices provider id. None: genai-prices has no such provider,
# so the model is looked up by name across providers (first-party names like gpt-4o, claude-*).
# Names not listed are passed through (genai-prices also knows cohere, aws/bedrock, novita, ...).
_PROVIDER_IDS: Final[Mapping[str, str | None]] = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        "azure": "azure",
        "together": "together",
        "groq": "groq",
        "openrouter": "openrouter",
        "mistral": "mistral",
        "deepseek": "deepseek",
        "fireworks": "fireworks",
        "xai": "x-ai",
        "gemini": "google",
        "perplexity": "perplexity",
        "cerebras": "cerebras",
        "deepinfra": None,
        "gateway": None,
    }
)

# Self-hosted servers cost nothing per token; a hosted price for the same model name would be
# wrong, so these are priced only through an override.
_LOCAL_PROVIDERS: Final = frozenset({"ollama", "vllm", "local", "lmstudio", "llamacpp"})

_NO_OVERRIDES: Final[Mapping[str, PriceOverride]] = MappingProxyType({})
_OVERRIDE_KEYS: Final = frozenset({"input", "output", "cache_read", "cache_write"})


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """Prices in USD per million tokens for one model, from the config file."""

    input: float
    output: float
    cache_read: float | None = None  # default: the input price
    cache_write: float | None = None  # default: the input price

    def cost(self, usage: Usage) -> float:
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        return (
            (usage.prompt_tokens or 0) * self.input
            + usage.cache_read_tokens * cache_read
            + usage.cache_write_tokens * cache_write
            + (usage.output_tokens or 0) * self.output
        ) / 1_000_000


def price(
    provider: str,
    model: str | None,
    usage: Usage,
    overrides: Mapping[str, PriceOverride] = _NO_OVERRIDES,
    *,
    at: datetime | None = None,
) -> tuple[float | None, PricingStatus]:
    """(cost in USD, status) of `usage` on `model` served by Heliograph provider `provider`.

    An override for the exact model name wins over genai-prices. `at` is when the call was made
    (default: now; naive means UTC), as some prices change by date or by time of day.
    """
    if model is None or not usage.has_usage:
        return _UNPRICED
    if (override := overrides.get(model)) is not None:
        return override.cost(usage), "priced"
    model_info = _find_model(provider, model)
    if model_info is None:
        return _UNPRICED
    model_price = model_info.get_prices(at or datetime.now(UTC))
    cost = _cost(model_price, usage)
    return _UNPRICED if cost is None else (cost, "priced")


# Path segments of POST endpoints that never bill tokens. `models` counts only near the end
# (/v1/models/{id}): Azure AI's `/models/chat/completions` is billed, and so is Gemini's native
# `models/<name>:generateContent`, whose `:method` suffix is judged apart.
_FREE_SEGMENTS: Final = frozenset({"files", "uploads", "batches", "count_tokens"})
_FREE_METHODS: Final = frozenset({"countTokens"})


def billable(method: str, path: str) -> bool:
    """False when a call to `path` can bill nothing: any read (GET, HEAD, DELETE…: retrieving a
    stored response must not bill it twice), model lists, token counting, files and batches (a
    batch bills its requests later, not the call that sends it)."""
    if method.upper() != "POST":
        return False
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if segments and ":" in segments[-1]:
        return segments[-1].rsplit(":", 1)[1] not in _FREE_METHODS
    return "models" not in segments[-2:] and _FREE_SEGMENTS.isdisjoint(segments)


def parse_overrides(raw: Mapping[str, Mapping[str, float]]) -> dict[str, PriceOverride]:
    """Validate the config file's pricing table.

    `raw` maps a model name to {input, output, cache_read?, cache_write?} in USD per million tokens.
    """
    parsed: dict[str, PriceOverride] = {}
    for model, table in raw.items():
        if not isinstance(table, Mapping):
            raise ValueError(
                f"pricing for model {model!r}: expected a table of USD per million tokens"
            )
        unknown = sorted(set(table) - _OVERRIDE_KEYS)
        if unknown:
            allowed = ", ".join(sorted(_OVERRIDE_KEYS))
            raise ValueError(
                f"pricing for model {model!r}: unknown key {unknown[0]!r} (allowed: {allowed})"
            )
        for key in ("input", "output"):
            if key not in table:
                raise ValueError(f"pricing for model {model!r}: missing key {key!r}")
        for key, value in table.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(
                    f"pricing for model {model!r}: key {key!r} must be a non-negative number "
                    f"of USD per million tokens, got {value!r}"
                )
        parsed[model] = PriceOverride(
            input=float(table["input"]),
            output=float(table["output"]),
            cache_read=_opt_float(table.get("cache_read")),
            cache_write=_opt_float(table.get("cache_write")),
        )
    return parsed


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


@functools.lru_cache(maxsize=4096)
def _find_model(provider: str, model: str) -> ModelInfo | None:
    """genai-prices' entry for `model` at `provider`; None when it has none (misses cached too)."""
    if provider in _LOCAL_PROVIDERS:
        return None
    provider_id = _PROVIDER_IDS.get(provider, provider)
    if (
        provider_id is not None
        and find_provider_by_id(get_snapshot().providers, provider_id) is None
    ):
        provider_id = None
    refs = [model]
    if model.startswith("models/"):
        # Gemini's APIs also accept the resource form "models/gemini-2.5-flash".
        refs.append(model.removeprefix("models/"))
    for ref in refs:
        try:
            # Zero usage: this call only resolves the model; costs are worked out per record.
            return calc_price(GPUsage(), ref, provider_id=provider_id).model
        except Exception:  # LookupError mostly; any failure means no price
            continue
    return None


@dataclass(frozen=True, slots=True)
class _Rates:
    """A price table as a linear function of our token counts, valid up to `max_input` tokens."""

    fixed: Decimal  # per-request fees
    input: Decimal  # per input token (all input)
    cache_read: Decimal  # added per cache-read token (cache price minus input price)
    cache_write: Decimal  # added per cache-write token
    output: Decimal
    max_input: float  # the lowest tier threshold; above it the tier changes the rates


# Keyed by id(): ModelPrice defines __eq__ without __hash__. The value holds the ModelPrice so its
# id is never reused; the tables are the snapshot's own long-lived objects, so this stays small.
_rates_cache: dict[int, tuple[ModelPrice, _Rates | None]] = {}


def _cost(model_price: ModelPrice, usage: Usage) -> float | None:
    cached = _rates_cache.get(id(model_price))
    if cached is None:
        cached = _rates_cache[id(model_price)] = (model_price, _rates(model_price))
    rates = cached[1]
    input_tokens = usage.input_tokens or 0
    cache_read, cache_write = usage.cache_read_tokens, usage.cache_write_tokens
    if rates is None or input_tokens > rates.max_input or cache_read + cache_write > input_tokens:
        return _library_cost(model_price, usage)
    return float(
        rates.fixed
        + rates.input * input_tokens
        + rates.cache_read * cache_read
        + rates.cache_write * cache_write
        + rates.output * (usage.output_tokens or 0)
    )


def _rates(model_price: ModelPrice) -> _Rates | None:
    """One-token probes of genai-prices' calculation; None if it cannot price even those."""
    try:
        fixed = _total(model_price, GPUsage())
        per_input = _total(model_price, GPUsage(input_tokens=1)) - fixed
        with_read = _total(model_price, GPUsage(input_tokens=1, cache_read_tokens=1)) - fixed
        with_write = _total(model_price, GPUsage(input_tokens=1, cache_write_tokens=1)) - fixed
        per_output = _total(model_price, GPUsage(output_tokens=1)) - fixed
    except Exception:  # a table it rejects just takes the slow path
        return None
    # ModelPrice keeps each price as an attribute named after its unit.
    thresholds = [
        tier.start
        for value in vars(model_price).values()
        if isinstance(value, TieredPrices)
        for tier in value.tiers
    ]
    return _Rates(
        fixed=fixed,
        input=per_input,
        cache_read=with_read - per_input,
        cache_write=with_write - per_input,
        output=per_output,
        max_input=min(thresholds, default=math.inf),
    )


def _library_cost(model_price: ModelPrice, usage: Usage) -> float | None:
    counts = {
        "input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens or None,
        "cache_write_tokens": usage.cache_write_tokens or None,
        "output_tokens": usage.output_tokens,
    }
    try:
        return float(_total(model_price, GPUsage(**counts)))
    except Exception:  # genai-prices refusing a usage: no price
        return None


def _total(model_price: ModelPrice, usage: GPUsage) -> Decimal:
    return model_price.calc_price(usage)["total_price"]
