"""A stored row, rendered with Helicone's field names (plus Heliograph's own)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from ..bodies import unpack


SESSION_HEADERS = (("Helicone-Session-Id", "session_id"), ("Helicone-Session-Path", "session_path"),
                   ("Helicone-Session-Name", "session_name"))


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(blob: bytes | None) -> Any:
    if blob is None:
        return None
    text = unpack(blob)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.decode("utf-8", "replace")


def _text(blob: bytes | None) -> str | None:
    return None if blob is None else unpack(blob).decode("utf-8", "replace")


def render_request(row: dict[str, Any], *, raw_stream: bool = False) -> dict[str, Any]:
    """`row` as the store returns it: a `requests` row, bodies if fetched, and `scores`.

    `raw_stream` adds `response_stream`: a streamed answer's SSE as received (null otherwise);
    `response_body` then holds that answer assembled in the provider's non-stream shape."""
    properties = orjson.loads(row["properties"])
    # As Helicone stores them: the session headers ride in the properties map (not as analytics
    # property dimensions: those come from request_properties, which never holds them).
    for header, column in SESSION_HEADERS:
        if row.get(column) is not None:
            properties[header] = row[column]
    record = {
        "request_id": row["id"],
        "request_created_at": iso(row["created_at"]),
        "response_created_at": iso(row["created_at"] + int(row["latency_ms"])),
        "request_path": row["path"],
        "target_url": row["target_url"],
        "request_method": row["method"],
        "request_user_id": row["user_id"],
        "request_model": row["request_model"],
        "response_model": row["response_model"],
        "model": row["model"],
        "request_properties": properties,
        "properties": properties,
        "request_body": _body(row.get("request_body")),
        "response_body": _body(row.get("response_body")),
        "response_status": row["status"],
        "provider": row["provider"],
        "delay_ms": row["latency_ms"],
        "time_to_first_token": row["ttft_ms"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["total_tokens"],
        "prompt_cache_read_tokens": row["prompt_cache_read_tokens"],
        "prompt_cache_write_tokens": row["prompt_cache_write_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "cost": row["cost"],
        "pricing_status": row["pricing_status"],
        "prompt_id": row["prompt_id"],
        "prompt_version": row["prompt_version"],
        "prompt_inputs": orjson.loads(row["prompt_inputs"]) if row.get("prompt_inputs") else None,
        "scores": row.get("scores") or {},
        "cache_enabled": bool(row["cache_enabled"]),
        "cache_reference_id": row["cache_reference_id"],
        "request_name": row["request_name"],
        "session_id": row["session_id"],
        "session_path": row["session_path"],
        "session_name": row["session_name"],
        "streamed": bool(row["streamed"]),
        "partial": bool(row["partial"]),
        "error": row["error"],
        "attempts": orjson.loads(row["attempts"]),
        "fallback_index": row["fallback_index"],
        "gateway_overhead_ms": row["gateway_overhead_ms"],
        "key_id": row["key_id"],
        "project_id": row["project_id"],
    }
    if raw_stream:
        record["response_stream"] = _text(row.get("response_stream"))
    return record
