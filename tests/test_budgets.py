"""Budgets that enforce: periods and the proxy stage at unit level (injected clock), then the real
`openai` SDK through real `heliograph serve` processes to the fake provider, the CLI and the API."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from heliograph.auth import KeyInfo
from heliograph.budgets import BudgetCache, period_bounds
from heliograph.errors import BudgetExceeded
from heliograph.proxy import budgets as stage
from heliograph.recording.record import RawRecord
from heliograph.state import StateUnavailable
from heliograph.state.memory import MemoryBudgetCounters
from heliograph.storage import Store, open_store
from heliograph.testing import FakeUpstream

from .conftest import Gateway, redis_url, run_cli, start_gateway
from .test_store_contract import T0, make_row

MESSAGES = [{"role": "user", "content": "Tell me about the harbour lights tonight"}]
# gpt-4o-mini at $0.15 / $0.60 per million tokens; the fake answers MESSAGES with 14 + 8 tokens.
CALL_COST = (14 * 0.15 + 8 * 0.60) / 1e6
CAP = 0.00002          # spent by the third call (3 × 6.9e-6), so the fourth is refused


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- periods and the stage, with an injected clock ------------------------------------------------

def test_periods_are_utc_days_iso_weeks_and_calendar_months() -> None:
    wednesday = at("2025-01-15T13:45:00")
    assert period_bounds("day", wednesday) == (at("2025-01-15T00:00:00"), at("2025-01-16T00:00:00"))
    assert period_bounds("week", wednesday) == (at("2025-01-13T00:00:00"), at("2025-01-20T00:00:00"))
    assert period_bounds("month", wednesday) == (at("2025-01-01T00:00:00"), at("2025-02-01T00:00:00"))
    assert period_bounds("month", at("2025-12-31T23:59:59")) == (at("2025-12-01T00:00:00"), at("2026-01-01T00:00:00"))
    assert period_bounds("week", at("2025-01-19T23:59:59"))[0] == at("2025-01-13T00:00:00")   # Sunday
    assert period_bounds("week", at("2025-01-20T00:00:00"))[0] == at("2025-01-20T00:00:00")   # Monday
    assert period_bounds("day", at("2024-02-29T00:00:00")) == (at("2024-02-29T00:00:00"), at("2024-03-01T00:00:00"))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def budget_row(kind: str = "key", target: str = "key_1", usd: float = 0.2, period: str = "day",
               budget_id: str = "bud_1", project: str = "default") -> dict[str, Any]:
    return {"id": budget_id, "project_id": project, "target_kind": kind, "target": target, "usd": usd,
            "period": period, "created_at": 0, "target_name": None}


def answered(cost_tokens: int = 1_000_000, model: str = "gpt-4o-mini") -> RawRecord:
    """A recorded chat completion; at gpt-4o-mini's $0.15 per million prompt tokens, $0.15."""
    body = orjson.dumps({"model": model, "choices": [],
                         "usage": {"prompt_tokens": cost_tokens, "completion_tokens": 0, "total_tokens": cost_tokens}})
    return RawRecord(id="r", created_at=time.time(), provider="openai", family="openai", method="POST",
                     path="/openai/v1/chat/completions", target_url="http://upstream/v1/chat/completions",
                     key_id="key_1", helicone={}, request_body=orjson.dumps({"model": model}), status=200,
                     response_body=body)


KEY = KeyInfo("key_1", "default", "proxy", None, "app")


async def checked(cache: BudgetCache, counters: Any, key: KeyInfo = KEY, helicone: dict[str, str] | None = None,
                  body: bytes = b"{}") -> tuple[stage.BudgetPlan | None, dict[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    plan = await stage.check(cache, counters, key, helicone or {}, body, headers)
    return plan, dict(headers)


def test_a_day_budget_refuses_once_spent_and_opens_again_the_next_day() -> None:
    clock = Clock(at("2025-01-15T23:00:00"))
    cache = BudgetCache(lambda: [budget_row(usd=0.2)], now=clock)
    counters = MemoryBudgetCounters(clock=clock)

    async def main() -> None:
        await cache.reload()
        plan, headers = await checked(cache, counters)
        assert plan is not None and headers[b"helicone-budget-remaining"] == b"0.200000"
        await stage.charge(counters, plan, answered(), {})
        plan, headers = await checked(cache, counters)
        assert plan is not None and headers[b"helicone-budget-remaining"] == b"0.050000"
        await stage.charge(counters, plan, answered(), {})            # overshoots: charged after the answer
        with pytest.raises(BudgetExceeded) as refused:
            await checked(cache, counters)
        message = refused.value.message
        assert "daily budget of $0.20 on key 'app' (key_1)" in message
        assert "resets at 2025-01-16T00:00:00Z" in message and "$0.300000" in message
        assert refused.value.status == 429 and refused.value.retry_after_seconds == 3600
        clock.now = at("2025-01-16T00:00:00")                         # midnight UTC: a new day
        plan, headers = await checked(cache, counters)
        assert plan is not None and headers[b"helicone-budget-remaining"] == b"0.200000"
    asyncio.run(main())


def test_the_tightest_budget_is_reported_and_the_last_to_reset_is_named() -> None:
    clock = Clock(at("2025-01-15T12:00:00"))
    rows = [budget_row("project", "default", 10.0, "month", "bud_m"), budget_row("key", "key_1", 0.2, "day", "bud_d"),
            budget_row("user", "alice", 0.1, "week", "bud_u"), budget_row("user", "bob", 0.01, "day", "bud_b"),
            budget_row("key", "key_1", 0.01, "day", "bud_other", project="elsewhere")]
    cache = BudgetCache(lambda: rows, now=clock)
    counters = MemoryBudgetCounters(clock=clock)

    async def main() -> None:
        await cache.reload()
        plan, headers = await checked(cache, counters, helicone={"helicone-user-id": "alice"})
        assert plan is not None and len(plan.keys) == 3 and headers[b"helicone-budget-remaining"] == b"0.100000"
        # the body's `user` when there is no Helicone-User-Id
        plan, headers = await checked(cache, counters, body=b'{"model": "m", "user": "alice"}')
        assert plan is not None and len(plan.keys) == 3
        plan, headers = await checked(cache, counters, body=b'{"model": "m", "user": "carol"}')
        assert plan is not None and len(plan.keys) == 2 and headers[b"helicone-budget-remaining"] == b"0.200000"
        await stage.charge(counters, plan, answered(), {})            # $0.15 on the month and the day
        await stage.charge(counters, plan, answered(), {})            # the day is spent, the month is not
        with pytest.raises(BudgetExceeded) as refused:
            await checked(cache, counters, helicone={"helicone-user-id": "alice"})
        assert "daily budget of $0.20" in refused.value.message     # alice's week is untouched
        # no budget in this project: nothing to plan, no header
        assert await checked(cache, counters, key=KeyInfo("key_9", "quiet")) == (None, {})
    asyncio.run(main())


def test_a_missing_counter_starts_from_the_spend_the_store_recorded() -> None:
    clock = Clock(at("2025-01-15T12:00:00"))
    asked: list[tuple[str, str, int, int, list[str]]] = []

    def recorded(project: str, kind: str, start: int, end: int, targets: Any) -> dict[str, dict[str, Any]]:
        asked.append((project, kind, start, end, list(targets)))
        return {"key_1": {"spend": 0.19, "unpriced_calls": 2}}

    cache = BudgetCache(lambda: [budget_row(usd=0.2)], recorded, now=clock)
    counters = MemoryBudgetCounters(clock=clock)

    async def main() -> None:
        await cache.reload()
        await cache.reload()                     # once per budget and period, not per reload
        assert asked == [("default", "key", int(at("2025-01-15T00:00:00") * 1000),
                          int(at("2025-01-16T00:00:00") * 1000), ["key_1"])]
        plan, headers = await checked(cache, counters)
        assert plan is not None and headers[b"helicone-budget-remaining"] == b"0.010000"
        await stage.charge(counters, plan, answered(), {})
        with pytest.raises(BudgetExceeded):
            await checked(cache, counters)
        clock.now = at("2025-01-16T00:00:01")
        await cache.reload()
        assert len(asked) == 2 and asked[1][2] == int(at("2025-01-16T00:00:00") * 1000)
    asyncio.run(main())


def test_unpriced_calls_and_cache_hits_charge_nothing() -> None:
    clock = Clock(at("2025-01-15T12:00:00"))
    cache = BudgetCache(lambda: [budget_row(usd=0.2)], now=clock)
    counters = MemoryBudgetCounters(clock=clock)

    async def main() -> None:
        await cache.reload()
        plan, _ = await checked(cache, counters)
        assert plan is not None
        assert stage.call_cost(answered(model="mystery-model-7"), {}) is None
        await stage.charge(counters, plan, answered(model="mystery-model-7"), {})
        hit = answered()
        hit.cache_hit = True
        await stage.charge(counters, plan, hit, {})
        assert await counters.read(plan.keys) == [None]
        _, headers = await checked(cache, counters)
        assert headers[b"helicone-budget-remaining"] == b"0.200000"
    asyncio.run(main())


class DownCounters:
    async def read(self, keys: Any) -> list[float | None]:
        raise StateUnavailable("Redis: down")

    async def add(self, charges: Any) -> list[float]:
        raise StateUnavailable("Redis: down")


def test_a_failing_state_backend_lets_calls_through(caplog: pytest.LogCaptureFixture) -> None:
    cache = BudgetCache(lambda: [budget_row(usd=0.000001)])

    async def main() -> None:
        await cache.reload()
        plan, headers = await checked(cache, DownCounters())
        assert plan is not None and headers == {}
        await stage.charge(DownCounters(), plan, answered(), {})
    asyncio.run(main())
    assert "letting the request through" in caplog.text and "cost not charged" in caplog.text


def test_the_stage_costs_microseconds() -> None:
    """No budget in the project: one dict lookup. One budget: a few more µs and one state read."""
    cache = BudgetCache(lambda: [budget_row(usd=1e6)])
    counters = MemoryBudgetCounters()
    quiet = KeyInfo("key_9", "quiet")

    async def main() -> tuple[float, float]:
        await cache.reload()
        headers: list[tuple[bytes, bytes]] = []
        rounds = 20_000
        started = time.perf_counter()
        for _ in range(rounds):
            await stage.check(cache, counters, quiet, {}, b"{}", headers)
        none = (time.perf_counter() - started) / rounds * 1e6
        started = time.perf_counter()
        for _ in range(rounds):
            await stage.check(cache, counters, KEY, {}, b"{}", headers)
            headers.clear()
        one = (time.perf_counter() - started) / rounds * 1e6
        return none, one
    none, one = asyncio.run(main())
    print(f"budget stage: {none:.2f} µs without a budget, {one:.2f} µs with one (in-process state)")
    assert none < 5 and one < 50


# -- the store, on SQLite and PostgreSQL ---------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'budgets.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres")()
    opened = open_store(url)
    opened.migrate()
    yield opened
    opened.close()


def test_the_store_keeps_one_budget_per_target_and_period_and_sums_recorded_spend(store: Store) -> None:
    store.create_key("key_1", "app", "hash-1", "sk-hg-abc", project_id="default")
    made = store.set_budget("default", "key", "key_1", 5.0, "day")
    again = store.set_budget("default", "key", "key_1", 7.5, "day")          # replaces, keeps the id
    assert again["id"] == made["id"] and again["usd"] == 7.5 and again["target_name"] == "app"
    weekly = store.set_budget("default", "key", "key_1", 20.0, "week")
    store.create_project("proj_b", "b")
    theirs = store.set_budget("proj_b", "user", "alice", 1.0, "month")
    # Oldest first; two made in the same millisecond may come in either order.
    assert sorted(b["id"] for b in store.list_budgets(project="default")) == sorted([made["id"], weekly["id"]])
    assert len(store.list_budgets()) == 3
    assert not store.delete_budget(theirs["id"], project="default")           # another project's: untouched
    assert store.delete_budget(theirs["id"], project="proj_b") and not store.delete_budget(theirs["id"])

    day = T0 - T0 % 86_400_000
    store.insert_requests([
        make_row("r1", created_at=day + 1, cost=0.25, user_id="alice"),
        make_row("r2", created_at=day + 2, cost=0.5, user_id="bob"),
        make_row("r3", created_at=day + 3, cost=None, pricing_status="unpriced", user_id="alice"),
        make_row("r4", created_at=day - 1, cost=4.0, user_id="alice"),                      # the day before
        make_row("r5", created_at=day + 4, cost=8.0, user_id="alice", key_id="key_2", project_id="proj_b")])
    end = day + 86_400_000
    assert store.budget_spend("default", "key", day, end, ["key_1"]) == {"key_1": {"spend": 0.75, "unpriced_calls": 1}}
    assert store.budget_spend("default", "user", day, end, ["alice", "carol"]) == {
        "alice": {"spend": 0.25, "unpriced_calls": 1}}
    assert store.budget_spend("default", "project", day - 10, end, ["default"]) == {
        "default": {"spend": 4.75, "unpriced_calls": 1}}


# -- through real gateways ------------------------------------------------------------------------

def cli(env: dict[str, str], *args: str) -> str:
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli_fails(env: dict[str, str], *args: str) -> str:
    done = run_cli(*args, env=env)
    assert done.returncode != 0, done.stdout
    return done.stderr


def new_key(env: dict[str, str], name: str, *more: str) -> str:
    return cli(env, "keys", "create", "--name", name, *more).strip().splitlines()[-1]


def store_env(tmp: Path) -> dict[str, str]:
    """The environment of CLI commands on the store `start_gateway(tmp, …)` serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")}
    return env | {"HELIOGRAPH_DB_URL": f"sqlite:///{tmp / 'heliograph.db'}"}


@dataclass
class World:
    gateway: Gateway
    env: dict[str, str]
    keys: dict[str, str]
    tag: str                                     # X-Budget-Test header: this module's upstream calls


@pytest.fixture(scope="module")
def world(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A gateway whose budgets are set before it starts (so none is waiting for a reload)."""
    tmp = tmp_path_factory.mktemp("budgets")
    env = store_env(tmp)
    cli(env, "projects", "create", "team")
    keys = {"admin": new_key(env, "admin", "--scope", "admin"), "capped": new_key(env, "capped"),
            "free": new_key(env, "free"), "unpriced": new_key(env, "unpriced"), "listed": new_key(env, "listed"),
            "team-a": new_key(env, "team-a", "--project", "team"), "team-b": new_key(env, "team-b", "--project", "team"),
            "team-admin": new_key(env, "team-admin", "--project", "team", "--scope", "admin")}
    cli(env, "budgets", "set", "--key", "capped", "--usd", str(CAP), "--per", "day")
    cli(env, "budgets", "set", "--key", "unpriced", "--usd", "0.00001", "--per", "day")
    cli(env, "budgets", "set", "--key", "listed", "--usd", str(CAP), "--per", "day")
    cli(env, "budgets", "set", "--project", "team", "--usd", str(CAP), "--per", "week")
    cli(env, "budgets", "set", "--user", "capped-user", "--usd", str(CAP), "--per", "month")
    for user in ("stream-user", "anthropic-user"):
        cli(env, "budgets", "set", "--user", user, "--usd", str(CAP), "--per", "day")
    gateway = start_gateway(tmp, fake.url, reuse_key=keys["admin"])
    yield World(gateway, env, keys, uuid.uuid4().hex)
    gateway.stop()


_open: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def sdk(url: str, key: str, tag: str, **options: Any) -> openai.OpenAI:
    made = openai.OpenAI(base_url=url + "/openai/v1", api_key="sk-provider-secret", **{"max_retries": 0, **options},
                         default_headers={"Helicone-Auth": f"Bearer {key}", "X-Budget-Test": tag})
    _open.append(made)
    return made


@dataclass
class Outcome:
    remaining: list[float]                   # Helicone-Budget-Remaining of each admitted call
    costs: list[float]
    refusal: openai.RateLimitError


def spend_until_refused(client: openai.OpenAI, limit: int = 20, **create: Any) -> Outcome:
    remaining: list[float] = []
    costs: list[float] = []
    for _ in range(limit):
        try:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, **create)
        except openai.RateLimitError as refusal:
            return Outcome(remaining, costs, refusal)
        usage = raw.parse().usage
        assert usage is not None
        remaining.append(float(raw.headers["helicone-budget-remaining"]))
        costs.append((usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6)
        time.sleep(0.02)                     # the charge lands after the answer, off the client's path
    raise AssertionError(f"never refused: {remaining}")


def upstream_calls(fake: FakeUpstream, tag: str) -> int:
    return sum(1 for r in list(fake.requests) if r.headers.get("x-budget-test") == tag)


def assert_spent(outcome: Outcome, usd: float) -> None:
    assert outcome.remaining[0] == pytest.approx(usd, abs=1e-6)
    for before, after, cost in zip(outcome.remaining, outcome.remaining[1:], outcome.costs):
        assert after == pytest.approx(max(0.0, before - cost), abs=2e-6)
    assert sum(outcome.costs) >= usd > sum(outcome.costs[:-1])       # one call's overshoot at most
    assert outcome.refusal.response.headers["x-helicone-error"] == "budget_exceeded"
    assert outcome.refusal.response.headers["helicone-budget-remaining"] == "0.000000"


def test_a_key_budget_refuses_before_the_upstream_and_records_the_refusal(world: World, fake: FakeUpstream) -> None:
    sent: list[str] = []
    hooks = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
    # Default retries: the SDK must not retry a budget refusal (x-should-retry: false).
    client = sdk(world.gateway.url, world.keys["capped"], world.tag, max_retries=2, http_client=hooks)
    before = upstream_calls(fake, world.tag)
    outcome = spend_until_refused(client)
    assert len(outcome.costs) == 3 and outcome.costs[0] == pytest.approx(CALL_COST)
    assert_spent(outcome, CAP)
    assert upstream_calls(fake, world.tag) - before == 3              # the refused call never left
    assert len(sent) == 4                                              # and was not retried
    refusal = outcome.refusal
    message = refusal.message
    tomorrow = datetime.fromtimestamp(period_bounds("day", time.time())[1], tz=UTC).strftime("%Y-%m-%dT00:00:00Z")
    assert "Budget exceeded: the daily budget of $0.00002 on key 'capped'" in message
    assert f"it resets at {tomorrow}" in message
    assert refusal.response.headers["x-should-retry"] == "false" and int(refusal.response.headers["retry-after"]) > 0
    assert refusal.body is not None and refusal.code == "budget_exceeded"
    record = world.gateway.record(refusal.response.headers["helicone-id"])
    assert record["error"] == "budget_exceeded" and record["response_status"] == 429
    assert record["cost"] == 0
    # every other key is unaffected
    free = sdk(world.gateway.url, world.keys["free"], world.tag)
    raw = free.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "helicone-budget-remaining" not in raw.headers


def test_a_project_budget_is_shared_by_the_projects_keys(world: World) -> None:
    outcome = spend_until_refused(sdk(world.gateway.url, world.keys["team-a"], world.tag))
    assert_spent(outcome, CAP)
    assert "weekly budget of $0.00002 on project proj_" in outcome.refusal.message
    with pytest.raises(openai.RateLimitError, match="weekly budget"):
        sdk(world.gateway.url, world.keys["team-b"], world.tag).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES)


def test_a_user_budget_follows_the_user_id_and_the_body_user(world: World) -> None:
    client = sdk(world.gateway.url, world.keys["free"], world.tag)
    outcome = spend_until_refused(client, extra_headers={"Helicone-User-Id": "capped-user"})
    assert_spent(outcome, CAP)
    assert "monthly budget of $0.00002 on user 'capped-user' in project default" in outcome.refusal.message
    with pytest.raises(openai.RateLimitError, match="capped-user"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="capped-user")
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="another-user")


def test_streams_are_charged_and_anthropic_routes_refuse_in_anthropics_shape(world: World) -> None:
    client = sdk(world.gateway.url, world.keys["free"], world.tag)
    with pytest.raises(openai.InternalServerError) as failed:      # error answers carry the header too
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user="stream-user",
                                       extra_headers={"X-Fake-Scenario": "status=500"})
    assert failed.value.response.headers["helicone-budget-remaining"] == f"{CAP:.6f}"
    remaining = []
    for _ in range(20):
        try:
            with client.chat.completions.with_streaming_response.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True, user="stream-user") as response:
                remaining.append(float(response.headers["helicone-budget-remaining"]))
                assert b"Echo:" in b"".join(response.iter_bytes())
        except openai.RateLimitError as refusal:
            assert "user 'stream-user'" in refusal.message
            break
        time.sleep(0.02)
    assert remaining == pytest.approx([CAP, CAP - CALL_COST, CAP - 2 * CALL_COST], abs=1e-6)

    claude = anthropic.Anthropic(base_url=world.gateway.url + "/anthropic", api_key="sk-ant-secret", max_retries=2,
                                 default_headers={"Helicone-Auth": f"Bearer {world.keys['free']}",
                                                  "Helicone-User-Id": "anthropic-user"})
    try:
        for _ in range(20):
            claude.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)
            time.sleep(0.02)
        raise AssertionError("never refused")
    except anthropic.RateLimitError as refusal:
        body: Any = refusal.body
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert "daily budget of $0.00002 on user 'anthropic-user'" in refusal.message
    finally:
        claude.close()


def listed(env: dict[str, str], project: str | None = None) -> list[dict[str, Any]]:
    return list(json.loads(cli(env, "budgets", "list", "--json", *(["--project", project] if project else []))))


def test_unpriced_calls_count_zero_and_are_counted(world: World) -> None:
    client = sdk(world.gateway.url, world.keys["unpriced"], world.tag)
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="mystery-model-7", messages=MESSAGES)
        assert raw.headers["helicone-budget-remaining"] == "0.000010"
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while True:
        budget = next(b for b in listed(world.env) if b.get("key_name") == "unpriced")
        if budget["unpriced_calls"] == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert budget["unpriced_calls"] == 4 and budget["spend"] == 0 and budget["remaining"] == 0.00001


def test_the_cli_lists_spend_and_explains_bad_input(world: World) -> None:
    env = world.env
    spent = sum(spend_until_refused(sdk(world.gateway.url, world.keys["listed"], world.tag)).costs)
    deadline = time.monotonic() + 10
    while True:           # once the recorder has written the calls
        budget = next(b for b in listed(env, "default") if b.get("key_name") == "listed")
        if budget["spend"] >= CAP or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert budget["spend"] == pytest.approx(spent) and budget["remaining"] == 0 and budget["unpriced_calls"] == 0
    assert budget["period"] == "day" and budget["target"] == "key" and budget["resets_at"].endswith("T00:00:00Z")
    assert all(b["project_id"] != "default" for b in listed(env, "team"))
    text = cli(env, "budgets", "list")
    assert "$0.00002 per day on key listed" in text and "$0.000000 left, resets" in text
    assert "no active key with id or name 'ghost'" in cli_fails(env, "budgets", "set", "--key", "ghost", "--usd", "1",
                                                                  "--per", "day")
    assert "no project 'ghost'" in cli_fails(env, "budgets", "set", "--project", "ghost", "--usd", "1", "--per", "day")
    assert "usd must be" in cli_fails(env, "budgets", "set", "--project", "team", "--usd", "0", "--per", "day")
    assert "usd must be" in cli_fails(env, "budgets", "set", "--project", "team", "--usd", "lots", "--per", "day")
    assert "--per" in cli_fails(env, "budgets", "set", "--project", "team", "--usd", "1", "--per", "year")
    assert "not both" in cli_fails(env, "budgets", "set", "--key", "free", "--user", "u", "--usd", "1", "--per", "day")
    assert "no budget 'bud_ghost'" in cli_fails(env, "budgets", "delete", "bud_ghost")
    # set, set again (replaces the amount, keeps the id), delete
    first = cli(env, "budgets", "set", "--user", "cli-user", "--project", "team", "--usd", "3", "--per", "week")
    again = cli(env, "budgets", "set", "--user", "cli-user", "--project", "team", "--usd", "4.5", "--per", "week")
    budget_id = first.split()[1].rstrip(":")
    assert again.split()[1].rstrip(":") == budget_id and "$4.50 per week on user 'cli-user' in project proj_" in again
    assert [b["usd"] for b in listed(env, "team") if b["id"] == budget_id] == [4.5]
    assert f"Deleted budget {budget_id}" in cli(env, "budgets", "delete", budget_id)
    assert budget_id not in cli(env, "budgets", "list")


def api(gateway: Gateway, key: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, gateway.url + "/api/v1/budgets" + path, json=body,
                         headers={"Authorization": f"Bearer {key}"})


def test_the_api_sets_lists_and_deletes_in_the_keys_own_project(world: World) -> None:
    gw, keys = world.gateway, world.keys
    for body, field in [({"usd": 1, "period": "day"}, "'target'"), ({"target": "org", "usd": 1, "period": "day"}, "'target'"),
                        ({"target": "project", "usd": 0, "period": "day"}, "'usd'"),
                        ({"target": "project", "usd": "5", "period": "day"}, "'usd'"),
                        ({"target": "project", "usd": True, "period": "day"}, "'usd'"),
                        ({"target": "project", "usd": 1, "period": "year"}, "'period'"),
                        ({"target": "user", "usd": 1, "period": "day"}, "'user'"),
                        ({"target": "key", "usd": 1, "period": "day"}, "'key'"),
                        ({"target": "key", "key": "team-a", "usd": 1, "period": "day"}, "'key'"),   # another project's
                        ({"target": "project", "user": "u", "usd": 1, "period": "day"}, "'user'")]:
        answer = api(gw, keys["admin"], "POST", "", body)
        assert answer.status_code == 400, body
        assert answer.json()["data"] is None and field in answer.json()["error"], (body, answer.json())
    assert api(gw, keys["free"], "GET", "").status_code == 403
    assert "scope 'admin'" in api(gw, keys["free"], "POST", "", {"target": "project", "usd": 1, "period": "day"}).json()["error"]

    made = api(gw, keys["admin"], "POST", "", {"target": "key", "key": "free", "usd": 2.5, "period": "month"})
    assert made.status_code == 201, made.text
    budget = made.json()["data"]
    assert budget["target"] == "key" and budget["key_name"] == "free" and budget["usd"] == 2.5
    assert budget["period"] == "month" and budget["resets_at"].endswith("-01T00:00:00Z")
    assert {"spend", "remaining", "unpriced_calls", "period_start"} <= budget.keys()
    listed_ = api(gw, keys["admin"], "GET", "").json()["data"]
    assert budget["id"] in [b["id"] for b in listed_] and {b["project_id"] for b in listed_} == {"default"}
    # another project's admin neither sees nor deletes it: 404 exactly as for an unknown id
    team = api(gw, keys["team-admin"], "GET", "").json()["data"]
    assert budget["id"] not in [b["id"] for b in team] and {b["project_id"] for b in team} <= {team[0]["project_id"]}
    theirs = api(gw, keys["team-admin"], "DELETE", f"/{budget['id']}")
    unknown = api(gw, keys["team-admin"], "DELETE", "/bud_unknown")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"].replace(budget["id"], "X") == unknown.json()["error"].replace("bud_unknown", "X")
    deleted = api(gw, keys["admin"], "DELETE", f"/{budget['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"data": {"id": budget["id"], "deleted": True}, "error": None}
    assert api(gw, keys["admin"], "DELETE", f"/{budget['id']}").status_code == 404


def test_a_budget_set_over_the_api_is_enforced_within_seconds(world: World) -> None:
    user = f"api-user-{uuid.uuid4().hex[:6]}"
    made = api(world.gateway, world.keys["admin"], "POST", "", {"target": "user", "user": user, "usd": 0.000001,
                                                              "period": "day"})
    assert made.status_code == 201
    client = sdk(world.gateway.url, world.keys["free"], world.tag)
    deadline = time.monotonic() + 8
    with pytest.raises(openai.RateLimitError, match=f"user '{user}'"):
        while time.monotonic() < deadline:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, user=user)
            time.sleep(0.2)


def test_spend_carries_over_a_restart_on_in_process_state(fake: FakeUpstream, tmp_path: Path) -> None:
    env = store_env(tmp_path)
    admin, capped = new_key(env, "admin", "--scope", "admin"), new_key(env, "capped")
    cli(env, "budgets", "set", "--key", "capped", "--usd", str(CAP), "--per", "day")
    tag = uuid.uuid4().hex
    gateway = start_gateway(tmp_path, fake.url, reuse_key=admin)
    try:
        spend_until_refused(sdk(gateway.url, capped, tag))
    finally:
        gateway.stop()
    gateway = start_gateway(tmp_path, fake.url, reuse_key=admin)
    try:
        with pytest.raises(openai.RateLimitError, match="daily budget"):
            sdk(gateway.url, capped, tag).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        gateway.stop()


def test_two_gateways_on_one_redis_enforce_one_budget(fake: FakeUpstream, tmp_path: Path) -> None:
    url = redis_url()
    env = store_env(tmp_path)
    admin, shared, burst = (new_key(env, name, *scope) for name, *scope in
                            (("admin", "--scope", "admin"), ("shared",), ("burst",)))
    cli(env, "budgets", "set", "--key", "shared", "--usd", str(CAP), "--per", "day")
    cli(env, "budgets", "set", "--key", "burst", "--usd", str(10 * CALL_COST), "--per", "day")
    extra = {"HELIOGRAPH_REDIS_URL": url, "HELIOGRAPH_REDIS_KEY_PREFIX": f"hg-budget-test-{uuid.uuid4().hex[:8]}:"}
    a = start_gateway(tmp_path, fake.url, reuse_key=admin, extra_env=extra)
    b = start_gateway(tmp_path, fake.url, reuse_key=admin, extra_env=extra)
    tag = uuid.uuid4().hex
    try:
        # one after the other, alternating: each gateway sees what the other charged
        clients = [sdk(a.url, shared, tag), sdk(b.url, shared, tag)]
        remaining, costs = [], []
        refused: openai.RateLimitError | None = None
        for n in range(10):
            try:
                raw = clients[n % 2].chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
            except openai.RateLimitError as exc:
                refused = exc
                break
            remaining.append(float(raw.headers["helicone-budget-remaining"]))
            costs.append(CALL_COST)
            time.sleep(0.3)     # the charge lands in Redis after the answer; a loaded CI machine needs more than 50 ms
        assert refused is not None and len(costs) == 3
        assert remaining == pytest.approx([CAP, CAP - CALL_COST, CAP - 2 * CALL_COST], abs=1e-6)
        for client in clients:
            with pytest.raises(openai.RateLimitError, match="daily budget"):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

        # all at once on both: at most the calls in flight together overshoot
        workers = 8
        admitted = 0
        lock = threading.Lock()
        burst_clients = [sdk(gw.url, burst, tag) for gw in (a, b) for _ in range(workers // 2)]

        def hammer(client: openai.OpenAI) -> None:
            nonlocal admitted
            for _ in range(6):
                try:
                    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                except openai.RateLimitError:
                    return
                with lock:
                    admitted += 1
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(hammer, burst_clients))
        assert 10 <= admitted <= 10 + workers, admitted
    finally:
        a.stop()
        b.stop()
