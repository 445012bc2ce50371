"""What the hot path hands to the recorder: raw facts, no parsing.

Everything costly (JSON parsing of bodies, usage extraction, pricing, compression) happens where
the recorder writes, from these fields: its writer process (writer.py), or its thread.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


MAX_SESSION_DEPTH = 64      # segments of Helicone-Session-Path; a session tree is rendered as nested JSON
MAX_PROPERTIES = 100        # Helicone-Property-* headers on one call


def helicone_problem(helicone: dict[str, str]) -> str | None:
    """What makes these Helicone-* headers unrecordable, in words; None when they are fine."""
    path = helicone.get("helicone-session-path")
    if path is not None and sum(1 for part in path.split("/") if part) > MAX_SESSION_DEPTH:
        return f"Helicone-Session-Path has more than {MAX_SESSION_DEPTH} segments"
    if sum(1 for name in helicone if name.startswith("helicone-property-")) > MAX_PROPERTIES:
        return f"more than {MAX_PROPERTIES} Helicone-Property-* headers on one call"
    return None


# Query parameters that carry credentials (Gemini's `?key=`, Azure SAS `sig`, OAuth tokens): their
# values never reach a record, the journal or a log.
CREDENTIAL_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "x-api-key", "access_token", "token",
                               "auth", "sig", "signature", "password", "secret", "client_secret"})
# Helicone-* headers that may hold credentials (Helicone-Fallbacks carries each alternative's headers).
UNRECORDED_HEADERS = ("helicone-auth", "helicone-fallbacks")


def redact_url(url: str) -> str:
    """`url` with credential query values and any user:password@ replaced by `REDACTED`."""
    if "@" in url.split("?", 1)[0]:
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.partition("@")
        if at and "/" not in userinfo:
            url = f"{scheme}{sep}REDACTED@{host}"
    base, question, query = url.partition("?")
    if not question:
        return url
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        pairs.append(f"{name}=REDACTED" if equals and unquote(name).lower() in CREDENTIAL_PARAMS else pair)
    return f"{base}?{'&'.join(pairs)}"


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
    project_id: str = "default"         # the key's project: every record belongs to one
    prompt_id: str | None = None        # a rendered prompt's id (from the header or the body's prompt_id)
    prompt_version: str | None = None   # and the version id it was rendered from
    prompt_inputs: dict[str, Any] | None = None   # the variables it was rendered with
    trace: str | None = None            # "<trace id>-<our span id>-<client's span id or ''>-<flags>" when tracing
    observed: bool = False              # the recorder's observer has seen it (metrics count a call once)

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
