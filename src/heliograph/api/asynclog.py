"""Async logging without the proxy: Helicone's `POST /custom/v1/log` (contract §9.1).

    POST /custom/v1/log       provider "custom"; usage read as OpenAI's or Anthropic's, by shape
    POST /oai/v1/log          provider "openai"
    POST /anthropic/v1/log    provider "anthropic"
    POST /googleapis/v1/log   provider "gemini" (Google's `usageMetadata`)

The body is Helicone's: `providerRequest {url, json, meta}`, `providerResponse {json | textBody,
status, headers, cost?}`, `timing? {startTime, endTime: {seconds, milliseconds}, timeToFirstToken?}`.
It becomes a RawRecord handed to the same recorder as proxied calls, so usage extraction, pricing,
the `Helicone-*` headers in `meta` (user, properties, session, request id, omit flags), the journal
and the shutdown drain all apply unchanged. A stated `cost` wins over the computed one.

Without `timing` the call is taken to have started now and ended one second later, as Helicone
does, so its latency reads 1000 ms: send `timing` for real latencies.

Deliberate differences from Helicone, all more lenient: a missing `meta` or `headers` counts as
empty (Helicone refuses them), and the answer is our envelope, not the text `ok`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..recording.ids import RequestIds
from ..recording.record import RawRecord, helicone_problem, redact_url
from . import ApiError, authenticated, envelope

MAX_BODY_BYTES = 10 * 1024 * 1024       # Helicone's limit
MAX_COUNT = 2**53                       # the recorder clamps beyond; here it is named
# A client sending more is answered once its body is read to this point; the rest is discarded
# unread by closing the connection, so an oversized body never sits in memory.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
NO_TIMING_LATENCY_MS = 1000.0           # Helicone's end = start + 1 s when timing is absent
MIN_STATUS, MAX_STATUS = -1000, 999     # Helicone stores negative statuses for timeouts/cancels

# route path → provider name (None: decided by the response's shape)
ROUTES: dict[str, str | None] = {
    "/custom/v1/log": None,
    "/oai/v1/log": "openai",
    "/anthropic/v1/log": "anthropic",
    "/googleapis/v1/log": "gemini",
}

Submit = Callable[[RawRecord], None]


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, or ApiError "Payload too large" without ever holding more than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(f"Payload too large: the body is over {limit // (1024 * 1024)} MB.")
    chunks: list[bytes] = []
    size = 0
    too_large = False
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_large = True
            chunks.clear()
            if size > DRAIN_LIMIT_BYTES:
                break
        elif not too_large:
            chunks.append(chunk)
    if too_large:
        raise ApiError(f"Payload too large: the body is over {limit // (1024 * 1024)} MB.")
    return b"".join(chunks)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _object(parent: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    """An optional object member; absent or null counts as empty."""
    value = parent.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(f"Invalid {where}: '{name}' should be an object")
    return value


def _meta(request: Mapping[str, Any]) -> dict[str, str]:
    """The Helicone-* entries of `meta`, lower-cased as the proxy keeps headers; Helicone-Auth dropped."""
    helicone: dict[str, str] = {}
    for name, value in _object(request, "meta", "providerRequest").items():
        lowered = str(name).lower()
        if not lowered.startswith("helicone-") or lowered == "helicone-auth" or value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"     # what a header would have carried
        elif _is_number(value):
            value = str(value)
        if not isinstance(value, str) or "\x00" in value:
            raise ApiError(f"Invalid providerRequest: meta '{name}' should be a string")
        helicone[lowered] = value
    return helicone


def _time_ms(timing: Mapping[str, Any], name: str) -> float:
    point = timing.get(name)
    point = point if isinstance(point, dict) else {}
    for part in ("seconds", "milliseconds"):
        if not _is_number(point.get(part)):
            raise ApiError(f"Invalid timing: '{name}.{part}' should be a number")
    return float(point["seconds"]) * 1000 + float(point["milliseconds"])


def _timing(body: Mapping[str, Any]) -> tuple[float, float, float | None]:
    """(start ms, latency ms, time to first token ms)."""
    raw = body.get("timing")
    if raw is None:
        return time.time() * 1000, NO_TIMING_LATENCY_MS, None
    if not isinstance(raw, dict):
        raise ApiError("Invalid timing: expected an object with 'startTime' and 'endTime'")
    start, end = _time_ms(raw, "startTime"), _time_ms(raw, "endTime")
    if start > end:
        raise ApiError("startTime cannot be greater than endTime")
    if start < 0 or end < 0:
        raise ApiError("startTime and endTime cannot be negative")
    ttft = raw.get("timeToFirstToken")
    if ttft is not None and (not _is_number(ttft) or ttft < 0):
        raise ApiError("Invalid timing: 'timeToFirstToken' should be a non-negative number of milliseconds")
    return start, end - start, None if ttft is None else float(ttft)


def _family(provider: str, response_json: Any) -> str:
    if provider == "anthropic":
        return "anthropic"
    if provider == "custom" and isinstance(response_json, dict):
        usage = response_json.get("usage")
        anthropic_usage = isinstance(usage, dict) and (
            "cache_creation_input_tokens" in usage or "cache_read_input_tokens" in usage)
        if response_json.get("type") == "message" or anthropic_usage:
            return "anthropic"
    return "openai"


def parse_log(body: Any, provider: str | None, key_id: str | None) -> RawRecord:
    """Helicone's async log body → the record the proxy would have made; ApiError names the problem."""
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    request, response = body.get("providerRequest"), body.get("providerResponse")
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise ApiError("One of the required fields is missing: providerRequest, providerResponse")
    url = request.get("url")
    if not isinstance(url, str):
        raise ApiError("Invalid providerRequest: 'url' should be a string")
    helicone = _meta(request)
    if problem := helicone_problem(helicone):
        raise ApiError(f"Invalid providerRequest.meta: {problem}")
    if "json" not in request:
        raise ApiError("Invalid providerRequest: 'json' is undefined")
    if "json" not in response and "textBody" not in response:
        raise ApiError("Invalid providerResponse: 'json' is undefined (send 'json' or 'textBody')")
    text_body = response.get("textBody")
    if "json" not in response and not isinstance(text_body, str):
        raise ApiError("Invalid providerResponse: 'textBody' should be a string")
    status: Any = response.get("status")
    if not _is_number(status):
        raise ApiError("Invalid providerResponse: 'status' should be a number")
    if status != int(status) or not MIN_STATUS <= status <= MAX_STATUS:
        raise ApiError(f"Invalid providerResponse: 'status' should be an HTTP status code, got {status}")
    _object(response, "headers", "providerResponse")
    cost = response.get("cost")
    if cost is not None and (not _is_number(cost) or cost < 0):
        raise ApiError("Invalid providerResponse: 'cost' should be a non-negative number (USD)")
    start_ms, latency_ms, ttft_ms = _timing(body)

    response_json = response.get("json")
    if isinstance(response_json, dict):
        for name in ("usage", "usageMetadata"):
            _check_counts(response_json.get(name), f"providerResponse.json.{name}")
    response_body = orjson.dumps(response_json) if "json" in response else str(text_body).encode()
    chosen = provider or "custom"
    return RawRecord(
        id=helicone.get("helicone-request-id", ""), created_at=start_ms / 1000, provider=chosen, family=_family(chosen, response_json),
        # Helicone's example url is a bare name ("custom-model-nopath"); keep whatever was sent.
        method="POST", path=upstream_path(url), target_url=redact_url(url), key_id=key_id, helicone=helicone,
        request_body=orjson.dumps(request["json"]), status=int(status), response_body=response_body,
        streamed=False, latency_ms=latency_ms, ttft_ms=ttft_ms,
        cost_override=None if cost is None else float(cost))


def _check_counts(usage: Any, where: str) -> None:
    """Token counts are whole numbers a database can hold; anything else is named, not stored."""
    if not isinstance(usage, dict):
        return
    for name, value in usage.items():
        if isinstance(value, dict):
            _check_counts(value, f"{where}.{name}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= MAX_COUNT:
            raise ApiError(f"Invalid {where}.{name}: {value} is not a token count (0 to {MAX_COUNT})")


def upstream_path(url: str) -> str:
    """The path of providerRequest.url, for the record's request_path."""
    return urlsplit(url).path or url


def async_log_routes(keys: KeyCache, submit: Submit | None, ids: RequestIds | None = None) -> list[Route]:
    def handler(provider: str | None) -> Callable[[Request], Any]:
        async def log(request: Request) -> Response:
            if submit is None:
                raise ApiError("Recording is not running in this process.", 503)
            raw = await read_limited(request)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ApiError("The request body is not valid JSON.") from None
            record = parse_log(body, provider, request.state.key_id)
            # A reused Helicone-Request-Id gets a fresh id: the call is never dropped as a duplicate.
            record.id = await (ids or RequestIds()).claim(record.id)
            record.project_id = request.state.key.project_id
            submit(record)      # put_nowait (or the journal): never waits for the store
            response = envelope({"request_id": record.id})
            response.headers["helicone-id"] = record.id
            return response
        return log

    return [Route(path, authenticated(keys, handler(provider), scope="proxy"), methods=["POST"])
            for path, provider in ROUTES.items()]
