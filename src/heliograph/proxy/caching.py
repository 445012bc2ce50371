"""Response caching around the forward stage: exact (Helicone's key) and, opt-in, semantic.

A stored entry is one JSON line (original request id, status, headers, upstream latency,
streamed flag, embedded similarity scope) followed by the upstream body bytes exactly as received.
A hit replays those bytes — an SSE stream comes back as the same SSE bytes — with the usage-only
chunk cut when this client did not ask for it, like a live stream. Only complete 200 answers in
the client's own API format are stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..controls.cache import CacheSettings, cache_key_fn, parse_cache_settings, semantic_request
from ..errors import BadRequest
from ..recording.record import RawRecord
from ..state import Cache, StateUnavailable, lookup, store
from .sse import without_usage_chunk

log = logging.getLogger("heliograph.cache")

EMBEDDING_DIMENSIONS = 256   # enough to tell paraphrases apart; keeps the similarity scan cheap
NOT_REPLAYED = frozenset({b"content-length", b"helicone-id", b"server-timing", b"date"})


@dataclass(slots=True)
class CachePlan:
    settings: CacheSettings
    key_for: Callable[[int], str]
    scope: str | None = None                 # semantic scope, when semantic caching is on
    vector: list[float] | None = None
    text: str | None = None                  # what was embedded, kept with the entry for the guard
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Hit:
    entry: dict[str, Any]
    body: bytes
    bucket_index: int | None
    similarity: float | None


class Embedder:
    """Embeddings from an OpenAI-compatible provider, through the same upstream as everything else."""

    def __init__(self, origin: str, model: str, key: str | None) -> None:
        self.url = origin + "/v1/embeddings"
        self.model = model
        self.key = key

    async def embed(self, session: aiohttp.ClientSession, text: str, credential: str | None) -> list[float]:
        secret = credential or (f"Bearer {self.key}" if self.key else None)
        if secret is None:
            raise BadRequest("Semantic caching needs an embeddings key: send the provider's Authorization header, "
                             "set HELIOGRAPH_PROVIDER_KEY_OPENAI, or store an OpenAI key for the project "
                             "('heliograph provider-keys set --provider openai').")
        body = orjson.dumps({"model": self.model, "input": text, "dimensions": EMBEDDING_DIMENSIONS,
                             "encoding_format": "float"})
        # Any failure here makes the lookup a miss: the call itself can still be answered.
        try:
            async with session.post(self.url, data=body, headers={"authorization": secret,
                                                                  "content-type": "application/json"}) as response:
                payload = await response.read()
                if response.status != 200:
                    raise StateUnavailable(f"embeddings answered {response.status}")
            vector = orjson.loads(payload)["data"][0]["embedding"]
            return [float(x) for x in vector]
        except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError, KeyError, IndexError,
                TypeError, ValueError) as exc:
            raise StateUnavailable(f"embeddings failed: {type(exc).__name__}: {exc}") from None


_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")
_WORDS = re.compile(r"[a-z']+")
_NEGATIONS = frozenset({"not", "no", "never", "none", "nor", "nothing", "without", "cannot", "unsafe", "isn't",
                        "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't", "won't", "can't", "shouldn't",
                        "wouldn't", "couldn't", "hasn't", "haven't"})


def same_facts(stored: str, asked: str) -> bool:
    """Similar wording is not enough: the numbers and negations must be the same too.

    Embeddings place "is raw chicken safe" next to "is raw chicken unsafe" and "February 2024"
    next to "February 2023"; bench/semantic found this guard removes about half the false hits
    a threshold lets through, at the cost of almost no true ones.
    """
    def facts(text: str) -> tuple[list[str], list[str]]:
        lowered = text.lower()
        return _NUMBERS.findall(lowered), sorted(w for w in _WORDS.findall(lowered) if w in _NEGATIONS)
    return facts(stored) == facts(asked)


def wants_cache(helicone: Mapping[str, str]) -> bool:
    return any(name.startswith("helicone-cache") for name in helicone)


def plan(headers: Mapping[str, str], url: str, body: bytes) -> CachePlan | None:
    settings = parse_cache_settings(headers)
    if settings is None:
        return None
    return CachePlan(settings, cache_key_fn(settings, url, body, headers))


async def find(cache: Cache, cache_plan: CachePlan, embed: Callable[[str], Awaitable[list[float]]] | None,
               url: str, body: bytes, headers: Mapping[str, str]) -> Hit | None:
    settings = cache_plan.settings
    try:
        found = await lookup(cache, cache_plan.key_for, settings.bucket_max_size)
        if found is not None:
            value, index = found
            return _hit(value, index, None)
        if not settings.semantic or embed is None:
            return None
        request = semantic_request(settings, url, body, headers)
        if request is None:
            return None
        vector = await embed(request.text)
        cache_plan.scope, cache_plan.vector, cache_plan.text = request.scope, vector, request.text
        near = await cache.nearest(request.scope, vector, settings.similarity)
        if near is None:
            return None
        value_key, similarity = near
        stored = await cache.get(value_key)
        if stored is None:
            return None
        hit = _hit(stored, None, similarity)
        return hit if same_facts(str(hit.entry.get("semantic_text", "")), request.text) else None
    except StateUnavailable as exc:
        log.warning("cache unavailable, treating as a miss: %s", exc)
        return None


def _hit(value: bytes, index: int | None, similarity: float | None) -> Hit:
    head, _, body = value.partition(b"\n")
    return Hit(orjson.loads(head), body, index, similarity)


def replay(hit: Hit, record: RawRecord, strip_usage: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The stored answer's headers and body for this client, and the record of the hit."""
    entry = hit.entry
    streamed = bool(entry["streamed"])
    body = hit.body
    if streamed and strip_usage:
        body, rest = without_usage_chunk(body)
        body += rest
    base = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in entry["headers"]]
    base += [
        (b"helicone-cache", b"HIT"),
        (b"helicone-cache-hit", b"true"),
        (b"helicone-cache-latency", str(round(float(entry["latency_ms"]))).encode()),
    ]
    if hit.bucket_index is not None:
        base.append((b"helicone-cache-bucket-idx", str(hit.bucket_index).encode()))
    if hit.similarity is not None:
        base.append((b"helicone-cache-similarity", f"{hit.similarity:.4f}".encode()))
    if not streamed:
        base.append((b"content-length", str(len(body)).encode()))
    record.status = 200
    record.cache_hit = True
    record.cache_reference_id = str(entry["id"])
    record.streamed = streamed
    record.response_body = hit.body
    record.response_encoding = str(entry.get("encoding") or "")
    return base, body


async def save(cache: Cache, cache_plan: CachePlan, record: RawRecord,
               upstream_headers: list[tuple[bytes, bytes]]) -> None:
    settings = cache_plan.settings
    if not settings.save or record.status != 200 or record.partial or record.error or settings.max_age <= 0:
        return
    entry = {
        "id": record.id, "status": 200, "latency_ms": round(record.latency_ms, 3), "streamed": record.streamed,
        "encoding": record.response_encoding,
        "semantic_text": cache_plan.text,
        "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream_headers
                    if k.lower() not in NOT_REPLAYED],
    }
    value = orjson.dumps(entry) + b"\n" + record.response_body
    try:
        index = await store(cache, cache_plan.key_for, settings.bucket_max_size, value, settings.max_age)
        if index is not None and cache_plan.scope is not None and cache_plan.vector is not None:
            await cache.add_vector(cache_plan.scope, cache_plan.vector, cache_plan.key_for(index), settings.max_age)
    except StateUnavailable as exc:
        log.warning("cache unavailable, answer not stored: %s", exc)
