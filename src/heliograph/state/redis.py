"""Redis state, shared by every `heliograph serve` process (plain Redis ≥ 7, no modules).

Keys, all under one prefix (default `heliograph:`):

    <prefix>c:<cache key>       exact-cache value, SET … EX <max-age>
    <prefix>vs:<scope>          semantic index: a stream trimmed to the newest N entries (XADD
                                MAXLEN N), one field `e` = expiry (unix s, f64) + value key +
                                float32 unit vector (~1.1 KiB at 256 dimensions)
    <prefix>rl:<bucket id>      token bucket: hash {t: tokens, u: updated at (server time)}
    <prefix>bg:<budget>:<start> a budget's spend in one period, micro-USD (INCRBYFLOAT), expiring
                                when the period ends (PEXPIREAT)

Each process keeps its own copy of the vectors it looks up in (vectors.py: numpy, bounded per scope
and per process) and, before each lookup, reads only the stream entries after the last id it has
applied (XRANGE exclusive of it): usually none, so a lookup is one small round trip and one
matrix-vector product, not a download of the scope. A scope is read whole, in pages, only the first
time a process looks in it (or after it dropped the scope to stay within its bounds).

The bucket is updated by one Lua script (EVALSHA, loaded on first use), so concurrent processes
never over-admit. It reads the server's TIME, so processes on hosts with skewed clocks still share
one notion of "now". A bucket key expires once the bucket would be full again: an absent bucket
and a full one are the same thing.

Errors and timeouts raise `StateUnavailable`; the proxy fails open. The client retries once on a
broken connection (a pooled socket left over from a Redis restart) but never on a timeout, and the
timeouts are short (`redis_timeout_ms`, 100 ms by default: Redis on the same network answers in well
under 1 ms), so a sick or unreachable Redis costs each state operation at most about `timeout`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .base import BudgetCharge, Decision, StateUnavailable, decision
from .vectors import MAX_VECTORS, MAX_VECTORS_PER_SCOPE, Vector, VectorIndex, unit_vector

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

# Budget charges: per key, an absent counter starts at its seed (the spend the store recorded),
# then the amount is added; all counters of one call in one script, so one round trip.
_CHARGE_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then redis.call('SET', key, ARGV[3 * i - 1]) end
  out[i] = redis.call('INCRBYFLOAT', key, ARGV[3 * i - 2])
  redis.call('PEXPIREAT', key, ARGV[3 * i])
end
return out
"""

# The entries of a stream after an id (exclusive), packed into one string so a page of a thousand
# entries is one reply to parse, not five thousand: per entry a big-endian u16 id length and u32
# value length, then the id and the value of field `e`.
_READ_SCRIPT = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local out = {}
for i, entry in ipairs(entries) do
  local fields, value = entry[2], ''
  for j = 1, #fields, 2 do
    if fields[j] == 'e' then value = fields[j + 1] end
  end
  out[i] = struct.pack('>I2I4', #entry[1], #value) .. entry[1] .. value
end
return {#entries, table.concat(out)}
"""

_ITEM_HEAD = struct.Struct(">HI")       # id length, value length: the packing of _READ_SCRIPT
_ENTRY_HEAD = struct.Struct("<dH")      # expiry (unix seconds), length of the value key
_PAGE = 1_000                           # stream entries per read (~1.1 MB at 256 dimensions)


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:     # redis's TimeoutError is a RedisError; asyncio's an OSError
        raise StateUnavailable(f"Redis: {exc or type(exc).__name__}") from exc


def connect(url: str, timeout: float = 0.1) -> Redis:
    """A pooled client; connects lazily, so nothing here touches the network. Replies stay bytes
    (no decode_responses): cached bodies and vectors are binary."""
    return Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))


class RedisCache:
    def __init__(self, client: Redis, prefix: str = "heliograph:",
                 max_vectors_per_scope: int = MAX_VECTORS_PER_SCOPE, max_vectors: int = MAX_VECTORS) -> None:
        self._client = client
        self._values = prefix + "c:"
        self._streams = prefix + "vs:"
        self.vectors = VectorIndex(max_vectors_per_scope, max_vectors)     # this process's copy
        self.max_vectors_per_scope = self.vectors.max_vectors_per_scope
        self._read = client.register_script(_READ_SCRIPT)

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
        query = unit_vector(vector)
        await self._sync(scope)
        return self.vectors.nearest(scope, query, threshold, time.time())

    async def add_vector(self, scope: str, vector: Sequence[float], value_key: str, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        key = self._streams + scope
        entry = _encode(unit_vector(vector), value_key, time.time() + ttl_seconds)
        # Not added to this process's copy here: the next lookup reads it back with everyone else's,
        # in stream order, so every process's copy holds the same newest N.
        with _unavailable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(key, {b"e": entry}, maxlen=self.max_vectors_per_scope, approximate=False)
                # The stream lives as long as its longest-lived entry: set a TTL on a new one (NX),
                # extend it for a longer-lived entry (GT), never shorten it.
                pipe.expire(key, ttl_seconds, nx=True)
                pipe.expire(key, ttl_seconds, gt=True)
                await pipe.execute()

    async def _sync(self, scope: str) -> None:
        """Apply the entries stored (by any process) since the last one this process applied."""
        key = self._streams + scope
        after = self.vectors.cursor(scope)
        while True:
            with _unavailable():
                count, packed = await self._read(keys=[key], args=[f"({after[0]}-{after[1]}", _PAGE])
            now = time.time()
            for raw_id, value in _unpack(memoryview(packed)):
                entry_id = _entry_id(raw_id)
                after = max(after, entry_id)
                if entry_id <= self.vectors.cursor(scope):
                    continue            # a concurrent lookup in this process applied it meanwhile
                decoded = _decode(value)
                if decoded is not None and decoded[2] > now:
                    self.vectors.add(scope, *decoded)
                self.vectors.advance(scope, entry_id)
            if count < _PAGE:
                return


def _unpack(packed: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    offset = 0
    while offset < len(packed):
        id_length, value_length = _ITEM_HEAD.unpack_from(packed, offset)
        offset += _ITEM_HEAD.size + id_length
        yield packed[offset - id_length:offset].tobytes(), packed[offset:offset + value_length]
        offset += value_length


def _entry_id(raw: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = raw.partition(b"-")
    return int(milliseconds), int(sequence)


def _encode(vector: Vector, value_key: str, expires_at: float) -> bytes:
    name = value_key.encode()
    # little-endian whatever the host, so processes on any machine share the stream
    return _ENTRY_HEAD.pack(expires_at, len(name)) + name + vector.astype("<f4").tobytes()


def _decode(entry: memoryview) -> tuple[Vector, str, float] | None:
    """(unit vector, value key, expires at), or None for an entry this version cannot read."""
    if len(entry) < _ENTRY_HEAD.size:
        return None
    expires_at, length = _ENTRY_HEAD.unpack_from(entry)
    start = _ENTRY_HEAD.size + length
    size = len(entry) - start
    if size <= 0 or size % 4:
        return None
    vector = np.frombuffer(entry, dtype="<f4", offset=start).astype(np.float32)
    return vector, bytes(entry[_ENTRY_HEAD.size:start]).decode(errors="replace"), float(expires_at)


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


class RedisBudgetCounters:
    def __init__(self, client: Redis, prefix: str = "heliograph:") -> None:
        self._client = client
        self._prefix = prefix + "bg:"
        self._script = client.register_script(_CHARGE_SCRIPT)

    async def read(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        with _unavailable():
            values = await self._client.mget([self._prefix + key for key in keys])
        return [None if value is None else float(value) for value in values]

    async def add(self, charges: Sequence[BudgetCharge]) -> list[float]:
        if not charges:
            return []
        args: list[str] = []
        for charge in charges:
            args += [repr(float(charge.amount)), repr(float(charge.seed)), str(int(charge.expires_at * 1000))]
        with _unavailable():
            values = await self._script(keys=[self._prefix + c.key for c in charges], args=args)
        return [float(value) for value in values]
