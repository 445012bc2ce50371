"""Shared state for caching, rate limits and budget spend: in-process by default, Redis to scale out.

    base.py     Cache, RateLimiter and BudgetCounters protocols, Decision, StateUnavailable; the bucket-slot
                logic (`lookup`, `store`) and token-bucket arithmetic shared by backends
    memory.py   one process: bounded LRU + TTL, no locks (one event loop)
    redis.py    many processes: one atomic Lua script per bucket update, SET EX for values,
                a stream per semantic scope that each process reads incrementally
    vectors.py  the semantic index each process holds: numpy matrices, bounded, LRU by scope

`open_state(url)` picks the backend once at start-up; the proxy only sees the protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import BudgetCharge, BudgetCounters, Cache, Decision, RateLimiter, StateUnavailable, lookup, store
from .memory import MemoryBudgetCounters, MemoryCache, MemoryRateLimiter
from .vectors import MAX_VECTORS, MAX_VECTORS_PER_SCOPE

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BudgetCharge", "BudgetCounters", "Cache", "Decision", "RateLimiter", "State", "StateUnavailable", "lookup",
           "open_state", "store"]


@dataclass(slots=True)
class State:
    cache: Cache
    limiter: RateLimiter
    backend: str                      # "memory" or "redis", for logs and /readyz
    client: Redis | None = None
    budgets: BudgetCounters = field(default_factory=MemoryBudgetCounters)   # spend per budget and period

    async def check(self) -> None:
        """Raise StateUnavailable unless the backend answers (start-up and readiness checks)."""
        if self.client is not None:
            from .redis import _unavailable
            with _unavailable():
                await self.client.ping()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def open_state(redis_url: str | None, *, key_prefix: str = "heliograph:", timeout: float = 0.1,
               cache_max_entries: int = 10_000, cache_max_bytes: int = 256 * 1024 * 1024,
               max_vectors_per_scope: int = MAX_VECTORS_PER_SCOPE, max_vectors: int = MAX_VECTORS) -> State:
    """Memory state without a URL, Redis state with one. Does no I/O: call `check()` for that.

    `timeout` (seconds) bounds every Redis connect, read and write: past it the operation raises
    StateUnavailable and the proxy fails open.
    """
    if not redis_url:
        return State(MemoryCache(cache_max_entries, cache_max_bytes, max_vectors_per_scope, max_vectors),
                     MemoryRateLimiter(), "memory")
    # Imported here: a single-process deployment never pays for loading redis-py.
    from .redis import RedisBudgetCounters, RedisCache, RedisRateLimiter, connect
    client = connect(redis_url, timeout)
    return State(RedisCache(client, key_prefix, max_vectors_per_scope, max_vectors),
                 RedisRateLimiter(client, key_prefix), "redis", client, RedisBudgetCounters(client, key_prefix))
