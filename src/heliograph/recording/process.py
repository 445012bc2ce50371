"""Turn a RawRecord into a stored row: parse, extract usage, price, assemble streams, omit, compress.

Runs in the recorder thread, never on the request path.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import urlsplit
from typing import Any

import orjson

from ..bodies import pack
from ..pricing import PriceOverride, billable, price
from ..usage import extract_usage
from .assemble import assemble_stream
from .record import RawRecord

PROPERTY_PREFIX = "helicone-property-"


def decode_body(body: bytes, encoding: str) -> bytes:
    """The body as the provider meant it, for reading usage; the stored copy is the same."""
    try:
        if encoding == "gzip":
            return zlib.decompress(body, wbits=31)
        if encoding == "deflate":
            return zlib.decompress(body)
    except zlib.error:
        pass
    return body


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body or body[:1] not in (b"{", b" ", b"\n"):
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _azure_deployment(path: str) -> str | None:
    parts = path.split("?", 1)[0].split("/")
    if "deployments" in parts:
        index = parts.index("deployments") + 1
        return parts[index] if index < len(parts) else None
    return None


def to_row(raw: RawRecord, overrides: Mapping[str, PriceOverride]) -> dict[str, Any]:
    h = raw.helicone
    request_json = _json_object(raw.request_body)
    request_model = request_json.get("model") if request_json else None
    if not isinstance(request_model, str):
        request_model = _azure_deployment(raw.path) if raw.provider == "azure" else None
    response_body = decode_body(raw.response_body, raw.response_encoding)
    # The upstream's own path says which API answered (a fallback may differ from the client's).
    upstream_path = urlsplit(raw.target_url).path or raw.path.split("?", 1)[0]
    usage = extract_usage(raw.family, upstream_path, response_body, streamed=raw.streamed)
    model = h.get("helicone-model-override") or usage.model or request_model
    cost: float | None
    if raw.cache_hit:
        cost, pricing_status = 0.0, "priced"
    elif not billable(raw.method, upstream_path) or (raw.status >= 400 and not usage.has_usage):
        # Reads, model lists, token counting… bill nothing; nor does a refused call: the provider
        # bills only answered tokens.
        cost, pricing_status = 0.0, "not_billable"
    else:
        cost, pricing_status = price(raw.provider, model, usage, overrides,
                                     at=datetime.fromtimestamp(raw.created_at, tz=timezone.utc))
    if raw.cost_override is not None:
        # The caller knows its bill better than our price table (Helicone's async `cost`).
        cost, pricing_status = raw.cost_override, "priced"

    user_id = h.get("helicone-user-id")
    if user_id is None and request_json and isinstance(request_json.get("user"), str):
        user_id = request_json["user"]
    properties = {k[len(PROPERTY_PREFIX):]: v for k, v in h.items() if k.startswith(PROPERTY_PREFIX) and len(k) > len(PROPERTY_PREFIX)}

    stored_request = raw.request_body
    if h.get("helicone-omit-request") == "true":
        stored_request = orjson.dumps({"model": request_model})
    stored_response, stored_stream = response_body, None
    if h.get("helicone-omit-response") == "true":
        stored_response = orjson.dumps({"model": usage.model or request_model})
    elif raw.streamed:
        # Stored as Helicone does: the answer in the provider's non-stream shape; the SSE apart.
        stored_stream = pack(response_body)
        if (assembled := assemble_stream(response_body)) is not None:
            stored_response = orjson.dumps(assembled)

    return {
        "id": raw.id,
        "created_at": int(raw.created_at * 1000),
        "provider": raw.provider,
        "method": raw.method,
        "path": raw.path,
        "target_url": raw.target_url,
        "status": raw.status,
        "request_model": request_model,
        "response_model": usage.model,
        "model": model,
        "user_id": user_id,
        "session_id": h.get("helicone-session-id"),
        "session_path": h.get("helicone-session-path"),
        "session_name": h.get("helicone-session-name"),
        "request_name": h.get("helicone-request-name"),
        "properties": orjson.dumps(properties).decode(),
        "key_id": raw.key_id,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_cache_read_tokens": usage.cache_read_tokens,
        "prompt_cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": cost,
        "pricing_status": pricing_status,
        "latency_ms": round(raw.latency_ms, 3),
        "ttft_ms": None if raw.ttft_ms is None else round(raw.ttft_ms, 3),
        "gateway_overhead_ms": round(raw.gateway_overhead_ms, 3),
        "streamed": raw.streamed,
        "partial": raw.partial,
        "error": raw.error or (f"http_{raw.status}" if raw.status >= 400 else None),
        "cache_enabled": raw.cache_hit or h.get("helicone-cache-enabled", "").lower() == "true",
        "cache_reference_id": raw.cache_reference_id,
        "prompt_id": raw.prompt_id or h.get("helicone-prompt-id"),
        "prompt_version": raw.prompt_version,
        # Inputs are request content: omitted with the request body.
        "prompt_inputs": (orjson.dumps(raw.prompt_inputs).decode()
                          if raw.prompt_inputs is not None and h.get("helicone-omit-request") != "true" else None),
        "attempts": orjson.dumps(raw.attempts).decode(),
        "fallback_index": raw.fallback_index,
        "project_id": raw.project_id,
        "request_body": pack(stored_request),
        "response_body": pack(stored_response),
        "response_stream": stored_stream,
    }
