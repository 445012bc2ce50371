"""One contract for every store: the same scenarios on SQLite and on PostgreSQL.

PostgreSQL comes from HELIOGRAPH_TEST_POSTGRES_URL (DESIGN §5): skipped with a reason when
unset, a failure when CI is set. Each test gets a fresh SQLite file or a fresh PostgreSQL schema.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from heliograph.storage import RequestQuery, Store, open_store
from heliograph.storage.filters import parse_filter, parse_sort
from heliograph.storage.schema import MIGRATIONS

T0 = 1_750_000_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def make_row(request_id: str, **fields: Any) -> dict[str, Any]:
    """A stored row as the recorder builds it (recording/process.py)."""
    properties = fields.pop("props", {})
    row: dict[str, Any] = {
        "id": request_id, "created_at": T0, "provider": "openai", "method": "POST",
        "path": "/openai/v1/chat/completions", "target_url": "https://api.openai.com/v1/chat/completions",
        "status": 200, "request_model": "gpt-4o", "response_model": "gpt-4o", "model": "gpt-4o",
        "user_id": None, "session_id": None, "session_path": None, "session_name": None, "request_name": None,
        "properties": orjson.dumps(properties).decode(), "key_id": "key_1", "prompt_tokens": 10,
        "completion_tokens": 20, "total_tokens": 30, "prompt_cache_read_tokens": 0, "prompt_cache_write_tokens": 0,
        "reasoning_tokens": 0, "cost": 0.001, "pricing_status": "priced", "latency_ms": 100.0, "ttft_ms": None,
        "gateway_overhead_ms": 0.4, "streamed": False, "partial": False, "error": None, "cache_enabled": False,
        "cache_reference_id": None, "prompt_id": None, "prompt_version": None, "prompt_inputs": None, "attempts": "[]",
        "fallback_index": None, "project_id": "default", "request_body": zlib.compress(b'{"model": "gpt-4o"}'),
        "response_body": zlib.compress(b'{"id": "chatcmpl-1"}'),
    }
    row.update(fields)
    return row


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    fresh: Callable[[], str] = request.getfixturevalue("fresh_postgres")
    return fresh()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    opened.migrate()
    yield opened
    opened.close()


# -- migrations ------------------------------------------------------------------------------------

def test_migrate_twice_is_a_no_op(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.migrate() == [name for name, _ in MIGRATIONS]
        assert store.migrate() == []
        store.ping()
    finally:
        store.close()


def test_concurrent_migrations_apply_each_step_once(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def migrate(store: Store) -> list[str]:
        barrier.wait()
        try:
            return store.migrate()
        finally:
            store.close()

    with ThreadPoolExecutor(len(stores)) as pool:
        applied = list(pool.map(migrate, stores))
    assert sorted(name for names in applied for name in names) == sorted(name for name, _ in MIGRATIONS)


# -- rows --------------------------------------------------------------------------------------------

def test_insert_then_get_round_trips_every_column(store: Store) -> None:
    row = make_row("r-1", user_id="u", props={"feature": "support"}, streamed=True, partial=True,
                   cache_enabled=True, ttft_ms=12.5, cost=None, pricing_status="unpriced", attempts='[{"status": 429}]',
                   response_stream=zlib.compress(b'data: {"id": "chatcmpl-1"}\n\n'))
    store.insert_requests([row])
    got = store.get_request("r-1", project="default")
    assert got is not None
    for column, value in row.items():
        assert got[column] == value, column
    assert got["streamed"] is True and got["partial"] is True and got["cache_enabled"] is True
    fresh = store.get_request("r-1", project="default")
    assert fresh is not None and fresh["scores"] == {}
    assert store.get_request("missing", project="default") is None
    assert store.count_requests() == 1


def test_insert_is_idempotent_on_id(store: Store) -> None:
    store.insert_requests([make_row("a", status=200), make_row("b")])
    store.insert_requests([make_row("a", status=500), make_row("c")])   # a journal replay, say
    assert store.count_requests() == 3
    got = store.get_request("a", project="default")
    assert got is not None and got["status"] == 200
    only_a = RequestQuery(project="default", filter=parse_filter({"properties": {"k": {"equals": "v"}}}))
    store.insert_requests([make_row("d", props={"k": "v"})] * 2)
    assert [r["id"] for r in store.query_requests(only_a)] == ["d"]


def test_text_with_nul_characters_is_stored(store: Store) -> None:
    store.insert_requests([make_row("nul", request_model="gpt\x00-4o", user_id="a\x00b")])
    got = store.get_request("nul", project="default")
    assert got is not None and got["request_model"].startswith("gpt") and got["user_id"].startswith("a")


# -- keys --------------------------------------------------------------------------------------------

def test_keys_create_list_revoke_active(store: Store) -> None:
    store.create_key("key_a", "alpha", "hash-a", "sk-hg-aaa")
    store.create_key("key_b", "beta", "hash-b", "sk-hg-bbb", scope="read", expires_at=T0)
    assert [k["name"] for k in store.list_keys()] == ["alpha", "beta"]
    assert store.active_keys() == {
        "hash-a": {"id": "key_a", "name": "alpha", "project_id": "default", "scope": "proxy", "expires_at": None},
        "hash-b": {"id": "key_b", "name": "beta", "project_id": "default", "scope": "read", "expires_at": T0}}
    assert store.revoke_key("alpha") == 1
    assert store.revoke_key("key_a") == 0
    assert list(store.active_keys()) == ["hash-b"]
    revoked = {k["name"]: k["revoked_at"] for k in store.list_keys()}
    assert revoked["alpha"] is not None and revoked["beta"] is None


# -- scores and properties -----------------------------------------------------------------------

def test_scores_upsert_by_name(store: Store) -> None:
    store.insert_requests([make_row("s")])
    assert store.set_scores("s", {"accuracy": 80, "helicone-score-feedback": 1}, project="default")
    assert store.set_scores("s", {"accuracy": -3}, project="default")
    got = store.get_request("s", project="default")
    assert got is not None and got["scores"] == {"accuracy": -3, "helicone-score-feedback": 1}
    assert not store.set_scores("nope", {"accuracy": 1}, project="default")
    assert store.scores(["s", "nope"], project="default") == {"s": {"accuracy": -3, "helicone-score-feedback": 1}}


def test_properties_update_the_record_and_the_filter(store: Store) -> None:
    store.insert_requests([make_row("p", props={"feature": "support"})])
    assert store.set_properties("p", {"Environment": "prod", "feature": "billing"}, project="default")
    got = store.get_request("p", project="default")
    assert got is not None and orjson.loads(got["properties"]) == {"feature": "billing", "environment": "prod"}
    found = store.query_requests(RequestQuery(
        project="default", filter=parse_filter({"properties": {"ENVIRONMENT": {"equals": "prod"}}})))
    assert [r["id"] for r in found] == ["p"]
    gone = store.query_requests(RequestQuery(
        project="default", filter=parse_filter({"properties": {"feature": {"equals": "support"}}})))
    assert gone == []
    assert not store.set_properties("nope", {"a": "b"}, project="default")


# -- queries -----------------------------------------------------------------------------------------

def _dataset(store: Store) -> None:
    store.insert_requests([
        make_row("r1", created_at=T0, user_id="u1", model="gpt-4o", status=200, latency_ms=100.0, cost=0.01,
                 props={"feature": "support", "env": "prod"}, session_id="s1", request_name="plan", prompt_id="p1"),
        make_row("r2", created_at=T0 + 1000, user_id="u2", model="gpt-4o-mini", status=500, latency_ms=300.0,
                 cost=0.0, props={"feature": "Billing"}, session_id="s1"),
        make_row("r3", created_at=T0 + 2000, user_id=None, model="claude-3-5-sonnet", provider="anthropic",
                 latency_ms=50.0, cost=None, cache_enabled=True, cache_reference_id="r1", ttft_ms=20.0,
                 prompt_tokens=None, total_tokens=None),
        make_row("r4", created_at=T0 + 3000, user_id="u1", model="GPT_4o%special", status=429, latency_ms=1000.0,
                 cost=0.5, props={"feature": "50% off_deal"}, request_name="Plan", path="/openai/v1/embeddings"),
    ])
    store.set_scores("r1", {"quality": 5, "helicone-score-feedback": 1}, project="default")
    store.set_scores("r2", {"helicone-score-feedback": 0}, project="default")


RMT = "request_response_rmt"


def leaf(column: str, op: str, value: Any, table: str = RMT) -> dict[str, Any]:
    return {table: {column: {op: value}}}


FILTER_CASES: list[tuple[str, Any, list[str]]] = [
    ("all", "all", ["r4", "r3", "r2", "r1"]),
    ("empty leaf", {}, ["r4", "r3", "r2", "r1"]),
    ("user equals", leaf("user_id", "equals", "u1"), ["r4", "r1"]),
    ("user not-equals keeps rows without a user", leaf("user_id", "not-equals", "u1"), ["r3", "r2"]),
    ("like is case-sensitive", leaf("model", "like", "gpt-4o%"), ["r2", "r1"]),
    ("like without wildcard is exact", leaf("model", "like", "gpt-4o"), ["r1"]),
    ("ilike", leaf("model", "ilike", "GPT%"), ["r4", "r2", "r1"]),
    ("contains ignores case", leaf("model", "contains", "4O"), ["r4", "r2", "r1"]),
    ("contains takes % and _ literally", leaf("model", "contains", "_4o%"), ["r4"]),
    ("not-contains", leaf("model", "not-contains", "gpt"), ["r3"]),
    ("status gte", leaf("status", "gte", 400), ["r4", "r2"]),
    ("latency lt", leaf("latency", "lt", 100), ["r3"]),
    ("latency equals, number as text", leaf("latency", "equals", "100"), ["r1"]),
    ("cost equals zero", leaf("cost", "equals", 0), ["r2"]),
    ("cost gt skips unpriced", leaf("cost", "gt", 0.001), ["r4", "r1"]),
    ("ttft", leaf("time_to_first_token", "gt", 10), ["r3"]),
    ("time range", {RMT: {"request_created_at": {"gte": iso(T0 + 1000), "lt": iso(T0 + 3000)}}}, ["r3", "r2"]),
    ("time equals", leaf("request_created_at", "equals", iso(T0)), ["r1"]),
    ("request table created_at", leaf("created_at", "gt", iso(T0 + 2500), "request"), ["r4"]),
    ("response table status", leaf("status", "equals", 500, "response"), ["r2"]),
    ("cached", leaf("cached", "equals", True), ["r3"]),
    ("not cached", leaf("cached", "equals", False), ["r4", "r2", "r1"]),
    ("cache_enabled", leaf("cache_enabled", "equals", "true"), ["r3"]),
    ("provider", leaf("provider", "equals", "anthropic"), ["r3"]),
    ("property", {RMT: {"properties": {"feature": {"equals": "support"}}}}, ["r1"]),
    ("property key ignores case", {RMT: {"properties": {"FEATURE": {"equals": "support"}}}}, ["r1"]),
    ("property value keeps case", {RMT: {"properties": {"feature": {"equals": "billing"}}}}, []),
    ("property ilike", {RMT: {"properties": {"feature": {"ilike": "billing"}}}}, ["r2"]),
    ("property like", {RMT: {"properties": {"feature": {"like": "billing"}}}}, []),
    ("property contains literal %", {RMT: {"properties": {"feature": {"contains": "50%"}}}}, ["r4"]),
    ("property not-equals keeps rows without it",
     {RMT: {"properties": {"feature": {"not-equals": "support"}}}}, ["r4", "r3", "r2"]),
    ("legacy properties table", {"properties": {"env": {"equals": "prod"}}}, ["r1"]),
    ("two properties", {RMT: {"properties": {"env": {"equals": "prod"}, "feature": {"equals": "support"}}}}, ["r1"]),
    ("session as Helicone's property", {"properties": {"Helicone-Session-Id": {"equals": "s1"}}}, ["r2", "r1"]),
    ("session column", leaf("session_id", "equals", "s1"), ["r2", "r1"]),
    ("request name keeps case", leaf("request_name", "equals", "plan"), ["r1"]),
    ("path", leaf("path", "contains", "embeddings"), ["r4"]),
    ("prompt id", leaf("prompt_id", "equals", "p1"), ["r1"]),
    ("score", {RMT: {"scores": {"quality": {"gte": 5}}}}, ["r1"]),
    ("score bool value", {RMT: {"scores": {"helicone-score-feedback": {"equals": False}}}}, ["r2"]),
    ("feedback true", leaf("helicone-score-feedback", "equals", True), ["r1"]),
    ("feedback false", leaf("helicone-score-feedback", "equals", False), ["r2"]),
    ("scored", leaf("scored", "equals", True), ["r2", "r1"]),
    ("or", {"left": leaf("user_id", "equals", "u2"), "operator": "or", "right": leaf("model", "contains", "claude")},
     ["r3", "r2"]),
    ("nested", {"left": leaf("status", "equals", 200), "operator": "and",
                "right": {"left": leaf("user_id", "equals", "u1"), "operator": "or", "right": leaf("cached", "equals", True)}},
     ["r3", "r1"]),
    ("quote in a value is literal", leaf("user_id", "equals", "u1' OR '1'='1"), []),
    ("quote in a property name is literal", {"properties": {"feature') OR 1=1 --": {"equals": "x"}}}, []),
    ("not-equals on a property name with a quote matches all",
     {"properties": {"x' OR 1=1 --": {"not-equals": "y"}}}, ["r4", "r3", "r2", "r1"]),
]


@pytest.mark.parametrize("raw,expected", [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_query_filters(store: Store, raw: Any, expected: list[str]) -> None:
    _dataset(store)
    rows = store.query_requests(RequestQuery(project="default", filter=parse_filter(raw)))
    assert [r["id"] for r in rows] == expected


SORT_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"created_at": "asc"}, ["r1", "r2", "r3", "r4"]),
    ({"latency": "asc"}, ["r3", "r1", "r2", "r4"]),
    ({"cost": "desc"}, ["r4", "r1", "r2", "r3"]),          # unpriced last
    ({"cost": "asc"}, ["r2", "r1", "r4", "r3"]),
    ({"user_id": "asc", "created_at": "desc"}, ["r4", "r1", "r2", "r3"]),
    ({"properties": {"feature": "asc"}}, ["r4", "r2", "r1", "r3"]),
]


@pytest.mark.parametrize("sort,expected", SORT_CASES)
def test_query_sorts(store: Store, sort: dict[str, Any], expected: list[str]) -> None:
    _dataset(store)
    assert [r["id"] for r in store.query_requests(RequestQuery(project="default", sort=parse_sort(sort)))] == expected


def test_query_pages_bodies_and_scores(store: Store) -> None:
    _dataset(store)
    page = store.query_requests(RequestQuery(project="default", limit=2, offset=1))
    assert [r["id"] for r in page] == ["r3", "r2"]
    assert page[1]["scores"] == {"helicone-score-feedback": 0}
    assert zlib.decompress(page[0]["request_body"]) == b'{"model": "gpt-4o"}'
    bare = store.query_requests(RequestQuery(project="default", include_bodies=False, limit=1))
    assert "request_body" not in bare[0] and bare[0]["id"] == "r4"
    assert isinstance(bare[0]["cache_enabled"], bool)


def test_query_keyset_pages_on_created_at_and_id(store: Store) -> None:
    # Two rows share a created_at: the id breaks the tie, so no row is skipped or repeated.
    store.insert_requests([make_row(f"k{n}", created_at=T0 + n // 2) for n in range(7)])
    for descending in (True, False):
        sort = parse_sort({"created_at": "desc" if descending else "asc"})
        seen: list[str] = []
        cursor = None
        while True:
            page = store.query_requests(RequestQuery(project="default", sort=sort, limit=3, include_bodies=False,
                                                     cursor=cursor))
            seen += [r["id"] for r in page]
            if len(page) < 3:
                break
            cursor = (page[-1]["created_at"], page[-1]["id"])
        assert seen == sorted(seen, reverse=descending) and len(seen) == 7
    with pytest.raises(ValueError):
        store.query_requests(RequestQuery(project="default", sort=parse_sort({"cost": "asc"}), cursor=(T0, "k1")))


def test_instance_secrets_are_made_once_and_kept(store: Store) -> None:
    first = store.instance_secret("dashboard_session")
    assert len(first) >= 32 and store.instance_secret("dashboard_session") == first
    assert store.instance_secret("another") != first


def test_rare_and_common_property_values_give_the_same_rows(store: Store) -> None:
    # SQLite plans these two differently (index-driven for rare values); the rows must not differ.
    rows = [make_row(f"c{n:04d}", created_at=T0 + n, props={"tier": "common" if n % 2 else "rare" if n < 6 else "x"})
            for n in range(2100)]
    store.insert_requests(rows)
    for value in ("rare", "common"):
        expected = sorted((r["id"] for r in rows if orjson.loads(r["properties"])["tier"] == value), reverse=True)
        got = store.query_requests(RequestQuery(project="default", limit=1000, include_bodies=False,
                                                filter=parse_filter({"properties": {"tier": {"equals": value}}})))
        assert [r["id"] for r in got] == expected[:1000]


def test_every_column_and_operator_runs(store: Store) -> None:
    from .test_filters import _every_condition_tree, _flatten
    _dataset(store)
    tree, _ = _every_condition_tree()
    rows = store.query_requests(RequestQuery(project="default", filter=parse_filter(_flatten(tree)), sort=parse_sort(
        {"cost": "asc", "properties": {"feature": "desc"}, "user_id": "desc"})))
    assert {r["id"] for r in rows} == {"r1", "r2", "r3", "r4"}


def test_an_unreachable_database_is_store_unavailable(tmp_path: Path) -> None:
    from heliograph.storage import StoreUnavailable
    down = open_store("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreUnavailable):
        down.ping()
    with pytest.raises(StoreUnavailable):
        down.insert_requests([make_row("x")])
    down.close()


def test_postgres_reads_survive_a_dropped_connection(fresh_postgres: Callable[[], str]) -> None:
    import psycopg

    from heliograph.storage.postgres import PostgresStore
    store = PostgresStore(fresh_postgres())
    try:
        store.migrate()
        pid = store.connection().info.backend_pid
        with psycopg.connect(store.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits until it is gone
        store.ping()
        assert store.connection().info.backend_pid != pid
    finally:
        store.close()


def test_a_replayed_row_is_stored_once_and_a_reused_id_gets_a_fresh_one(store: Store) -> None:
    assert store.insert_requests([make_row("dup-1", props={"feature": "a"})]) == []
    # The same call again (a journal replay): nothing changes.
    assert store.insert_requests([make_row("dup-1", props={"feature": "a"})]) == []
    # Another call under the same id (a client reusing Helicone-Request-Id): kept under a fresh id.
    reassigned = store.insert_requests([make_row("dup-1", created_at=T0 + 5, props={"feature": "b"})])
    assert len(reassigned) == 1 and reassigned[0][0] == "dup-1"
    moved = store.get_request(reassigned[0][1], project="default")
    assert moved is not None and moved["created_at"] == T0 + 5 and orjson.loads(moved["properties"]) == {"feature": "b"}
    original = store.get_request("dup-1", project="default")
    assert original is not None and original["created_at"] == T0
    assert store.count_requests() == 2
    # Two calls with one id in one batch: both kept.
    store.insert_requests([make_row("dup-2"), make_row("dup-2", created_at=T0 + 1)])
    assert store.count_requests() == 4


# -- projects: every read and every change is one project's -----------------------------------------

A, B = "default", "proj_b"
HOUR = 3_600_000


def two_projects(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two projects sharing user ids, a session id, a property key and a request name, interleaved in
    time and written in one batch (their rollup keys side by side)."""
    mine = [make_row(f"a{i}", project_id=A, created_at=T0 + i * 37 * 60_000, user_id=("alice", "bob")[i % 2],
                     session_id="shared", session_path="/plan", session_name="mine", request_name="plan",
                     props={"tier": "free"}, cost=0.001 * (i + 1), latency_ms=100.0 + i) for i in range(6)]
    theirs = [make_row(f"b{i}", project_id=B, created_at=T0 + i * 37 * 60_000 + 30_000, user_id="alice",
                       session_id="shared" if i < 3 else "theirs", session_path="/act", session_name="theirs",
                       request_name="plan", props={"tier": "pro", "b_secret": "x"}, cost=0.5, latency_ms=900.0,
                       status=500 if i == 0 else 200, model="claude", provider="anthropic") for i in range(4)]
    store.insert_requests(mine + theirs)
    return mine, theirs


def _ids(rows: Any) -> list[str]:
    return sorted(row["id"] for row in rows)


def test_another_projects_request_is_an_unknown_one(store: Store) -> None:
    two_projects(store)
    assert store.get_request("b0", project=A) is None
    theirs = store.get_request("b0", project=B)
    assert theirs is not None and theirs["project_id"] == B
    assert store.request_exists("b0")                   # ids are unique store-wide: the recorder asks
    assert (store.count_requests(project=A), store.count_requests(project=B), store.count_requests()) == (6, 4, 10)
    assert store.count_requests(project="nope") == 0


def test_queries_and_exports_read_one_project(store: Store) -> None:
    mine, theirs = two_projects(store)

    def ids(project: str, raw: Any = "all") -> list[str]:
        return _ids(store.query_requests(RequestQuery(project=project, filter=parse_filter(raw), limit=1000)))

    assert ids(A) == _ids(mine) and ids(B) == _ids(theirs)
    assert ids(A, leaf("user_id", "equals", "alice")) == ["a0", "a2", "a4"]
    assert ids(A, leaf("session_id", "equals", "shared")) == _ids(mine)
    assert ids(A, {"properties": {"tier": {"equals": "pro"}}}) == []
    assert ids(A, {"properties": {"b_secret": {"not-equals": "y"}}}) == _ids(mine)
    assert ids(B, leaf("request_name", "equals", "plan")) == _ids(theirs)
    assert [r["id"] for r in store.iter_requests(project=B)] == ["b0", "b1", "b2", "b3"]
    alice = parse_filter(leaf("user_id", "equals", "alice"))
    assert [r["id"] for r in store.iter_requests(alice, project=A, page_size=2)] == ["a0", "a2", "a4"]
    assert list(store.iter_requests(project="nope")) == []


def test_scores_and_properties_of_another_project_are_not_changed(store: Store) -> None:
    two_projects(store)
    assert not store.set_scores("b1", {"q": 1}, project=A)
    assert not store.set_properties("b1", {"tier": "free", "leak": "x"}, project=A)
    assert store.set_scores("b1", {"q": 2}, project=B) and store.set_scores("a1", {"q": 3}, project=A)
    assert store.scores(["a1", "b1"], project=A) == {"a1": {"q": 3}}
    assert store.scores(["a1", "b1"], project=B) == {"b1": {"q": 2}}
    theirs = store.get_request("b1", project=B)
    assert theirs is not None and theirs["scores"] == {"q": 2}
    assert orjson.loads(theirs["properties"]) == {"tier": "pro", "b_secret": "x"}
    assert "leak" not in {k["property"] for k in store.property_keys(project=B)}
    assert [v["value"] for v in store.property_values("tier", project=B)] == ["pro"]
    scored = RequestQuery(project=A, filter=parse_filter(leaf("scored", "equals", True)))
    assert [r["id"] for r in store.query_requests(scored)] == ["a1"]


def test_analytics_are_per_project(store: Store) -> None:
    from heliograph.storage.analytics import AnalyticsQuery
    from heliograph.storage.filters import ALL
    mine, theirs = two_projects(store)
    # A third project holding a copy of A's rows: any row of B counted in A would set A apart.
    store.insert_requests([{**row, "id": "copy-" + row["id"], "project_id": "copy"} for row in mine])
    every_row = parse_filter({"request_response_rmt": {"latency": {"gte": 0}}})   # the rows' path
    start, end = T0 - 7 * 60_000 - 1234, T0 + 5 * HOUR + 17 * 60_000    # ragged: rows and rollups
    for group_by in (None, "model", "provider", "status", "user", "request_name", "property:tier"):
        for node in (ALL, every_row):
            for bucket in ("minute", "hour", None):
                answer = {project: store.analytics(AnalyticsQuery(start, end, node, bucket, group_by, project=project))
                          for project in (A, B, "copy")}
                assert answer[A] == answer["copy"], (group_by, bucket)
                for project, rows in ((A, mine), (B, theirs)):
                    summary = answer[project]["summary"]
                    assert summary["requests"] == len(rows), (project, group_by, bucket)
                    assert summary["cost"] == pytest.approx(sum(r["cost"] for r in rows))
                    if group_by == "property:tier":
                        assert [g["group"] for g in answer[project]["groups"]] == [("free", "pro")[project == B]]


def test_sessions_users_and_properties_are_per_project(store: Store) -> None:
    from heliograph.storage.sessions import SessionQuery, UserQuery
    two_projects(store)
    assert [(s["session_id"], s["total_requests"], s["session_name"]) for s in store.sessions(SessionQuery(project=A))
            ] == [("shared", 6, "mine")]
    assert sorted((s["session_id"], s["total_requests"]) for s in store.sessions(SessionQuery(project=B))) == [
        ("shared", 3), ("theirs", 1)]
    shared = store.session("shared", project=A)
    assert shared is not None and shared["total_requests"] == 6 and shared["total_cost"] == pytest.approx(0.021)
    assert [c["path"] for c in shared["tree"]["children"]] == ["/plan"] and shared["tree"]["request_count"] == 6
    assert store.session("theirs", project=A) is None
    users = {project: {u["user_id"]: (u["total_requests"], u["cost"]) for u in store.users(UserQuery(project=project))}
             for project in (A, B)}
    assert users == {A: {"alice": (3, pytest.approx(0.009)), "bob": (3, pytest.approx(0.012))},
                     B: {"alice": (4, pytest.approx(2.0))}}
    only = store.users(UserQuery(project=A, user_ids=("alice",), start=T0 + 1, end=T0 + 4 * HOUR))  # ragged: rows
    assert [(u["user_id"], u["total_requests"]) for u in only] == [("alice", 2)]
    assert store.property_keys(project=A) == [{"property": "tier", "requests": 6, "cost": pytest.approx(0.021)}]
    assert {k["property"] for k in store.property_keys(project=B)} == {"tier", "b_secret"}
    assert [k["requests"] for k in store.property_keys(project=A, start=T0 + 1, end=T0 + 2 * HOUR)] == [3]
    assert [(v["value"], v["requests"]) for v in store.property_values("tier", project=A)] == [("free", 6)]
    assert store.property_values("b_secret", project=A) == []


def test_erasing_a_user_leaves_the_same_id_in_another_project(store: Store) -> None:
    from heliograph.storage.analytics import AnalyticsQuery
    from heliograph.storage.sessions import SessionQuery, UserQuery
    _, theirs = two_projects(store)

    def seen_by_b() -> list[Any]:
        return [store.analytics(AnalyticsQuery(T0 - HOUR, T0 + 6 * HOUR, bucket="hour", group_by="user", project=B)),
                store.users(UserQuery(project=B)), store.sessions(SessionQuery(project=B)),
                store.session("shared", project=B), store.property_keys(project=B),
                [store.get_request(row["id"], project=B) for row in theirs]]

    before = seen_by_b()
    erasure = store.erase_user("alice", project=A, actor="cli")
    assert erasure.deleted["requests"] == 3
    assert seen_by_b() == before
    assert [u["user_id"] for u in store.users(UserQuery(project=A))] == ["bob"]
    assert store.query_requests(RequestQuery(project=A, filter=parse_filter(leaf("user_id", "equals", "alice")))) == []
    summary = store.analytics(AnalyticsQuery(T0 - HOUR, T0 + 6 * HOUR, bucket=None, project=A))["summary"]
    assert summary["requests"] == 3 and summary["cost"] == pytest.approx(0.012)
    assert store.audit_entries()[0]["details"]["project"] == A


def test_rollups_made_before_projects_answer_the_same_after_migrating(
        store_url: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at 023_projects, filled by that version's recorder (rollups without a project), then
    migrated: its rollups are kept, under `default`, and every answer is a fresh store's."""
    import operator

    from heliograph.storage import postgres, sqlite, sqlstore
    from heliograph.storage.analytics import AnalyticsQuery
    from heliograph.storage.schema import REQUEST_COLUMNS
    from heliograph.storage.rollup_schema import rollup_tables
    from heliograph.storage.rollups import write_rollups
    from heliograph.storage.sessions import SessionQuery, UserQuery

    from .test_analytics import END, START, dataset
    names = [name for name, _ in MIGRATIONS]
    k = names.index("023_projects") + 1
    rows = [{**row, "session_id": f"s{i % 7}", "session_path": "/a/b"} if i % 3 == 0 else row
            for i, row in enumerate(dataset(800))]
    monkeypatch.setattr(sqlite, "MIGRATIONS", MIGRATIONS[:k])
    monkeypatch.setattr(postgres, "MIGRATIONS", MIGRATIONS[:k])
    # That version's recorder wrote the columns of its time: none added since (029's prompt_inputs).
    then = [c for c in REQUEST_COLUMNS if c != "prompt_inputs"]
    monkeypatch.setattr(sqlstore, "_INSERT_REQUEST", f"INSERT INTO requests ({', '.join(then)}) "
                        f"VALUES ({', '.join('?' * len(then))}) ON CONFLICT DO NOTHING")
    monkeypatch.setattr(sqlstore, "_request_values", operator.itemgetter(*then))
    old = open_store(store_url)
    assert old.migrate() == names[:k]
    old._write_rollups = (  # type: ignore[attr-defined]
        lambda tx, batch: write_rollups(tx, old.dialect, batch, by_project=False))
    old._enqueue_request_webhooks = lambda tx, batch: 0  # type: ignore[attr-defined]   # no webhooks before 030
    for start in range(0, len(rows), 300):
        old.insert_requests(rows[start:start + 300])
    kept = {table: old._rows(f"SELECT * FROM {table}") for table in rollup_tables()}  # type: ignore[attr-defined]
    assert all(kept.values()) and "project_id" not in kept["rollup_hour"][0]
    old.close()
    monkeypatch.undo()

    migrated = open_store(store_url)
    assert migrated.migrate() == names[k:]
    for table, before in kept.items():
        # 031 added cache_hits, counted from the rows: the analytics below compare it with a fresh store's.
        after = [{k: v for k, v in row.items() if k != "cache_hits"}
                 for row in migrated._rows(f"SELECT * FROM {table}")]  # type: ignore[attr-defined]
        assert sorted(repr(sorted(row.items())) for row in after) == sorted(
            repr(sorted({**row, "project_id": "default"}.items())) for row in before), table

    fresh_url = (f"sqlite:///{tmp_path / 'fresh.db'}" if store_url.startswith("sqlite")
                 else request.getfixturevalue("fresh_postgres")())
    fresh = open_store(fresh_url)
    fresh.migrate()
    fresh.insert_requests(rows)
    try:
        for group_by in (None, "model", "status", "user", "request_name", "property:tier"):
            for bucket in ("minute", "hour", "day", None):
                query = AnalyticsQuery(START, END, bucket=bucket, group_by=group_by, project="default")
                answer = migrated.analytics(query)
                assert answer == fresh.analytics(query) and answer["source"] in ("rollups", "mixed")
        for read in (lambda s: s.sessions(SessionQuery(project="default")),
                     lambda s: s.session("s3", project="default"),
                     lambda s: s.users(UserQuery(project="default", start=START, end=END)),
                     lambda s: s.property_keys(project="default"),
                     lambda s: s.property_values("tier", project="default")):
            assert read(migrated) == read(fresh)
        # What is recorded from now on is its project's alone.
        migrated.insert_requests([make_row("new-b", project_id=B, created_at=T0, props={"tier": "pro"})])
        query = AnalyticsQuery(START, END, bucket="hour", group_by="property:tier", project="default")
        assert migrated.analytics(query) == fresh.analytics(query)
        assert migrated.analytics(replace(query, project=B))["summary"]["requests"] == 1
    finally:
        fresh.close()
        migrated.close()
