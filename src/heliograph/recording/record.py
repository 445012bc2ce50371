"""What the hot path hands to the recorder: raw facts, no parsing.

Everything costly (JSON parsing of bodies, usage extraction, pricing, compression) happens in
the recorder thread, from these fields.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class RawRecord:
    id: str
    created_at: float                 # epoch seconds at arrival
    provider: str
    family: str                       # "openai" | "anthropic": usage format
    method: str
    path: str                         # as received, key-in-path removed, with the query string
    target_url: str
    key_id: str | None
    helicone: dict[str, str]          # Helicone-* request headers (lower-cased names), auth excluded
    request_body: bytes
    status: int = 0
    response_body: bytes = b""
    response_encoding: str = ""       # upstream content-encoding; the bytes are kept as sent
    streamed: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    gateway_overhead_ms: float = 0.0
    partial: bool = False
    error: str | None = None          # error class: upstream_unavailable, upstream_timeout, client_disconnected, ...
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fallback_index: int | None = None
    cache_hit: bool = False
    cache_reference_id: str | None = None
    cost_override: float | None = None  # USD the caller stated (async logging's providerResponse.cost)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["request_body"] = base64.b64encode(self.request_body).decode()
        data["response_body"] = base64.b64encode(self.response_body).decode()
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, line: bytes) -> RawRecord:
        data = orjson.loads(line)
        data["request_body"] = base64.b64decode(data["request_body"])
        data["response_body"] = base64.b64decode(data["response_body"])
        return cls(**data)
