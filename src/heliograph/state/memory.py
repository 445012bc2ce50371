"""In-process state for a single `heliograph serve` process: bounded, LRU, TTL.

Everything runs on the one event loop, so there are no locks: each method finishes its
read-modify-write without awaiting, which is what makes `take` atomic here. Bounds are by count
and bytes, so memory stays flat whatever the traffic; eviction only ever loses cache entries or
forgets a bucket's deficit (that bucket starts full again: fail-open, never over-strict).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .base import BudgetCharge, Decision, bucket_step, full_after
from .vectors import MAX_VECTORS, MAX_VECTORS_PER_SCOPE, VectorIndex, unit_vector

Clock = Callable[[], float]


class MemoryCache:
    def __init__(self, max_entries: int = 10_000, max_bytes: int = 256 * 1024 * 1024,
                 max_vectors_per_scope: int = MAX_VECTORS_PER_SCOPE, max_vectors: int = MAX_VECTORS,
                 clock: Clock = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()   # value, expires at
        self._bytes = 0
        self.vectors = VectorIndex(max_vectors_per_scope, max_vectors)      # bounds: see vectors.py

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        return self._get(key, self._clock())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        return [self._get(key, now) for key in keys]

    async def set(self, key: str, value: bytes, ttl_seconds: int, *, only_if_absent: bool = False) -> bool:
        now = self._clock()
        if ttl_seconds <= 0 or (only_if_absent and self._get(key, now) is not None):
            return False
        size = _size(key, value)
        if size > self.max_bytes:
            return False                    # would evict everything else and still not fit
        self._drop(key)
        self._entries[key] = (value, now + ttl_seconds)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    async def nearest(self, scope: str, vector: Sequence[float], threshold: float) -> tuple[str, float] | None:
        return self.vectors.nearest(scope, unit_vector(vector), threshold, self._clock())

    async def add_vector(self, scope: str, vector: Sequence[float], value_key: str, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        self.vectors.add(scope, unit_vector(vector), value_key, self._clock() + ttl_seconds)

    def _get(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _size(key, entry[0])


def _size(key: str, value: bytes) -> int:
    return len(key) + len(value)


class MemoryRateLimiter:
    def __init__(self, max_buckets: int = 100_000, clock: Clock = time.monotonic) -> None:
        self.max_buckets = max_buckets
        self._clock = clock
        # bucket id → (tokens, updated at, full again at); least recently touched first
        self._buckets: OrderedDict[str, tuple[float, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, bucket_id: str, capacity: float, refill_per_second: float, cost: float) -> Decision:
        return self._step(bucket_id, capacity, refill_per_second, cost, charge=False)

    async def charge(self, bucket_id: str, capacity: float, refill_per_second: float, amount: float) -> Decision:
        return self._step(bucket_id, capacity, refill_per_second, amount, charge=True)

    def _step(self, bucket_id: str, capacity: float, refill: float, cost: float, charge: bool) -> Decision:
        if capacity <= 0 or refill <= 0:
            raise ValueError("capacity and refill rate must be positive")
        now = self._clock()
        state = self._buckets.pop(bucket_id, None)
        # A bucket past its "full again" time is exactly a new one; forgetting it is free.
        tokens, updated = (state[0], state[1]) if state is not None and state[2] > now else (None, now)
        tokens, result = bucket_step(tokens, updated, now, capacity, refill, cost, charge)
        self._buckets[bucket_id] = (tokens, now, now + full_after(tokens, capacity, refill))
        self._sweep(now)
        return result

    def _sweep(self, now: float) -> None:
        # Amortised clean-up: look at the two least recently touched buckets per call.
        for _ in range(2):
            if not self._buckets:
                return
            oldest, (_, _, full_at) = next(iter(self._buckets.items()))
            if full_at > now and len(self._buckets) <= self.max_buckets:
                return
            del self._buckets[oldest]


class MemoryBudgetCounters:
    """Spend per budget and period for one process. A counter is forgotten once its period is over;
    past `max_counters` live ones the least recently charged go first (fail-open: a forgotten
    counter starts again from its seed, the spend recorded in the store)."""

    def __init__(self, max_counters: int = 100_000, clock: Clock = time.time) -> None:
        self.max_counters = max_counters
        self._clock = clock
        self._counters: OrderedDict[str, tuple[float, float]] = OrderedDict()   # micro-USD, expires at

    def __len__(self) -> int:
        return len(self._counters)

    async def read(self, keys: Sequence[str]) -> list[float | None]:
        now = self._clock()
        found: list[float | None] = []
        for key in keys:
            entry = self._counters.get(key)
            found.append(entry[0] if entry is not None and entry[1] > now else None)
        return found

    async def add(self, charges: Sequence[BudgetCharge]) -> list[float]:
        now = self._clock()
        values = []
        for charge in charges:
            entry = self._counters.pop(charge.key, None)
            value = (entry[0] if entry is not None and entry[1] > now else charge.seed) + charge.amount
            self._counters[charge.key] = (value, charge.expires_at)
            values.append(value)
        while self._counters:        # expired (or too many) counters go, oldest charge first
            oldest, (_, expires_at) = next(iter(self._counters.items()))
            if expires_at > now and len(self._counters) <= self.max_counters:
                break
            del self._counters[oldest]
        return values
