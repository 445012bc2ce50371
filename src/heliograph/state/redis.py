"""Redis state, shared by every `heliograph serve` process (plain Redis ≥ 7, no modules).

Keys, all under one prefix (default `heliograph:`):

    <prefix>c:<cache key>       exact-cache value, SET … EX <max-age>
    <prefix>v:<scope>           semantic index: a list, newest first, trimmed to N entries;
                                each entry = expiry (unix s, f64) + value key + float32 unit vector
    <prefix>rl:<bucket id>      token bucket: hash {t: tokens, u: updated at (server time)}

The bucket is updated by one Lua script (EVALSHA, loaded on first use), so concurrent processes
never over-admit. It reads the server's TIME, so processes on hosts with skewed clocks still share
one notion of "now". A bucket key expires once the bucket would be full again: an absent bucket
and a full one are the same thing.

Errors and timeouts raise `StateUnavailable`; the proxy fails open. The client retries once on a
broken connection (a pooled socket left over from a Redis restart) but never on a timeout, and the
timeouts are short, so a sick Redis costs a request at most about `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .base import Decision, StateUnavailable, best_match, decision, normalised

_BUCKET_SCRIPT = """
local capacity = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local updated = tonumber(state[2]) or now
if tokens == nil then
  tokens = capacity
elseif now > updated then
  tokens = math.min(capacity, tokens + (now - updated) * refill)
else
  tokens = math.min(capacity, tokens)
end
local allowed = 1
if ARGV[4] == 'charge' then
  tokens = tokens - cost
elseif cost > 0 then
  if tokens >= cost then tokens = tokens - cost else allowed = 0 end
elseif tokens <= 0 then
  allowed = 0
end
local full_ms = math.ceil((capacity - tokens) / refill * 1000)
if full_ms <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', string.format('%.17g', now))
  redis.call('PEXPIRE', KEYS[1], full_ms + 1000)
end
return {allowed, string.format('%.17g', tokens)}
"""

_ENTRY_HEAD = struct.Struct("<dH")       # expiry (unix seconds), length of the value key
_SWAP = sys.byteorder == "big"          # vectors are stored little-endian whatever the host


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        raise StateUnavailable(f"Redis: {exc or type(exc).__name__}") from exc


def connect(url: str, timeout: float = 1.0) -> Redis:
    """A pooled client; connects lazily, so nothing here touches the network. Replies stay bytes
    (no decode_responses): cached bodies and vectors are binary."""
    return Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))


class RedisCache:
    def __init__(self, client: Redis, prefix: str = "heliograph:", max_vectors_per_scope: int = 1_000) -> None:
        self._client = client
        self._values = prefix + "c:"
        self._vectors = prefix + "v:"
        self.max_vectors_per_scope = max_vectors_per_scope

    async def get(self, key: str) -> bytes | None:
        with _unavailable():
            value = await self._client.get(self._values + key)
        return cast("bytes | None", value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with _unavailable():
            values = await self._client.mget([self._values + k for k in keys])
        return cast("list[bytes | None]", values)

    async def set(self, key: str, value: bytes, ttl_seconds: int, *, only_if_absent: bool = False) -> bool:
        if ttl_seconds <= 0:
            return False
        with _unavailable():
            written = await self._client.set(self._values + key, value, ex=ttl_seconds, nx=only_if_absent)
        return bool(written)

    async def nearest(self, scope: str, vector: Sequence[float], threshold: float) -> tuple[str, float] | None:
        query = normalised(vector)
        with _unavailable():
            raw = await self._client.lrange(self._vectors + scope, 0, -1)
        return await best_match(query, _decode_live(cast("list[bytes]", raw), time.time()), threshold)

    async def add_vector(self, scope: str, vector: Sequence[float], value_key: str, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        key = self._vectors + scope
        entry = _encode(normalised(vector), value_key, time.time() + ttl_seconds)
        with _unavailable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, entry)
                pipe.ltrim(key, 0, self.max_vectors_per_scope - 1)
                # The list lives as long as its longest-lived entry: set a TTL on a new list (NX),
                # extend it for a longer-lived entry (GT), never shorten it.
                pipe.expire(key, ttl_seconds, nx=True)
                pipe.expire(key, ttl_seconds, gt=True)
                await pipe.execute()


def _encode(vector: array[float], value_key: str, expires_at: float) -> bytes:
    name = value_key.encode()
    if _SWAP:
        vector = array("f", vector)
        vector.byteswap()
    return _ENTRY_HEAD.pack(expires_at, len(name)) + name + vector.tobytes()


def _decode_live(raw: list[bytes], now: float) -> Iterator[tuple[array[float], str]]:
    for entry in raw:
        expires_at, length = _ENTRY_HEAD.unpack_from(entry)
        if expires_at <= now:
            continue
        start = _ENTRY_HEAD.size + length
        vector = array("f")
        vector.frombytes(entry[start:])
        if _SWAP:
            vector.byteswap()
        yield vector, entry[_ENTRY_HEAD.size:start].decode()


class RedisRateLimiter:
    def __init__(self, client: Redis, prefix: str = "heliograph:") -> None:
        self._prefix = prefix + "rl:"
        self._script = client.register_script(_BUCKET_SCRIPT)

    async def take(self, bucket_id: str, capacity: float, refill_per_second: float, cost: float) -> Decision:
        return await self._run(bucket_id, capacity, refill_per_second, cost, "take")

    async def charge(self, bucket_id: str, capacity: float, refill_per_second: float, amount: float) -> Decision:
        return await self._run(bucket_id, capacity, refill_per_second, amount, "charge")

    async def _run(self, bucket_id: str, capacity: float, refill: float, cost: float, mode: str) -> Decision:
        if capacity <= 0 or refill <= 0:
            raise ValueError("capacity and refill rate must be positive")
        with _unavailable():
            # repr() keeps every bit of the float; Lua's tonumber reads it back exactly.
            allowed, tokens = await self._script(
                keys=[self._prefix + bucket_id], args=[repr(capacity), repr(refill), repr(cost), mode])
        return decision(bool(allowed), float(tokens), capacity, refill, cost)
