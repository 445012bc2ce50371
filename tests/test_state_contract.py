"""One contract for every state backend: the same scenarios run on memory and on Redis.

Redis comes from HELIOGRAPH_TEST_REDIS_URL (DESIGN §5): skipped with a reason when unset, a
failure when CI is set. Every test uses its own key prefix and deletes its keys afterwards.
Time: the memory backends take an injected clock that `advance` moves; on Redis `advance`
really sleeps, so those scenarios use short TTLs and fast refill rates.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest

from heliograph.controls.ratelimit import Policy, parse_policy, rate_limit_headers
from heliograph.state import (BudgetCharge, BudgetCounters, Cache, RateLimiter, State, StateUnavailable, lookup,
                              open_state, store)
from heliograph.state import redis as redis_state
from heliograph.state.memory import MemoryBudgetCounters, MemoryCache, MemoryRateLimiter
from heliograph.state.redis import RedisCache
from heliograph.state.vectors import MAX_VECTORS, MAX_VECTORS_PER_SCOPE, VectorIndex, unit_vector

from .conftest import redis_url

RUN_PREFIX = f"heliograph-test-{uuid.uuid4().hex[:10]}:"
# These scenarios test what Redis answers, not how fast: the gateway's short default timeout could
# fail a burst of new connections on a busy CI machine. test_redis_that_never_answers_* checks it.
TIMEOUT = 5.0




class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    cache: Cache
    limiter: RateLimiter
    advance: Callable[[float], Awaitable[None]]
    state: State | None = None          # the Redis state, for raw checks
    twin: Cache | None = None           # another process's view: on Redis a second client, else `cache`
    budgets: BudgetCounters | None = None
    now: Callable[[], float] = time.time   # the clock budget counters expire by


Backend = Callable[..., Any]            # (**options) -> async context manager of Harness


@asynccontextmanager
async def memory_harness(max_vectors_per_scope: int = 1_000) -> AsyncIterator[Harness]:
    clock = FakeClock()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    cache = MemoryCache(max_vectors_per_scope=max_vectors_per_scope, clock=clock)
    yield Harness(cache, MemoryRateLimiter(clock=clock), advance, twin=cache,
                  budgets=MemoryBudgetCounters(clock=clock), now=clock)


def redis_harness(url: str, prefix: str) -> Backend:
    @asynccontextmanager
    async def harness(max_vectors_per_scope: int = 1_000) -> AsyncIterator[Harness]:
        state, twin = (open_state(url, key_prefix=prefix, timeout=TIMEOUT, max_vectors_per_scope=max_vectors_per_scope)
                       for _ in range(2))
        try:
            yield Harness(state.cache, state.limiter, asyncio.sleep, state, twin.cache, budgets=state.budgets)
        finally:
            assert state.client is not None
            keys = [k async for k in state.client.scan_iter(match=prefix + "*")]
            if keys:
                await state.client.delete(*keys)
            await state.close()
            await twin.close()
    return harness


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return memory_harness
    return redis_harness(redis_url(), f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}:")


def run(backend: Backend, scenario: Callable[[Harness], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with backend(**options) as harness:
            await scenario(harness)
    asyncio.run(main())


# --- Cache -------------------------------------------------------------------------------------

def test_cache_get_set_get_many(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert await h.cache.get("k1") is None
        assert await h.cache.set("k1", b"\x00value\xff", 60)
        assert await h.cache.get("k1") == b"\x00value\xff"
        assert await h.cache.get_many(["k0", "k1", "k2"]) == [None, b"\x00value\xff", None]
        assert await h.cache.get_many([]) == []
        assert await h.cache.set("k1", b"new", 60)           # plain set overwrites
        assert await h.cache.get("k1") == b"new"
    run(backend, scenario)


def test_cache_only_if_absent(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert await h.cache.set("k", b"first", 60, only_if_absent=True)
        assert not await h.cache.set("k", b"second", 60, only_if_absent=True)
        assert await h.cache.get("k") == b"first"
    run(backend, scenario)


def test_cache_ttl_expiry(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert await h.cache.set("short", b"v", 1)
        assert await h.cache.set("long", b"v", 60)
        assert not await h.cache.set("never", b"v", 0)       # max-age=0: nothing stored
        assert await h.cache.get("short") == b"v"
        await h.advance(1.2)
        assert await h.cache.get("short") is None
        assert await h.cache.get("long") == b"v"
        assert await h.cache.get("never") is None
        # an expired key is absent for only_if_absent too
        assert await h.cache.set("short", b"again", 60, only_if_absent=True)
    run(backend, scenario)


def test_bucket_fills_lowest_slot_then_picks_at_random(backend: Backend) -> None:
    def key_for(index: int) -> str:
        return f"base-{index}"

    async def scenario(h: Harness) -> None:
        assert await lookup(h.cache, key_for, 3) is None
        assert await store(h.cache, key_for, 3, b"a", 60) == 0
        assert await lookup(h.cache, key_for, 3) is None      # MISS until every slot is filled
        assert await store(h.cache, key_for, 3, b"b", 60) == 1
        assert await lookup(h.cache, key_for, 3) is None
        assert await store(h.cache, key_for, 3, b"c", 60) == 2
        assert await store(h.cache, key_for, 3, b"d", 60) is None   # full: nothing written
        rng = random.Random(7)
        seen = {await lookup(h.cache, key_for, 3, rng) for _ in range(40)}
        assert seen == {(b"a", 0), (b"b", 1), (b"c", 2)}
        # size 1 is plain replay of one slot
        assert await store(h.cache, key_for, 1, b"x", 60) is None   # slot 0 already taken
        assert await lookup(h.cache, key_for, 1) == (b"a", 0)
        assert await store(h.cache, key_for, 2, b"x", 0) is None    # TTL 0: never stored
    run(backend, scenario)


def test_bucket_concurrent_stores_take_distinct_slots(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        slots = await asyncio.gather(*(store(h.cache, lambda i: f"race-{i}", 3, b"v%d" % n, 60)
                                       for n in range(5)))
        assert sorted(s for s in slots if s is not None) == [0, 1, 2]
        assert slots.count(None) == 2
    run(backend, scenario)


def exact(found: tuple[str, float] | None) -> str | None:
    """The value key of a match at similarity 1 (float32 rounding allowed)."""
    assert found is None or found[1] == pytest.approx(1.0)
    return None if found is None else found[0]


def basis(index: int, dims: int = 8) -> list[float]:
    return [1.0 if i == index else 0.0 for i in range(dims)]


def test_semantic_nearest(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert await h.cache.nearest("scope", [1.0, 0.0], 0.5) is None
        await h.cache.add_vector("scope", [1.0, 0.0], "east", 60)
        await h.cache.add_vector("scope", [6.0, 8.0], "north-east", 60)   # not unit length
        await h.cache.add_vector("other", [0.9, 0.44], "elsewhere", 60)
        found = await h.cache.nearest("scope", [0.9, 0.44], 0.5)
        assert found is not None and found[0] == "east"
        assert found[1] == pytest.approx(0.9 / (0.9 ** 2 + 0.44 ** 2) ** 0.5, abs=1e-5)
        found = await h.cache.nearest("scope", [3.0, 4.0], 1.0)       # identical direction
        assert found is not None and found[0] == "north-east" and found[1] == pytest.approx(1.0)
        assert await h.cache.nearest("scope", [0.0, 1.0], 0.9) is None  # best is 0.8 < 0.9
        assert await h.cache.nearest("nobody", [1.0, 0.0], 0.1) is None
        assert await h.cache.nearest("scope", [1.0, 0.0, 0.0], 0.1) is None  # other model's size
        with pytest.raises(ValueError):
            await h.cache.add_vector("scope", [0.0, 0.0], "zero", 60)
    run(backend, scenario)


def test_semantic_bounded_and_expiring(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        for i in range(7):
            await h.cache.add_vector("scope", basis(i), f"v{i}", 60)
        assert await h.cache.nearest("scope", basis(0), 0.9) is None       # evicted: oldest two
        assert await h.cache.nearest("scope", basis(1), 0.9) is None
        assert exact(await h.cache.nearest("scope", basis(6), 0.9)) == "v6"
        await h.cache.add_vector("scope", basis(7), "short", 1)
        assert exact(await h.cache.nearest("scope", basis(7), 0.9)) == "short"
        await h.advance(1.2)
        assert await h.cache.nearest("scope", basis(7), 0.9) is None
        assert exact(await h.cache.nearest("scope", basis(5), 0.9)) == "v5"
    run(backend, scenario, max_vectors_per_scope=5)


def test_semantic_stale_copy_picks_up_what_another_process_stored(backend: Backend,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Redis client keeps its own copy of a scope's vectors; once built it must still see
    what another process stores later (read in pages), apply each entry once when lookups race,
    and keep the same newest N as Redis."""
    monkeypatch.setattr(redis_state, "_PAGE", 3)

    async def scenario(h: Harness) -> None:
        assert h.twin is not None
        await h.cache.add_vector("scope", basis(0), "a0", 60)
        assert exact(await h.cache.nearest("scope", basis(0), 0.9)) == "a0"   # this copy is built
        assert await h.twin.nearest("scope", basis(1), 0.9) is None            # and the twin's
        for i in range(1, 7):
            await h.twin.add_vector("scope", basis(i), f"b{i}", 60)
        found = await asyncio.gather(*(h.cache.nearest("scope", basis(i), 0.9) for i in range(7)))
        assert [exact(f) for f in found] == [None, None, "b2", "b3", "b4", "b5", "b6"]   # cap 5
        assert exact(await h.twin.nearest("scope", basis(6), 0.9)) == "b6"
        assert await h.twin.nearest("scope", basis(0), 0.9) is None
        await h.twin.add_vector("unseen", basis(3), "u3", 60)
        assert exact(await h.cache.nearest("unseen", basis(3), 0.9)) == "u3"
    run(backend, scenario, max_vectors_per_scope=5)


def test_semantic_cap_per_scope_holds(backend: Backend) -> None:
    dims = 128

    async def scenario(h: Harness) -> None:
        assert h.twin is not None
        await h.cache.add_vector("scope", basis(0, dims), "v0", 60)
        assert exact(await h.cache.nearest("scope", basis(0, dims), 0.9)) == "v0"
        for i in range(1, 120):
            await h.twin.add_vector("scope", basis(i, dims), f"v{i}", 60)
        for cache in (h.cache, h.twin):
            found = [exact(await cache.nearest("scope", basis(i, dims), 0.9)) for i in range(120)]
            assert found == [None] * 70 + [f"v{i}" for i in range(70, 120)]
            vectors = cast("MemoryCache | RedisCache", cache).vectors
            assert vectors.rows <= 50
        if h.state is not None:
            assert h.state.client is not None
            assert await h.state.client.xlen(cast(RedisCache, h.state.cache)._streams + "scope") == 50
    run(backend, scenario, max_vectors_per_scope=50)


# --- RateLimiter ---------------------------------------------------------------------------------

def policy(text: str) -> Policy:
    parsed = parse_policy(text)
    assert isinstance(parsed, Policy), parsed
    return parsed


def test_limiter_starts_full_then_denies(backend: Backend) -> None:
    p = policy("3;w=60")

    async def scenario(h: Harness) -> None:
        remaining = []
        for _ in range(3):
            d = await h.limiter.take("org", p.capacity, p.refill_per_second, 1)
            assert d.allowed
            remaining.append(dict(rate_limit_headers(p, d))["Helicone-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        denied = await h.limiter.take("org", p.capacity, p.refill_per_second, 1)
        assert not denied.allowed
        assert denied.retry_after_seconds == pytest.approx(20, abs=0.5)
        assert denied.reset_seconds == pytest.approx(60, abs=0.5)
        headers = dict(rate_limit_headers(p, denied))
        assert headers["Retry-After"] == "20"
        assert headers["Helicone-RateLimit-Remaining"] == "0"
        assert headers["Helicone-RateLimit-Limit"] == "3"
        assert headers["Helicone-RateLimit-Policy"] == "3;w=60"
        assert headers["Helicone-RateLimit-Reset"] in ("59", "60")
        # a denied request deducted nothing: another bucket id is untouched, this one still ~0
        assert (await h.limiter.take("other", 3, p.refill_per_second, 1)).remaining == pytest.approx(2)
        assert not (await h.limiter.take("org", p.capacity, p.refill_per_second, 1)).allowed
    run(backend, scenario)


def test_limiter_refills_evenly_never_above_capacity(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        for _ in range(2):
            assert (await h.limiter.take("b", 2, 10, 1)).allowed
        assert not (await h.limiter.take("b", 2, 10, 1)).allowed
        await h.advance(0.15)                                   # 1.5 tokens back
        d = await h.limiter.take("b", 2, 10, 1)
        assert d.allowed and 0.49 < d.remaining < 0.9
        assert not (await h.limiter.take("b", 2, 10, 1)).allowed
        await h.advance(0.5)                                     # would be 5+ tokens: capped at 2
        d = await h.limiter.take("b", 2, 10, 1)
        assert d.allowed and d.remaining == pytest.approx(1, abs=0.05)
        full = await h.limiter.take("fresh", 2, 10, 0)
        assert full.allowed and full.remaining == 2 and full.reset_seconds == 0
    run(backend, scenario)


def test_limiter_cents_precheck_and_negative_balance(backend: Backend) -> None:
    p = policy("5;w=3600;u=cents")

    async def scenario(h: Harness) -> None:
        check = await h.limiter.take("cents", p.capacity, p.refill_per_second, 0)
        assert check.allowed and check.remaining == pytest.approx(5)       # pre-check takes nothing
        charged = await h.limiter.charge("cents", p.capacity, p.refill_per_second, 7.25)
        assert charged.allowed and charged.remaining == pytest.approx(-2.25, abs=0.01)
        check = await h.limiter.take("cents", p.capacity, p.refill_per_second, 0)
        assert not check.allowed
        assert check.retry_after_seconds == pytest.approx(2.25 / p.refill_per_second, rel=0.01)
        headers = dict(rate_limit_headers(p, check))
        assert headers["Helicone-RateLimit-Remaining"] == "0"
        assert headers["Helicone-RateLimit-Policy"] == "5;w=3600;u=cents"
        assert int(headers["Retry-After"]) == pytest.approx(1620, abs=2)
    run(backend, scenario)


def test_limiter_capacity_change_clamps(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        slow = 1 / 3600
        assert (await h.limiter.take("c", 10, slow, 1)).remaining == pytest.approx(9)
        assert (await h.limiter.take("c", 3, slow, 1)).remaining == pytest.approx(2, abs=0.01)
        # raising the quota again does not refill the bucket: same bucket, clamped tokens
        assert (await h.limiter.take("c", 10, slow, 1)).remaining == pytest.approx(1, abs=0.01)
    run(backend, scenario)


# --- budget counters ---------------------------------------------------------------------------

def test_budget_counters_start_from_the_seed_then_add(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert h.budgets is not None
        later = h.now() + 60
        assert await h.budgets.read(["a", "b"]) == [None, None]
        assert await h.budgets.read([]) == [] and await h.budgets.add([]) == []
        added = await h.budgets.add([BudgetCharge("a", 1.5, 10.0, later), BudgetCharge("b", 0.000001, 0.0, later)])
        assert added == pytest.approx([11.5, 0.000001])
        # the seed only starts an absent counter
        assert await h.budgets.add([BudgetCharge("a", 0.25, 999.0, later)]) == pytest.approx([11.75])
        assert await h.budgets.read(["a", "c", "b"]) == [pytest.approx(11.75), None, pytest.approx(0.000001)]
    run(backend, scenario)


def test_budget_counters_expire_with_their_period(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert h.budgets is not None
        await h.budgets.add([BudgetCharge("day1", 5.0, 0.0, h.now() + 1), BudgetCharge("month", 1.0, 0.0, h.now() + 60)])
        assert await h.budgets.read(["day1", "month"]) == [pytest.approx(5.0), pytest.approx(1.0)]
        await h.advance(1.2)
        assert await h.budgets.read(["day1", "month"]) == [None, pytest.approx(1.0)]
        assert await h.budgets.add([BudgetCharge("day1", 2.0, 3.0, h.now() + 60)]) == pytest.approx([5.0])
    run(backend, scenario)


def test_budget_counters_concurrent_adds_all_count(backend: Backend) -> None:
    async def scenario(h: Harness) -> None:
        assert h.budgets is not None
        later = h.now() + 60
        budgets = h.budgets
        await asyncio.gather(*(budgets.add([BudgetCharge("shared", 1.0, 100.0, later), BudgetCharge(f"own{i}", 1.0, 0.0, later)])
                               for i in range(50)))
        assert await budgets.read(["shared", "own7"]) == [pytest.approx(150.0), pytest.approx(1.0)]
    run(backend, scenario)


def test_memory_budget_counters_bounded() -> None:
    async def main() -> None:
        clock = FakeClock()
        counters = MemoryBudgetCounters(max_counters=3, clock=clock)
        for i in range(10):
            await counters.add([BudgetCharge(f"c{i}", 1.0, 0.0, clock.now + 60)])
        assert len(counters) == 3
        assert await counters.read(["c0", "c9"]) == [None, 1.0]     # the least recently charged went
        clock.now += 61
        await counters.add([BudgetCharge("new", 1.0, 0.0, clock.now + 60)])
        assert len(counters) == 1                                   # expired ones are dropped
    asyncio.run(main())


# --- Redis only ----------------------------------------------------------------------------------

def test_redis_two_clients_never_over_admit() -> None:
    url, prefix = redis_url(), f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}:"

    async def main() -> None:
        a, b = (open_state(url, key_prefix=prefix, timeout=TIMEOUT) for _ in range(2))
        try:
            calls = [s.limiter.take("shared", 10, 10 / 3600, 1) for _ in range(40) for s in (a, b)]
            decisions = await asyncio.gather(*calls)
            assert sum(d.allowed for d in decisions) == 10
            assert a.client is not None
            pttl = await a.client.pttl(prefix + "rl:shared")     # forgotten once full again
            assert 3600_000 < pttl <= 3601_000
            assert (await a.limiter.take("full", 2, 1, 0)).allowed
            assert await a.client.exists(prefix + "rl:full") == 0  # a full bucket is no key at all
        finally:
            assert a.client is not None
            keys = [k async for k in a.client.scan_iter(match=prefix + "*")]
            if keys:
                await a.client.delete(*keys)
            await a.close()
            await b.close()
    asyncio.run(main())


def test_redis_down_raises_state_unavailable_quickly() -> None:
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        state = open_state(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(StateUnavailable):
                await state.limiter.take("b", 3, 1, 1)
            with pytest.raises(StateUnavailable):
                await state.cache.get_many(["a", "b"])
            with pytest.raises(StateUnavailable):
                await state.cache.add_vector("s", [1.0], "k", 60)
            with pytest.raises(StateUnavailable):
                await state.check()
        finally:
            await state.close()
        assert time.monotonic() - started < 3
    asyncio.run(main())


@contextmanager
def blackhole() -> Iterator[int]:
    """A port on loopback that accepts TCP connections and never answers: a partitioned Redis."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.02)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_redis_that_never_answers_fails_open_fast() -> None:
    """With the default `redis_timeout_ms` every operation gives up well under half a second, and
    the proxy's cache lookup and rate-limit check fail open (a miss; the request let through)."""
    from redis.exceptions import TimeoutError as RedisTimeout

    from heliograph.proxy import caching, limiting
    from heliograph.settings import Settings

    bound = 0.5

    async def main(port: int) -> None:
        state = open_state(f"redis://127.0.0.1:{port}/0", timeout=Settings().redis_timeout_ms / 1000)
        try:
            operations: list[Callable[[], Awaitable[object]]] = [
                lambda: state.limiter.take("b", 3, 1, 1),
                lambda: state.cache.get_many(["a", "b"]),
                lambda: state.cache.nearest("s", [1.0, 0.0], 0.9),
                lambda: state.cache.add_vector("s", [1.0, 0.0], "k", 60),
                lambda: state.budgets.read(["b"]),
                lambda: state.budgets.add([BudgetCharge("b", 1.0, 0.0, time.time() + 60)]),
                state.check,
            ]
            for operation in operations:
                started = time.monotonic()
                with pytest.raises(StateUnavailable) as failure:
                    await operation()
                assert time.monotonic() - started < bound
                assert isinstance(failure.value.__cause__, (RedisTimeout, TimeoutError))

            url, body = "http://127.0.0.1/openai/v1/chat/completions", b'{"model": "m", "messages": []}'
            plan = caching.plan({"helicone-cache-enabled": "true"}, url, body)
            assert plan is not None
            started = time.monotonic()
            assert await caching.find(state.cache, plan, None, url, body, {}) is None
            assert time.monotonic() - started < bound
            started = time.monotonic()
            headers: list[tuple[bytes, bytes]] = []
            assert await limiting.check(state.limiter, "default", {"helicone-ratelimit-policy": "10;w=60"}, body,
                                        headers) is None
            assert time.monotonic() - started < bound and headers == []
        finally:
            await state.close()

    with blackhole() as port:
        asyncio.run(main(port))


# --- memory bounds -------------------------------------------------------------------------------

def test_memory_cache_bounded_lru() -> None:
    async def main() -> None:
        cache = MemoryCache(max_entries=3, max_bytes=1000)
        for key in "abc":
            await cache.set(key, b"x" * 10, 60)
        assert await cache.get("a") == b"x" * 10               # a is now most recently used
        await cache.set("d", b"x" * 10, 60)
        assert await cache.get_many(["a", "b", "c", "d"]) == [b"x" * 10, None, b"x" * 10, b"x" * 10]
        assert not await cache.set("huge", b"x" * 2000, 60)     # larger than the whole cache
        await cache.set("big", b"x" * 990, 60)                  # evicts by bytes
        assert len(cache) == 1 and cache.size_bytes == 993
        assert await cache.get("big") is not None

        vectors = MemoryCache(max_vectors_per_scope=10, max_vectors=4)
        for scope in ("s1", "s2", "s3"):
            for i in range(2):
                await vectors.add_vector(scope, basis(i), f"{scope}-{i}", 60)
        assert await vectors.nearest("s1", basis(0), 0.9) is None    # least recently used scope
        assert exact(await vectors.nearest("s3", basis(0), 0.9)) == "s3-0"
    asyncio.run(main())


def test_vector_index_default_bounds() -> None:
    """10,000 vectors per scope, 50,000 rows and 10,000 scopes per process (the README's numbers)."""
    assert (MAX_VECTORS_PER_SCOPE, MAX_VECTORS) == (10_000, 50_000)
    index = VectorIndex()
    rng = random.Random(5)

    def add(scope: str, count: int) -> None:
        for i in range(count):
            index.add(scope, unit_vector([rng.random() + 0.01 for _ in range(8)]), f"{scope}-{i}", 1e9)

    add("big", 10_100)
    big = index.scope("big")
    assert big is not None and big.count == 10_000 and big.rows == 10_000 and index.rows == 10_000
    assert index.nearest("big", unit_vector([1.0] * 8), 0.5, 0.0) is not None
    for n in range(5):                      # 60,000 rows wanted: the least recently used scope goes
        add(f"s{n}", 10_000)
    assert index.rows <= 50_000 and index.scope("big") is None and index.scope("s4") is not None
    for n in range(10_050):
        index.add(f"tiny{n}", unit_vector([1.0, 0.0]), "k", 1e9)
    assert len(index) == 10_000


def test_memory_limiter_bounded() -> None:
    async def main() -> None:
        clock = FakeClock()
        limiter = MemoryRateLimiter(max_buckets=5, clock=clock)
        for i in range(20):
            await limiter.take(f"b{i}", 10, 1, 1)
        assert len(limiter) <= 5
        clock.now += 100                                        # all full again: forgotten
        await limiter.take("new", 10, 1, 1)
        await limiter.take("new", 10, 1, 1)
        assert len(limiter) <= 3
    asyncio.run(main())
