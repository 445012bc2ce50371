"""Analytics: rollups kept by the insert path, on SQLite and PostgreSQL, against sums over the rows.

The raw-rows path is forced with a filter the rollups cannot answer but that keeps every row
(`latency gte 0`); the two paths must agree exactly on counts and sums and within the histogram's
stated relative error on percentiles.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from heliograph.storage import Store
from heliograph.storage.analytics import AnalyticsQuery, rollup_plan, segments
from heliograph.storage.filters import parse_filter
from heliograph.storage.histogram import (
    ALPHA,
    BINS,
    MAX_MS,
    bin_of,
    exact_quantiles,
    quantiles,
    representative,
)
from heliograph.storage.rollup_schema import rollup_tables

from . import test_store_contract as contract
from .test_store_contract import T0, make_row

store_url, store = contract.store_url, contract.store     # the contract suite's fixtures: both stores

HOUR = 3_600_000
EVERY_ROW = {"request_response_rmt": {"latency": {"gte": 0}}}
START, END = T0 - 7 * 60_000 - 1234, T0 + 5 * HOUR + 17 * 60_000 + 999    # ragged on purpose


def dataset(n: int = 1500, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        streamed = rnd.random() < 0.5
        latency = rnd.lognormvariate(6.5, 1.0)
        rows.append(make_row(
            f"a{i:05d}", created_at=T0 + int(i * 5 * HOUR / n) - 5 * 60_000, latency_ms=round(latency, 3),
            ttft_ms=round(latency * rnd.uniform(0.05, 0.5), 3) if streamed else None,
            model=rnd.choice(["gpt-4o", "gpt-4o-mini", "claude", None]), provider=rnd.choice(["openai", "anthropic"]),
            status=rnd.choice([200, 200, 200, 429, 500, 0]), cost=rnd.choice([None, 0.0, round(rnd.random() / 100, 9)]),
            user_id=rnd.choice(["u1", "u2", "u3", None]), request_name=rnd.choice(["plan", "act", None]),
            prompt_tokens=rnd.randint(0, 900), completion_tokens=rnd.choice([None, rnd.randint(0, 300)]),
            reasoning_tokens=rnd.randint(0, 5), props={"tier": rnd.choice(["free", "pro"]),
                                                       **({"feature": "x"} if rnd.random() < 0.3 else {})},
            cache_reference_id=f"a{i - 1:05d}" if i % 9 == 1 else None))
    return rows


def close(estimate: float | None, exact: float | None) -> bool:
    if estimate is None or exact is None:
        return estimate is exact
    if exact <= 1.0:                       # bin 0: absolute error ≤ 0.5 ms
        return abs(estimate - exact) <= 0.5
    return abs(estimate - exact) <= ALPHA * exact + 1e-6


def assert_same(rolled: dict[str, Any], exact: dict[str, Any], where: str) -> None:
    for name, value in exact.items():
        if name.startswith(("latency_p", "ttft_p")):
            assert close(rolled[name], value), f"{where} {name}: {rolled[name]} vs exact {value}"
        elif isinstance(value, float):
            assert rolled[name] == pytest.approx(value, rel=1e-9, abs=1e-9), f"{where} {name}"
        else:
            assert rolled[name] == value, f"{where} {name}"


def both_paths(store: Store, **query: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    rolled = store.analytics(AnalyticsQuery(START, END, **query, project="default"))
    exact = store.analytics(AnalyticsQuery(START, END, parse_filter(EVERY_ROW), **query, project="default"))
    # Per-minute series of what is only rolled up by the hour come from the rows.
    by_hour_only = query["bucket"] == "minute" and query["group_by"] in ("user", "request_name", "property:tier")
    assert rolled["source"] == ("mixed" if by_hour_only else "rollups") and exact["source"] == "requests"
    return rolled, exact


# -- histogram --------------------------------------------------------------------------------------

def test_every_bin_represents_its_values_within_alpha() -> None:
    rnd = random.Random(1)
    for _ in range(20_000):
        value = math.exp(rnd.uniform(0, math.log(MAX_MS)))
        assert abs(representative(bin_of(value)) - value) <= ALPHA * value * (1 + 1e-12)
    assert bin_of(0) == bin_of(1.0) == 0 and bin_of(1.0001) == 1 and bin_of(1e12) == BINS - 1


def test_quantiles_from_counts_follow_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    counts = [0] * BINS
    for value in values:
        counts[bin_of(value)] += 1
    assert exact_quantiles(list(values)) == [50.0, 95.0, 99.0]
    for estimate, exact in zip(quantiles(counts), [50.0, 95.0, 99.0]):
        assert estimate is not None and abs(estimate - exact) <= ALPHA * exact
    assert quantiles([0] * BINS) == [None, None, None] and exact_quantiles([]) == [None, None, None]


def test_segments_cut_a_range_into_the_coarsest_whole_buckets() -> None:
    day = 24 * HOUR
    start, end = 2 * day - HOUR - 90_000, 5 * day + 2 * HOUR + 30_000
    assert segments(start, end, ("day", "hour", "minute")) == [
        (None, start, 2 * day - HOUR - 60_000), ("minute", 2 * day - HOUR - 60_000, 2 * day - HOUR),
        ("hour", 2 * day - HOUR, 2 * day), ("day", 2 * day, 5 * day), ("hour", 5 * day, 5 * day + 2 * HOUR),
        (None, 5 * day + 2 * HOUR, end)]
    assert segments(10, 10, ("day",)) == [] and segments(0, 59_999, ("minute",)) == [(None, 0, 59_999)]


@pytest.mark.parametrize("raw,group_by,family", [
    ("all", None, "rollup_model"), ({"request_response_rmt": {"model": {"contains": "gpt"}}}, "provider", "rollup_model"),
    ({"request_response_rmt": {"model": {"contains": "gpt"}}}, "status", "rollup"),
    ({"left": {"request": {"provider": {"equals": "openai"}}}, "operator": "or",
      "right": {"request_response_rmt": {"status": {"gte": 500}}}}, "model", "rollup"),
    ({"request_response_rmt": {"request_name": {"equals": "plan"}}}, None, "rollup_dimension"),
    ("all", "property:tier", "rollup_dimension"),
    ({"properties": {"tier": {"not-equals": "pro"}}}, "property:tier", "rollup_dimension"),
    ({"properties": {"tier": {"equals": "pro"}}}, None, "rollup_dimension"),
    ({"request_response_rmt": {"user_id": {"equals": "u1"}}}, "user", "rollup_user"),
    ({"properties": {"tier": {"not-equals": "pro"}}}, None, None),        # rows without the key match too
    ({"request_response_rmt": {"user_id": {"equals": "u1"}}}, None, None),
    ({"request_response_rmt": {"model": {"equals": "x"}}}, "user", None),
    ({"request_response_rmt": {"request_created_at": {"gte": "2025-01-01T00:00:00Z"}}}, None, None),
    ({"request_response_rmt": {"response_model": {"equals": "x"}}}, None, None),
    ({"request_response_rmt": {"scores": {"q": {"gt": 1}}}}, None, None),
])
def test_which_queries_the_rollups_answer(raw: Any, group_by: str | None, family: str | None) -> None:
    plan = rollup_plan(parse_filter(raw), group_by)
    assert (plan.levels[0][1].prefix if plan else None) == family


# -- both stores ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bucket", ["minute", "hour", "day", None])
def test_rollups_agree_with_the_rows(store: Store, bucket: str | None) -> None:
    store.insert_requests(dataset())
    for group_by in (None, "model", "provider", "status", "user", "request_name", "property:tier"):
        rolled, exact = both_paths(store, bucket=bucket, group_by=group_by)
        assert_same(rolled["summary"], exact["summary"], f"{group_by} summary")
        assert [g["group"] for g in rolled.get("groups", [])] == [g["group"] for g in exact.get("groups", [])]
        for mine, theirs in zip(rolled.get("groups", []), exact.get("groups", [])):
            assert_same(mine, theirs, f"{group_by} group {theirs['group']}")
        assert len(rolled.get("series", [])) == len(exact.get("series", []))
        for mine, theirs in zip(rolled.get("series", []), exact.get("series", [])):
            assert (mine["time"], mine["group"]) == (theirs["time"], theirs["group"])
            assert_same(mine, theirs, f"{group_by} {bucket} {theirs['time']}")
        if group_by == "user":
            assert rolled["groups"][0]["latency_p95"] is None and exact["groups"][0]["latency_p95"] is None
    assert rolled["summary"]["requests"] == sum(START <= r["created_at"] < END for r in dataset())


@pytest.mark.parametrize("bucket", ["minute", "hour", None])
def test_a_brief_query_reports_the_same_requests_cost_and_mean_latency(store: Store, bucket: str | None) -> None:
    store.insert_requests(dataset())
    for group_by in ("model", "user", "property:tier"):
        full = store.analytics(AnalyticsQuery(START, END, bucket=bucket, group_by=group_by, project="default"))
        brief = store.analytics(AnalyticsQuery(START, END, bucket=bucket, group_by=group_by, project="default",
                                               brief=True))
        assert "summary" not in brief and brief["groups_total"] == full["groups_total"]
        kept = ("requests", "cost", "unpriced_requests", "latency_avg")
        for name in ("groups", "series"):
            mine = [{k: row.get(k) for k in ("group", "time", *kept)} for row in brief.get(name, [])]
            assert mine == [{k: row.get(k) for k in ("group", "time", *kept)} for row in full.get(name, [])], name


def test_filters_on_rollup_columns_agree_with_the_rows(store: Store) -> None:
    store.insert_requests(dataset())
    for raw in ({"request_response_rmt": {"model": {"not-equals": "gpt-4o"}, "status": {"lt": 400}}},
                {"left": {"request_response_rmt": {"model": {"like": "gpt%"}}}, "operator": "or",
                 "right": {"request_response_rmt": {"provider": {"ilike": "ANTHROPIC"}}}},
                {"request_response_rmt": {"properties": {"tier": {"equals": "pro"}}}}):
        rolled = store.analytics(AnalyticsQuery(START, END, parse_filter(raw), "hour", None, project="default"))
        both = parse_filter({"left": raw, "operator": "and", "right": EVERY_ROW})
        exact = store.analytics(AnalyticsQuery(START, END, both, "hour", None, project="default"))
        assert rolled["source"] == "rollups", raw
        assert_same(rolled["summary"], exact["summary"], str(raw))
        for mine, theirs in zip(rolled["series"], exact["series"], strict=True):
            assert_same(mine, theirs, str(raw))


def test_groups_are_limited_to_the_largest(store: Store) -> None:
    store.insert_requests(dataset(600))
    result = store.analytics(AnalyticsQuery(START, END, bucket="hour", group_by="model", limit=2, project="default"))
    everything = store.analytics(AnalyticsQuery(START, END, bucket="hour", group_by="model", project="default"))
    assert result["groups_total"] == everything["groups_total"] == 4 and len(result["groups"]) == 2
    assert [g["group"] for g in result["groups"]] == [g["group"] for g in everything["groups"][:2]]
    assert {row["group"] for row in result["series"]} == {g["group"] for g in result["groups"]}
    assert result["summary"] == everything["summary"]


def test_replayed_and_duplicated_rows_count_once(store: Store) -> None:
    rows = dataset(300)
    store.insert_requests(rows[:200] + rows[:10])
    store.insert_requests(rows[100:])                     # a journal replay overlapping what is stored
    summary = store.analytics(AnalyticsQuery(T0 - HOUR, T0 + 6 * HOUR, bucket=None, project="default"))["summary"]
    assert summary["requests"] == store.count_requests() == 300


def test_a_property_set_later_moves_between_values(store: Store) -> None:
    store.insert_requests([make_row("p1", props={"Tier": "free"}), make_row("p2", props={"tier": "free"})])
    assert store.set_properties("p1", {"TIER": "pro", "region": "eu"}, project="default")
    assert store.set_properties("p1", {"tier": "pro"}, project="default")    # unchanged: nothing moves
    values = {v["value"]: v["requests"]
              for v in store.property_values("tier", project="default", start=T0 - HOUR, end=T0 + HOUR)}
    assert values == {"free": 1, "pro": 1}
    assert {k["property"]: k["requests"] for k in store.property_keys(project="default")} == {"tier": 2, "region": 1}


def test_rows_stored_before_the_rollups_are_backfilled(store: Store) -> None:
    rows = dataset(400)
    store.insert_requests(rows)
    query = AnalyticsQuery(START, END, bucket="hour", group_by="property:tier", project="default")
    expected = store.analytics(query)
    with store._transaction() as tx:  # type: ignore[attr-defined]
        for table in rollup_tables():
            tx.execute(f"DROP TABLE {table}")
        tx.execute(store.dialect.sql("DELETE FROM migrations WHERE name IN (?, ?, ?, ?)"),
                   ("010_rollups", "011_rollups_backfill", "024_rollups_by_project", "031_rollups_cache_hits"))
    # 010 makes the tables as they first were, 011 fills them, 024 keys them by project, 031 adds cache hits.
    assert store.migrate() == ["010_rollups", "011_rollups_backfill", "024_rollups_by_project",
                               "031_rollups_cache_hits"]
    assert store.migrate() == []
    assert store.analytics(query) == expected and expected["summary"]["cache_hits"] > 0


def test_cache_hits_of_a_store_older_than_the_column_are_counted_from_its_rows(store: Store) -> None:
    rows = dataset(600)
    store.insert_requests(rows)
    queries = [AnalyticsQuery(START, END, bucket=bucket, group_by=group_by, project="default")
               for bucket, group_by in (("minute", None), ("hour", "status"), ("hour", "model"), ("day", "user"),
                                        ("hour", "request_name"), (None, "property:tier"))]
    expected = [store.analytics(query) for query in queries]
    hits = sum(START <= r["created_at"] < END and r["cache_reference_id"] is not None for r in rows)
    assert all(answer["summary"]["cache_hits"] == hits > 0 for answer in expected)
    with store._transaction() as tx:  # type: ignore[attr-defined]
        for table in rollup_tables():
            if table != "rollup_sessions":
                tx.execute(f"ALTER TABLE {table} DROP COLUMN cache_hits")     # as the store was before 031
        tx.execute(store.dialect.sql("DELETE FROM migrations WHERE name = ?"), ("031_rollups_cache_hits",))
    assert store.migrate() == ["031_rollups_cache_hits"]
    assert [store.analytics(query) for query in queries] == expected


def test_huge_raw_reads_fall_back_to_histograms(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from heliograph.storage import analytics
    store.insert_requests(dataset(600))
    every_row = AnalyticsQuery(START, END, parse_filter(EVERY_ROW), bucket="hour", group_by="model", project="default")
    exact = store.analytics(every_row)
    monkeypatch.setattr(analytics, "EXACT_LIMIT", 10)
    bounded = store.analytics(every_row)
    rolled = store.analytics(AnalyticsQuery(START, END, bucket="hour", group_by="model", project="default"))
    assert bounded["source"] == "requests" and bounded["summary"] == rolled["summary"]
    assert_same(bounded["summary"], exact["summary"], "summary")
    for mine, theirs in zip(bounded["series"], exact["series"], strict=True):
        assert_same(mine, theirs, f"{theirs['time']} {theirs['group']}")


def test_unrolled_requests_leave_no_trace_in_the_rollups(store: Store) -> None:
    from heliograph.storage.rollups import unroll_requests
    rows = dataset(500) + [make_row("secret", user_id="zed", props={"email": "zed@example.com"}, created_at=T0)]
    store.insert_requests(rows)
    gone = [r for r in rows if r["user_id"] in ("zed", "u2")]
    with store._transaction() as tx:  # type: ignore[attr-defined]
        stored = [tx.execute(store.dialect.sql("SELECT * FROM requests WHERE id = ?"), (r["id"],)).fetchone()
                  for r in gone]
        unroll_requests(tx, store.dialect, stored)
        for r in gone:
            tx.execute(store.dialect.sql("DELETE FROM requests WHERE id = ?"), (r["id"],))
            tx.execute(store.dialect.sql("DELETE FROM request_properties WHERE request_id = ?"), (r["id"],))
    for group_by in (None, "model", "status", "property:tier", "request_name"):
        rolled, exact = both_paths(store, bucket="hour", group_by=group_by)
        assert_same(rolled["summary"], exact["summary"], f"{group_by} summary")
        assert [(g["group"], g["requests"]) for g in rolled.get("groups", [])] == [
            (g["group"], g["requests"]) for g in exact.get("groups", [])]
    assert store.property_values("email", project="default") == []
    assert "email" not in {k["property"] for k in store.property_keys(project="default")}


def test_the_evaluators_edge_memo_reads_each_minute_once_and_agrees_with_the_rows(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alert evaluations one minute apart (storage/edges.py): after the first, only new minutes and the
    partial ones at the ends are read; a request recorded late into a kept minute is counted."""
    from heliograph.storage.edges import EdgeMemo
    from heliograph.storage.filters import ALL
    store.insert_requests(dataset())
    spans: list[int] = []
    raw_cells = type(store)._raw_cells

    def spy(self: Any, cells: Any, project: str, node: Any, start: int, end: int, *args: Any, **kwargs: Any) -> None:
        spans.append(end - start)
        raw_cells(self, cells, project, node, start, end, *args, **kwargs)
    monkeypatch.setattr(type(store), "_raw_cells", spy)
    memo, now = EdgeMemo(), T0 + 3 * HOUR + 1234
    for tick in range(4):
        memo.next_evaluation()
        at = now + tick * 60_000
        if tick == 3:       # a long stream's record, 7 minutes after it started, in a minute already kept
            store.insert_requests([make_row("late", created_at=at - 7 * 60_000, user_id="u1", props={"tier": "pro"},
                                            request_name="plan", cache_reference_id="a00001")])
        for group_by in (None, "user", "request_name", "property:tier"):
            for window in (5 * 60_000, 2 * HOUR):
                query = AnalyticsQuery(at - window, at, ALL, None, group_by, 1000, project="default")
                spans.clear()
                kept = store.group_metrics(query, percentiles=False, memo=memo)
                read = list(spans)
                assert kept == store.group_metrics(query, percentiles=False), (tick, group_by, window)
                with_percentiles = store.group_metrics(query, memo=memo)
                for group, exact in store.group_metrics(query).items():
                    assert_same(with_percentiles[group], exact, f"{tick} {group_by} {window} {group}")
                if tick == 0 and group_by is not None and window > HOUR:
                    assert max(read) > 30 * 60_000      # the first evaluation reads the edges' rows
                if tick in (1, 2):
                    assert read and max(read) <= 60_000, (tick, group_by, window, read)
    assert memo.minutes_read > 0
