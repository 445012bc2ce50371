"""The state protocols the proxy talks to, and the logic shared by every backend.

`Cache` holds exact-cache entries (bytes under a key, with a TTL) and the semantic index
(normalised vectors pointing at exact-cache keys, per scope, bounded: see vectors.py). `RateLimiter` holds token
buckets. `BudgetCounters` holds the spend of each budget in its current period. Every backend error surfaces as `StateUnavailable`, the one exception the proxy catches
to fail open: a cache error is a miss, a limiter error lets the request through without headers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class StateUnavailable(Exception):
    """The state backend (Redis) failed or timed out; the caller fails open."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: float              # tokens left after this call; negative after a cents overspend
    reset_seconds: float          # until the bucket is full again
    retry_after_seconds: float    # until this call would be allowed; 0 when allowed


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One round trip for all slots of a bucket."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: int, *, only_if_absent: bool = False) -> bool:
        """Store with a TTL (> 0). With only_if_absent, True only if this call wrote the key."""
        ...

    async def nearest(self, scope: str, vector: Sequence[float], threshold: float) -> tuple[str, float] | None:
        """The value key of the most similar live vector in scope with cosine ≥ threshold."""
        ...

    async def add_vector(self, scope: str, vector: Sequence[float], value_key: str, ttl_seconds: int) -> None: ...


class RateLimiter(Protocol):
    async def take(self, bucket_id: str, capacity: float, refill_per_second: float, cost: float) -> Decision:
        """Refill, then atomically: cost > 0 → allowed iff tokens ≥ cost, and only then deduct;
        cost == 0 → the cents pre-check, allowed iff tokens > 0, nothing deducted."""
        ...

    async def charge(self, bucket_id: str, capacity: float, refill_per_second: float, amount: float) -> Decision:
        """Refill, then deduct `amount` unconditionally; the balance may go negative."""
        ...


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    key: str                      # one budget's counter in one period
    amount: float                 # micro-USD to add
    seed: float                   # micro-USD the counter starts from if absent (the spend recorded so far)
    expires_at: float             # epoch seconds: the counter is forgotten then (its period is over)


class BudgetCounters(Protocol):
    async def read(self, keys: Sequence[str]) -> list[float | None]:
        """Micro-USD spent per counter; None for a counter never charged or expired. One round trip."""
        ...

    async def add(self, charges: Sequence[BudgetCharge]) -> list[float]:
        """Per charge, atomically: an absent counter starts at `seed`, then `amount` is added and the
        counter expires at `expires_at`. The new values; one round trip for all."""
        ...


# --- exact-cache buckets (contract §4.3) -------------------------------------------------------

async def lookup(cache: Cache, key_for: Callable[[int], str], max_size: int,
                 rng: random.Random | None = None) -> tuple[bytes, int] | None:
    """(value, slot index) when all `max_size` slots are filled, one picked uniformly; else None.

    A bucket answers only once full, so the first `max_size` identical calls reach the provider
    and the answers vary afterwards; size 1 is plain replay.
    """
    values = await cache.get_many([key_for(i) for i in range(max_size)])
    filled = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(filled) < max_size:
        return None
    return (rng or random).choice(filled)


async def store(cache: Cache, key_for: Callable[[int], str], max_size: int, value: bytes,
                ttl_seconds: int) -> int | None:
    """Write into the lowest empty slot; the slot index, or None when full (or TTL is 0).

    `only_if_absent` makes concurrent misses of one request land in different slots instead
    of overwriting each other.
    """
    if ttl_seconds <= 0:
        return None
    keys = [key_for(i) for i in range(max_size)]
    values = await cache.get_many(keys)
    for index, existing in enumerate(values):
        if existing is None and await cache.set(keys[index], value, ttl_seconds, only_if_absent=True):
            return index
    return None


# --- token bucket arithmetic (contract §5.3), mirrored by the Redis Lua script ---------------

def bucket_step(tokens: float | None, updated: float, now: float, capacity: float, refill: float,
                cost: float, charge: bool) -> tuple[float, Decision]:
    """New token count and the decision. `tokens=None` is a bucket never seen (starts full)."""
    if tokens is None:
        tokens = capacity
    elif now > updated:
        tokens = min(capacity, tokens + (now - updated) * refill)
    else:
        tokens = min(capacity, tokens)      # a lowered capacity clamps even without refill
    allowed = True
    if charge:
        tokens -= cost
    elif cost > 0:
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
    else:
        allowed = tokens > 0
    return tokens, decision(allowed, tokens, capacity, refill, cost)


def decision(allowed: bool, tokens: float, capacity: float, refill: float, cost: float) -> Decision:
    reset = max(0.0, (capacity - tokens) / refill)
    retry = 0.0 if allowed else max(0.0, (cost - tokens) / refill)
    return Decision(allowed, tokens, reset, retry)


def full_after(tokens: float, capacity: float, refill: float) -> float:
    """Seconds until the bucket is full, i.e. until forgetting it changes nothing."""
    return max(0.0, (capacity - tokens) / refill)
