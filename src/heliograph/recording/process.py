"""Turn a RawRecord into a stored row: parse, extract usage, price, assemble streams, omit, compress.

Runs where the recorder writes (its writer process, or its thread), never on the request path.
`local_write` is the recorder's write done in this process: rows built, then stored.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit
from typing import Any

import orjson

from ..bodies import pack
from ..pricing import PriceOverride, billable, price
from ..usage import extract_usage
from .assemble import assemble_stream
from .record import RawRecord

log = logging.getLogger("heliograph.recorder")

PROPERTY_PREFIX = "helicone-property-"

# Stores rows, calling the give-way (GiveWay) as it goes where it can; returns the (old, new) ids of
# rows stored under a fresh id (their id was taken). Store.insert_requests is one.
Insert = Callable[[Sequence[Mapping[str, Any]], "Callable[[], None] | None"], "list[tuple[str, str]] | None"]


@dataclass(slots=True)
class Written:
    """A batch built into rows and handed to the store: what the recorder needs back, wherever the
    work was done. `failure` is the store's error (raised by the recorder once the observer has seen
    the rows, so access lines and metrics do not wait for a store that is down)."""

    rows: list[Mapping[str, Any]]               # one per record, for the observer (bodies may be left out)
    reassigned: list[tuple[str, str]] = field(default_factory=list)
    internal_errors: int = 0                    # records that could not be parsed (stored with what the hot path knew)
    clamped: int = 0                            # records with numbers out of range (stored clamped)
    failure: Exception | None = None


Write = Callable[[Sequence[RawRecord]], Written]

GIVE_WAY_S = 0.01     # how long into a batch its writer gives way to whatever waits for the core


class GiveWay:
    """Called between pieces of a batch's work (before each record's row and access line, and every
    few hundred SQLite steps): for the batch's first 10 ms it yields the CPU, the GIL free
    meanwhile; after that it does nothing, and the batch runs on at its full share.

    A writer sleeps most of the time, so when a batch wakes it the kernel lets it run the whole
    batch before a woken event loop (the recorder thread on the loop's core), or before the
    processes sharing the writer process's core. A call arriving then waited for the batch: one
    core at 500 req/s, p99 3.1-3.6 ms, and 1.0-1.4 ms when giving way; gateway core + writer core,
    2.2-2.4 ms against 0.9-1.1 (issue 14). Past the first 10 ms a writer beside a saturated loop
    still keeps up (yielding throughout, 9 % of a wrk step's rows were stored by its end, not 98 %)."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = 0.0

    def begin(self) -> None:
        """A batch starts."""
        self._until = time.monotonic() + GIVE_WAY_S

    def __call__(self) -> None:
        if time.monotonic() < self._until:
            os.sched_yield()



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


# Bounds of a stored number. Rollups add records up in 64-bit integers (nano-USD, µs, tokens),
# so one absurd value from an upstream or an async-log caller would make every later batch that
# touches its rollup row unwritable. No real call comes near these; beyond them a value is clamped
# (a cost beyond them is dropped: the call is then `unpriced`, never a made-up figure).
MAX_TOKENS = 2**40                  # ~10^12 tokens
MAX_COST_USD = 1_000_000.0
MAX_MS = 10**10                     # ~116 days
BOUNDS: dict[str, float] = {
    "status": 999, "fallback_index": 1_000, "created_at": 2**53,
    "prompt_tokens": MAX_TOKENS, "completion_tokens": MAX_TOKENS, "total_tokens": MAX_TOKENS,
    "prompt_cache_read_tokens": MAX_TOKENS, "prompt_cache_write_tokens": MAX_TOKENS, "reasoning_tokens": MAX_TOKENS,
    "cost": MAX_COST_USD, "latency_ms": MAX_MS, "ttft_ms": MAX_MS, "gateway_overhead_ms": MAX_MS,
}
FLOATS = frozenset({"cost", "latency_ms", "ttft_ms", "gateway_overhead_ms"})
NUMBERS = (int, float)      # exactly, one check: a bool is not a number here


def clamp_numbers(row: dict[str, Any]) -> bool:
    """Bring every number of the row within BOUNDS; whether anything changed."""
    changed = False
    for column, bound in BOUNDS.items():
        value = row.get(column)
        if value is None:
            continue
        number = value if value.__class__ in NUMBERS else float("nan")
        if 0 <= number <= bound:
            continue
        changed = True
        if column == "cost":
            row["cost"], row["pricing_status"] = None, "unpriced"
        elif number != number:      # NaN, or not a number at all
            row[column] = None if column != "latency_ms" else 0.0
        else:
            clamped = min(max(number, 0), bound)
            row[column] = float(clamped) if column in FLOATS else int(clamped)
    return changed


def build_rows(batch: Sequence[RawRecord], overrides: Mapping[str, PriceOverride],
               give_way: Callable[[], None] | None = None) -> Written:
    """The rows of a batch (no store yet). A record we cannot parse is still stored, with what the
    hot path knew; numbers out of range are clamped (both logged and counted). `give_way` is
    called before each record (GiveWay)."""
    written = Written([])
    for record in batch:
        if give_way is not None:
            give_way()
        try:
            row = to_row(record, overrides)
        except Exception:
            written.internal_errors += 1
            log.exception("could not process record %s", record.id)
            record.response_body = b""
            record.request_body = b""
            row = to_row(record, overrides)
        if clamp_numbers(row):
            written.clamped += 1
            log.error("record %s had numbers out of range (tokens, cost or times); stored clamped", record.id)
        written.rows.append(row)
    return written


def local_write(insert: Insert, overrides: Mapping[str, PriceOverride],
                give_way: Callable[[], None] | None = None) -> Write:
    """The recorder's write done here: rows built, then `insert`ed (the store's error in `failure`),
    both giving way as they go."""
    def write(batch: Sequence[RawRecord]) -> Written:
        written = build_rows(batch, overrides, give_way)
        try:
            written.reassigned = insert(written.rows, give_way) or []
        except Exception as exc:
            written.failure = exc
        return written
    return write
