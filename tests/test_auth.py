"""KeyCache: a key created just before a burst is found by all of it, with the store loaded once or twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping

import httpx
import pytest

from heliograph.errors import AuthError
from heliograph import auth
from heliograph.auth import KeyCache, hash_key

from .conftest import Gateway, run_cli

CHAT = {"model": "some-model", "messages": [{"role": "user", "content": "hi"}]}


class SlowStore:
    """A key table read in a thread, as the real store is, taking `delay` seconds to answer."""

    def __init__(self, delay: float = 0.05, fail: bool = False) -> None:
        self.keys: dict[str, dict[str, str]] = {}
        self.delay = delay
        self.fail = fail
        self.loads = 0
        self.loading = threading.Event()

    def load(self) -> Mapping[str, Mapping[str, str]]:
        self.loads += 1
        snapshot = dict(self.keys)  # the query sees the table as it is when the load begins
        self.loading.set()
        time.sleep(self.delay)
        if self.fail:
            raise OSError("database is locked")
        return snapshot

    def add(self, key: str) -> None:
        self.keys[hash_key(key)] = {"id": f"id-{key}"}


async def burst(cache: KeyCache, key: str, count: int) -> list[str | BaseException]:
    calls = [cache.authenticate(f"Bearer {key}") for _ in range(count)]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)
    return [r if isinstance(r, BaseException) else r.id for r in results]


def test_a_burst_on_a_new_key_shares_one_load() -> None:
    async def main() -> None:
        store = SlowStore()
        cache = KeyCache(store.load)
        await cache.reload()
        store.add("sk-hg-new")
        results = await burst(cache, "sk-hg-new", 500)
        assert results == ["id-sk-hg-new"] * 500
        assert 2 <= store.loads <= 3  # the start-up load, then one or two for the burst

    asyncio.run(main())


def test_a_load_that_began_before_the_key_existed_is_followed_by_one_more() -> None:
    async def main() -> None:
        store = SlowStore(delay=0.2)
        cache = KeyCache(store.load)
        periodic = asyncio.create_task(cache.reload())
        await asyncio.to_thread(store.loading.wait)
        store.add("sk-hg-new")      # too late for the load in flight
        results = await burst(cache, "sk-hg-new", 200)
        await periodic
        assert results == ["id-sk-hg-new"] * 200
        assert store.loads == 2

    asyncio.run(main())


def test_unknown_keys_load_at_most_once_per_interval() -> None:
    async def main() -> None:
        store = SlowStore(delay=0.01)
        cache = KeyCache(store.load)
        await cache.reload()
        results = await burst(cache, "sk-hg-unknown", 100)
        assert all(isinstance(r, AuthError) for r in results)
        assert store.loads == 2
        for _ in range(20):     # one at a time, with no load in flight: refused from the cache
            with pytest.raises(AuthError):
                await cache.authenticate("Bearer sk-hg-unknown")
        assert store.loads == 2

    asyncio.run(main())


def test_a_failed_load_answers_every_waiter() -> None:
    async def main() -> None:
        store = SlowStore(fail=True)
        cache = KeyCache(store.load)
        store.add("sk-hg-new")
        results = await burst(cache, "sk-hg-new", 100)
        assert all(isinstance(r, AuthError) for r in results)
        assert store.loads == 1
        with pytest.raises(OSError):
            await cache.reload()
        store.fail = False
        await asyncio.sleep(auth.MISS_RELOAD_AFTER)
        assert (await cache.authenticate("Bearer sk-hg-new")).id == "id-sk-hg-new"

    asyncio.run(main())


def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    async def main() -> None:
        store = SlowStore(delay=0.1)
        cache = KeyCache(store.load)
        store.add("sk-hg-new")
        first = asyncio.create_task(cache.authenticate("Bearer sk-hg-new"))
        await asyncio.to_thread(store.loading.wait)
        second = asyncio.create_task(cache.authenticate("Bearer sk-hg-new"))
        await asyncio.sleep(0)
        first.cancel()
        assert (await second).id == "id-sk-hg-new"
        assert store.loads == 1

    asyncio.run(main())


def test_a_key_created_while_serving_is_never_refused(gateway: Gateway) -> None:
    created = run_cli("keys", "create", "--name", "burst", env=gateway.env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as client:
            calls = [client.post("/openai/v1/chat/completions", json=CHAT,
                                 headers={"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer k"})
                     for _ in range(200)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(fire())
    assert statuses.count(401) == 0 and statuses == [200] * 200, sorted(set(statuses))
