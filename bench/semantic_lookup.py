"""Gateway CPU per semantic-cache lookup (`Cache.nearest`), memory and Redis, by scope size.

    python bench/semantic_lookup.py                       # 1k, 10k, 100k vectors in one scope
    python bench/semantic_lookup.py --sizes 1000,10000 --backends memory
    PYTHONPATH=/tmp/hg-snap/src python bench/semantic_lookup.py   # another commit (see README)

CPU is `time.process_time()` around the awaited lookup: every thread of this process (numpy's BLAS
threads too), not Redis's CPU. Wall time is printed beside it. One scope is filled with N random
256-dimension vectors (the gateway's embedding size); the lookups alternate a stored vector (a hit)
and a random one (a miss), at the default threshold 0.98. Both cost a full scan.

On Redis one state fills the scope and another, like a second gateway process, looks up:
    cold    its first lookup (it has never seen the scope: the whole scope is read once)
    steady  later lookups when nothing new was stored
    +1 new  a vector is stored by the other state before each lookup (only the lookup is timed)
Memory has one state; its cold and +1 columns are left empty. Redis must be running
(`--redis-url`, default redis://127.0.0.1:6379/0); the bench writes under a key prefix of its own
and deletes it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from heliograph.state import open_state
from heliograph.state.memory import MemoryCache

DIMS = 256
THRESHOLD = 0.98


def vectors(n: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, DIMS)).astype(np.float32).tolist()    # type: ignore[no-any-return]


def options(function: Callable[..., Any], size: int) -> dict[str, Any]:
    """Room for `size` vectors in one scope, with whatever bounds this version of the code has."""
    accepted = inspect.signature(function).parameters
    return {name: size for name in ("max_vectors_per_scope", "max_vectors") if name in accepted}


async def fill(add: Callable[[str, list[float], str, int], Awaitable[None]], data: list[list[float]]) -> None:
    batch = 16
    for start in range(0, len(data), batch):
        await asyncio.gather(*(add("scope", v, f"key-{start + i}", 3600)
                               for i, v in enumerate(data[start:start + batch])))


async def timed(lookup: Awaitable[Any]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await lookup
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(nearest: Callable[[str, list[float], float], Awaitable[Any]], data: list[list[float]],
                  lookups: int, budget: float, before: Callable[[int], Awaitable[None]] | None = None
                  ) -> tuple[float, float]:
    """Mean CPU and wall seconds per lookup: `lookups` of them, or fewer once `budget` CPU s is spent."""
    misses = vectors(lookups, seed=2)
    cpu = wall = 0.0
    done = 0
    while done < lookups and (done < 3 or cpu < budget):
        if before is not None:
            await before(done)
        query = data[done % len(data)] if done % 2 == 0 else misses[done]
        c, w = await timed(nearest("scope", query, THRESHOLD))
        cpu, wall, done = cpu + c, wall + w, done + 1
    return cpu / done, wall / done


async def bench_memory(size: int, lookups: int, budget: float) -> dict[str, float]:
    cache = MemoryCache(**options(MemoryCache, size))
    data = vectors(size, seed=1)
    await fill(cache.add_vector, data)
    cpu, wall = await measure(cache.nearest, data, lookups, budget)
    return {"steady": cpu, "steady_wall": wall}


async def bench_redis(size: int, lookups: int, budget: float, url: str) -> dict[str, float]:
    prefix = f"heliograph-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}:"
    room = options(open_state, size)
    # The reader has the gateway's default Redis timeout; the writer's filling is not measured.
    writer = open_state(url, key_prefix=prefix, timeout=10.0, **room)
    reader = open_state(url, key_prefix=prefix, **room)
    try:
        data = vectors(size, seed=1)
        await fill(writer.cache.add_vector, data)
        cold, cold_wall = await timed(reader.cache.nearest("scope", data[0], THRESHOLD))
        steady, steady_wall = await measure(reader.cache.nearest, data, lookups, budget)
        extra = vectors(lookups, seed=3)

        async def store_one(n: int) -> None:
            await writer.cache.add_vector("scope", extra[n], f"extra-{n}", 3600)

        plus_one, plus_one_wall = await measure(reader.cache.nearest, data, lookups, budget, store_one)
        return {"cold": cold, "cold_wall": cold_wall, "steady": steady, "steady_wall": steady_wall,
                "plus_one": plus_one, "plus_one_wall": plus_one_wall}
    finally:
        assert writer.client is not None
        keys = [k async for k in writer.client.scan_iter(match=prefix + "*")]
        if keys:
            await writer.client.delete(*keys)
        await writer.close()
        await reader.close()


def us(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e6:,.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="vectors per scope, comma-separated")
    parser.add_argument("--backends", default="memory,redis")
    parser.add_argument("--lookups", type=int, default=200, help="lookups per measurement at most")
    parser.add_argument("--budget", type=float, default=2.0, help="CPU seconds per measurement at most")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("CPU µs per lookup (wall µs in brackets)")
    print(f"{'backend':8} {'vectors':>8} {'cold':>20} {'steady':>20} {'+1 new':>20}")
    for size in (int(s) for s in args.sizes.split(",")):
        for backend in args.backends.split(","):
            if backend == "memory":
                r = await bench_memory(size, args.lookups, args.budget)
            else:
                r = await bench_redis(size, args.lookups, args.budget, args.redis_url)
            cells = [f"{us(r.get(k))} ({us(r.get(k + '_wall'))})" if k in r else ""
                     for k in ("cold", "steady", "plus_one")]
            print(f"{backend:8} {size:>8,} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
