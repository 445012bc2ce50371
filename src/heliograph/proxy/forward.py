"""Forward a call upstream: retries with backoff, then fallbacks, every attempt noted.

Retries (`Helicone-Retry-*`) repeat the same call on 429, 5xx and connection errors, with
exponential backoff and jitter, honouring the provider's Retry-After (capped by the max timeout).
Fallbacks try the next alternative when one fails in a way that a retry could not fix:

* seed `Helicone-Fallback: [{"model": …, "provider": …}]` — same request, another model and
  perhaps another provider (with the gateway-held key, translated between the OpenAI and
  Anthropic formats when the families differ); on 429, 5xx and connection errors;
* Helicone's `Helicone-Fallbacks: [{"target-url", "headers", "onCodes", "bodyKeyOverride"}]` —
  another origin with its own headers, on the listed codes.

All of this happens before the first byte goes to the client, so a stream is never retried
once it has started.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from ..errors import BadRequest, GatewayError, UpstreamTimeout, UpstreamUnavailable
from . import routes

RETRYABLE = frozenset({429, *range(500, 600)})

# Where each OpenAI-compatible provider serves chat completions, for a fallback to it.
CHAT_PATHS = {
    "groq": "/openai/v1/chat/completions",
    "openrouter": "/api/v1/chat/completions",
    "gemini": "/v1beta/openai/chat/completions",
    "fireworks": "/inference/v1/chat/completions",
    "deepinfra": "/v1/openai/chat/completions",
    "perplexity": "/chat/completions",
    "novita": "/v3/openai/chat/completions",
}
OPENAI_CHAT = "/chat/completions"
ANTHROPIC_MESSAGES = "/v1/messages"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 5
    factor: float = 2.0
    min_ms: float = 1000.0
    max_ms: float = 10000.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `retry` (0-based), as async-retry computes it."""
        backoff = min(random.uniform(1, 2) * self.min_ms * self.factor ** retry, self.max_ms)
        if retry_after is not None:
            backoff = max(backoff, retry_after * 1000)
        return min(backoff, self.max_ms) / 1000


MAX_RETRIES = 20
MAX_FACTOR = 100
MAX_BACKOFF_MS = 600_000    # ten minutes between two tries; NaN and infinity fail every comparison


def parse_retry(helicone: dict[str, str]) -> RetryPolicy | None:
    if helicone.get("helicone-retry-enabled", "").lower() != "true":
        return None
    defaults = RetryPolicy()
    try:
        policy = RetryPolicy(
            retries=int(helicone.get("helicone-retry-num", defaults.retries)),
            factor=float(helicone.get("helicone-retry-factor", defaults.factor)),
            min_ms=float(helicone.get("helicone-retry-min-timeout", defaults.min_ms)),
            max_ms=float(helicone.get("helicone-retry-max-timeout", defaults.max_ms)))
    except ValueError:
        raise BadRequest("Helicone-Retry-Num must be an integer and Helicone-Retry-Factor, -Min-Timeout and "
                         "-Max-Timeout numbers (timeouts in ms).") from None
    if not (0 <= policy.retries <= MAX_RETRIES and 1 <= policy.factor <= MAX_FACTOR
            and 0 <= policy.min_ms <= policy.max_ms <= MAX_BACKOFF_MS):
        raise BadRequest(f"Helicone-Retry-* out of range: Num 0-{MAX_RETRIES}, Factor 1-{MAX_FACTOR}, "
                         f"0 <= Min-Timeout <= Max-Timeout <= {MAX_BACKOFF_MS} (ms).")
    return policy


def retry_after_seconds(headers: Any) -> float | None:
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


@dataclass(slots=True)
class Target:
    provider: routes.Provider
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    fallback_index: int | None = None
    translate: str | None = None          # the client's family when the upstream speaks another
    falls_back_on: Callable[[int | None], bool] = lambda status: status is None or status in RETRYABLE
    model: str | None = None
    body_override: dict[str, Any] | None = None   # Helicone-Fallbacks bodyKeyOverride
    client_usage: bool = False                     # the client asked for stream usage itself


@dataclass(slots=True)
class Outcome:
    target: Target
    response: aiohttp.ClientResponse | None
    error: GatewayError | None
    attempts: list[dict[str, Any]] = field(default_factory=list)


async def send_once(session: aiohttp.ClientSession, method: str, target: Target) -> Outcome:
    """The common case, kept lean: one target, no retries, nothing to note per attempt."""
    try:
        response = await session.request(method, target.url, headers=target.headers,
                                         data=target.body or None, allow_redirects=False)
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        return Outcome(target, None, UpstreamTimeout(f"{target.provider.name} did not answer within the upstream timeout."))
    except aiohttp.ClientError as exc:
        return Outcome(target, None, UpstreamUnavailable(
            f"Could not reach {target.provider.name}: {type(exc).__name__}: {exc}"))
    return Outcome(target, response, None)


async def send(session: aiohttp.ClientSession, method: str, targets: list[Target],
               retry: RetryPolicy | None) -> Outcome:
    attempts: list[dict[str, Any]] = []
    for position, target in enumerate(targets):
        last = position == len(targets) - 1
        response, error = await _with_retries(session, method, target, retry, attempts)
        status = response.status if response is not None else None
        if not last and target.falls_back_on(status):
            if response is not None:
                response.release()
            continue
        return Outcome(target, response, error, attempts)
    raise AssertionError("unreachable: the last target always returns")


async def _with_retries(session: aiohttp.ClientSession, method: str, target: Target, retry: RetryPolicy | None,
                        attempts: list[dict[str, Any]]) -> tuple[aiohttp.ClientResponse | None, GatewayError | None]:
    retries = retry.retries if retry else 0
    for number in range(retries + 1):
        started = time.perf_counter()
        response: aiohttp.ClientResponse | None = None
        error: GatewayError | None = None
        try:
            response = await session.request(method, target.url, headers=target.headers,
                                             data=target.body or None, allow_redirects=False)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            error = UpstreamTimeout(f"{target.provider.name} did not answer within the upstream timeout.")
        except aiohttp.ClientError as exc:
            error = UpstreamUnavailable(f"Could not reach {target.provider.name}: {type(exc).__name__}: {exc}")
        attempts.append({
            "provider": target.provider.name, "model": target.model, "fallback_index": target.fallback_index,
            "status": response.status if response is not None else (error.status if error else None),
            "error": type(error).__name__ if error else None,
            "ms": round((time.perf_counter() - started) * 1000, 3)})
        retryable = response is None or response.status in RETRYABLE
        if not retryable or number == retries or retry is None:
            return response, error
        wait = retry.delay(number, retry_after_seconds(response.headers) if response is not None else None)
        if response is not None:
            response.release()
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


# -- building the alternatives ------------------------------------------------------------------

def credential_header(provider: routes.Provider, secret: str) -> tuple[str, str]:
    """How `provider` takes a key: Anthropic's x-api-key, Azure's api-key, everyone else's Bearer."""
    if provider.family == "anthropic":
        return "x-api-key", secret
    if provider.name == "azure":
        return "api-key", secret
    return "authorization", f"Bearer {secret}"


def seed_fallbacks(raw: str, primary: Target, providers: dict[str, routes.Provider],
                   provider_keys: Mapping[str, str], client_usage: bool) -> list[Target]:
    """Targets for `Helicone-Fallback: [{"model": …, "provider": …}, …]`; another provider than the
    primary's is called with the key the gateway holds for it (the project's, else the deployment's)."""
    items = _json_list(raw, "Helicone-Fallback")
    family = primary.provider.family
    path = primary.url.split("?", 1)[0]
    if not (path.endswith(OPENAI_CHAT) if family == "openai" else path.endswith(ANTHROPIC_MESSAGES)):
        raise BadRequest("Helicone-Fallback works on chat requests only (/chat/completions or /v1/messages).")
    try:
        body = orjson.loads(primary.body)
    except orjson.JSONDecodeError:
        raise BadRequest("Helicone-Fallback needs a JSON request body.") from None
    if not isinstance(body, dict):
        raise BadRequest("Helicone-Fallback needs a JSON object as the request body.")
    targets = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("model"), str) or set(item) - {"model", "provider"}:
            raise BadRequest(f"Helicone-Fallback[{index}] must be an object like "
                             '{"model": "gpt-4o-mini"} or {"model": "…", "provider": "anthropic"}.')
        name = item.get("provider") or primary.provider.name
        provider = providers.get(name)
        if provider is None or not provider.origin:
            raise BadRequest(f"Helicone-Fallback[{index}]: unknown provider {name!r}.")
        targets.append(_alternative(index, item["model"], provider, primary, body, provider_keys, client_usage))
    return targets


def _alternative(index: int, model: str, provider: routes.Provider, primary: Target, body: dict[str, Any],
                 provider_keys: Mapping[str, str], client_usage: bool) -> Target:
    from . import translate

    headers = list(primary.headers)
    if provider.name != primary.provider.name:
        secret = provider_keys.get(provider.name)
        if secret is None:
            raise BadRequest(f"Helicone-Fallback[{index}] goes to {provider.name}, which needs a gateway-held key: "
                             f"set HELIOGRAPH_PROVIDER_KEY_{provider.name.upper()}, or store one for the project "
                             f"with 'heliograph provider-keys set --provider {provider.name}'.")
        headers = [(k, v) for k, v in headers if k.lower() not in ("authorization", "x-api-key", "api-key",
                                                                    "accept-encoding")]
        headers.append(credential_header(provider, secret))
    translated = provider.family != primary.provider.family
    try:
        if not translated:
            new_body = {**body, "model": model}
        elif provider.family == "anthropic":
            new_body = translate.openai_to_anthropic_request(body, model)
        else:
            new_body = translate.anthropic_to_openai_request(body, model)
    except translate.TranslationError as exc:
        raise BadRequest(f"Helicone-Fallback[{index}] cannot go to {provider.name}: {exc}") from None
    if translated and provider.family == "anthropic" and not any(k.lower() == "anthropic-version" for k, _ in headers):
        headers.append(("anthropic-version", "2023-06-01"))
    if translated and provider.family == "openai" and new_body.get("stream"):
        new_body["stream_options"] = {"include_usage": True}
    path = ANTHROPIC_MESSAGES if provider.family == "anthropic" else CHAT_PATHS.get(provider.name, "/v1" + OPENAI_CHAT)
    if not translated:
        path = primary.url.split("?", 1)[0].removeprefix(primary.provider.origin) \
            if provider.name == primary.provider.name else path
    return Target(provider, provider.origin + path, headers, orjson.dumps(new_body), fallback_index=index,
                  translate=primary.provider.family if translated else None, model=model,
                  client_usage=client_usage)


def helicone_fallbacks(raw: str, path_and_query: str, allowed: frozenset[str],
                       providers: dict[str, routes.Provider]) -> list[Target]:
    """Targets for Helicone's `Helicone-Fallbacks` (gateway route)."""
    targets = []
    for index, item in enumerate(_json_list(raw, "Helicone-Fallbacks")):
        if not isinstance(item, dict) or not {"target-url", "headers", "onCodes"} <= set(item):
            raise BadRequest(f"Helicone-Fallbacks[{index}] must have target-url, headers and onCodes.")
        provider = routes.gateway_provider(str(item["target-url"]), allowed, providers)
        if isinstance(provider, str):
            raise BadRequest(f"Helicone-Fallbacks[{index}]: {provider}")
        headers = item["headers"]
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise BadRequest(f"Helicone-Fallbacks[{index}].headers must be an object of strings.")
        codes = _codes(item["onCodes"], index)
        override = item.get("bodyKeyOverride")
        if override is not None and not isinstance(override, dict):
            raise BadRequest(f"Helicone-Fallbacks[{index}].bodyKeyOverride must be an object.")
        targets.append(Target(
            provider, provider.origin + path_and_query,
            list(headers.items()), b"", fallback_index=index,
            falls_back_on=lambda status, codes=codes: status is None or status in codes,  # type: ignore[misc]
            body_override=override))
    return targets


def apply_body(targets: list[Target], body: bytes) -> None:
    """Helicone-Fallbacks targets send the client's body, with their bodyKeyOverride merged in."""
    for target in targets:
        if target.body_override is None:
            target.body = body
            continue
        try:
            merged = _deep_merge(orjson.loads(body), target.body_override)
        except orjson.JSONDecodeError:
            raise BadRequest("bodyKeyOverride needs a JSON request body.") from None
        target.body = orjson.dumps(merged)
        if isinstance(merged, dict) and isinstance(merged.get("model"), str):
            target.model = merged["model"]


def _deep_merge(base: Any, override: dict[str, Any]) -> Any:
    if not isinstance(base, dict):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged.get(key), value) if isinstance(value, dict) else value
    return merged


def _codes(raw: Any, index: int) -> frozenset[int]:
    if not isinstance(raw, list):
        raise BadRequest(f"Helicone-Fallbacks[{index}].onCodes must be a list of codes or {{from, to}} ranges.")
    codes: set[int] = set()
    for code in raw:
        if _status(code):
            codes.add(code)
        elif isinstance(code, dict) and _status(code.get("from")) and _status(code.get("to")) \
                and code["from"] <= code["to"]:
            codes.update(range(code["from"], code["to"] + 1))   # at most 500 codes
        else:
            raise BadRequest(f"Helicone-Fallbacks[{index}].onCodes: {_clip(code)} is not an HTTP status "
                             f"(100-599) or a {{from, to}} range of them.")
    return frozenset(codes)


def _status(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_list(raw: str, header: str) -> list[Any]:
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"{header} must be a JSON array.") from None
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{header} must be a non-empty JSON array.")
    return items
