"""Retention, erasure and streaming reads: one contract, on SQLite and on PostgreSQL.

Rollup tables here are stand-ins made by the tests (`rollup_test_*`), shaped as the analytics
rollups are (aggregates; a `user_id` column where there is a per-user dimension): the lifecycle
code finds tables from the schema, so it must treat these as it treats the real ones.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from heliograph.bodies import BodyError, unpack
from heliograph.storage import Store, StoreUnavailable, open_store
from heliograph.storage.filters import parse_filter

from .test_store_contract import make_row

NOW = 1_760_000_000_000
DAY = 86_400_000


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lifecycle.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres")()
    opened = open_store(url)
    opened.migrate()
    yield opened
    opened.close()


def execute(store: Store, sql: str, params: Any = ()) -> None:
    with store._transaction() as tx:  # type: ignore[attr-defined]
        tx.execute(store.dialect.sql(sql), params)


def rows(store: Store, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = store._rows(store.dialect.sql(sql), params)  # type: ignore[attr-defined]
    return found


def body(text: str) -> bytes:
    return zlib.compress(text.encode())


def all_tables(store: Store) -> list[str]:
    if store.dialect.name == "sqlite":
        return [r["name"] for r in rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [r["table_name"] for r in rows(
        store, "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]


def occurrences(store: Store, needle: str) -> list[tuple[str, str, str]]:
    """(table, column, row) of every cell holding `needle`, compressed bodies decompressed."""
    found = []
    for table in all_tables(store):
        for row in rows(store, f'SELECT * FROM "{table}"'):
            for column, value in row.items():
                if isinstance(value, (bytes, memoryview)):
                    raw = bytes(value)
                    try:
                        raw = unpack(raw)
                    except BodyError:
                        pass
                    text = raw.decode("utf-8", "replace")
                else:
                    text = str(value)
                if needle in text:
                    found.append((table, column, str(row.get("id") or row.get("request_id") or row)))
    return found


def make_rollups(store: Store) -> None:
    execute(store, "CREATE TABLE rollup_test_users (bucket BIGINT NOT NULL, user_id TEXT, model TEXT, "
                   "requests BIGINT NOT NULL, PRIMARY KEY (bucket, model, user_id))")
    execute(store, "CREATE TABLE rollup_test_models (bucket BIGINT NOT NULL, model TEXT, requests BIGINT NOT NULL)")
    for bucket in range(3):
        for user in ("alice", "bob"):
            execute(store, "INSERT INTO rollup_test_users VALUES (?, ?, ?, ?)", (bucket, user, "gpt-4o", 2))
        execute(store, "INSERT INTO rollup_test_models VALUES (?, ?, ?)", (bucket, "gpt-4o", 4))


def aged(request_id: str, days_old: float, **fields: Any) -> dict[str, Any]:
    return make_row(request_id, created_at=NOW - int(days_old * DAY), **fields)


# -- retention -------------------------------------------------------------------------------------

def test_body_expiry_keeps_rows_metrics_and_rollups(store: Store) -> None:
    make_rollups(store)
    stream = zlib.compress(b"data: [DONE]\n\n")
    store.insert_requests([aged("old", 40, props={"f": "x"}, streamed=True, response_stream=stream),
                           aged("edge", 29.9, streamed=True, response_stream=stream), aged("new", 1)])
    store.set_scores("old", {"q": 3}, project="default")
    result = store.prune(body_days=30, metrics_days=0, now_ms=NOW)
    assert result.bodies == 1 and result.deleted == {} and result.complete
    old = store.get_request("old", project="default")
    assert old is not None and old["request_body"] is None and old["response_body"] is None
    assert old["response_stream"] is None
    assert old["scores"] == {"q": 3} and old["cost"] == 0.001
    from heliograph.api.records import render_request
    rendered = render_request(old, raw_stream=True)
    assert rendered["request_body"] is None and rendered["response_body"] is None
    assert rendered["response_stream"] is None
    edge = store.get_request("edge", project="default")
    assert edge is not None and render_request(edge, raw_stream=True)["response_stream"] == "data: [DONE]\n\n"
    assert rendered["properties"] == {"f": "x"}
    for kept in ("edge", "new"):
        got = store.get_request(kept, project="default")
        assert got is not None and got["request_body"] is not None
    assert rows(store, "SELECT count(*) AS n FROM rollup_test_users")[0]["n"] == 6
    assert store.prune(body_days=30, metrics_days=0, now_ms=NOW).bodies == 0   # idempotent


def test_metrics_expiry_deletes_rows_and_what_hangs_off_them_but_not_rollups(store: Store) -> None:
    make_rollups(store)
    # Another feature's table keyed by request: it belongs to the row and goes with it.
    execute(store, "CREATE TABLE test_request_notes (request_id TEXT NOT NULL, note TEXT)")
    store.insert_requests([aged(f"old-{i}", 500, props={"k": "v"}) for i in range(5)] + [aged("new", 10)])
    for i in range(5):
        store.set_scores(f"old-{i}", {"q": i}, project="default")
        execute(store, "INSERT INTO test_request_notes VALUES (?, ?)", (f"old-{i}", "n"))
    execute(store, "INSERT INTO test_request_notes VALUES (?, ?)", ("new", "n"))
    result = store.prune(body_days=30, metrics_days=400, now_ms=NOW, batch=2)
    expected = {"request_properties": 5, "request_scores": 5, "test_request_notes": 5, "request_bodies": 5,
                "requests": 5}
    assert {table: result.deleted[table] for table in expected} == expected
    assert not any(table.startswith("rollup_") for table in result.deleted)
    assert result.bodies == 0 and result.complete
    assert store.request_ids() == ["new"]  # type: ignore[attr-defined]
    assert rows(store, "SELECT request_id FROM test_request_notes") == [{"request_id": "new"}]
    assert rows(store, "SELECT count(*) AS n FROM request_properties")[0]["n"] == 0
    assert rows(store, "SELECT count(*) AS n FROM rollup_test_users")[0]["n"] == 6
    assert rows(store, "SELECT count(*) AS n FROM rollup_test_models")[0]["n"] == 3


def test_zero_days_keeps_everything(store: Store) -> None:
    store.insert_requests([aged("ancient", 5000)])
    result = store.prune(body_days=0, metrics_days=0, now_ms=NOW)
    assert result.bodies == 0 and result.deleted == {}
    got = store.get_request("ancient", project="default")
    assert got is not None and got["request_body"] is not None


def test_a_stopped_pass_reports_it_and_the_next_one_finishes(store: Store) -> None:
    store.insert_requests([aged(f"r{i:02}", 50) for i in range(30)])
    stop = threading.Event()
    stop.set()
    partial = store.prune(body_days=1, metrics_days=0, now_ms=NOW, stop=stop, batch=10)
    assert not partial.complete and partial.bodies == 10
    rest = store.prune(body_days=1, metrics_days=0, now_ms=NOW, batch=10)
    assert rest.complete and rest.bodies == 20


def test_bodies_written_before_the_retention_migration_expire_too(store: Store) -> None:
    # Migration 020 backfills the bodies' created_at from their rows: a database upgraded with
    # old bodies in it expires them like new ones.
    execute(store, "DELETE FROM migrations WHERE name = '020_request_bodies_created_at'")
    execute(store, "DROP INDEX request_bodies_created_at")
    store.insert_requests([aged("old", 90)])
    execute(store, "ALTER TABLE request_bodies DROP COLUMN created_at")   # the table as 004 made it
    assert store.migrate() == ["020_request_bodies_created_at"]
    assert rows(store, "SELECT created_at FROM request_bodies")[0]["created_at"] == NOW - 90 * DAY
    assert store.prune(body_days=30, metrics_days=0, now_ms=NOW).bodies == 1


def test_sqlite_pruning_leaves_the_write_lock_to_the_recorder(tmp_path: Path) -> None:
    """A backlog is deleted while the recorder keeps writing: no write of the recorder's waits
    anywhere near its busy timeout (past it, records would go to the journal)."""
    from heliograph.storage.sqlite import WRITE_BUSY_TIMEOUT_MS
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    store = open_store(url)
    store.migrate()
    for start in range(0, 10_000, 2000):
        store.insert_requests([aged(f"old-{i:05}", 60, request_body=body("x" * 2000)) for i in range(start, start + 2000)])
    waits: list[float] = []
    failures: list[Exception] = []
    done = threading.Event()

    def recorder() -> None:
        writer = open_store(url)
        n = 0
        while not done.is_set():
            started = time.monotonic()
            try:
                writer.insert_requests([make_row(f"live-{n}-{i}", created_at=NOW) for i in range(50)])
            except StoreUnavailable as exc:
                failures.append(exc)
            waits.append(time.monotonic() - started)
            n += 1
            time.sleep(0.005)
        writer.close()

    thread = threading.Thread(target=recorder)
    thread.start()
    try:
        result = store.prune(body_days=0, metrics_days=30, now_ms=NOW)
    finally:
        done.set()
        thread.join()
    store.close()
    assert result.deleted["requests"] == 10_000
    assert not failures, f"the recorder was locked out {len(failures)} times: {failures[0]}"
    assert max(waits) < WRITE_BUSY_TIMEOUT_MS / 1000 / 2, f"a recorder write waited {max(waits):.3f} s"


# -- streaming reads -------------------------------------------------------------------------------

def test_iter_requests_pages_by_keyset_in_order_with_ties(store: Store) -> None:
    # 250 rows on only 7 distinct timestamps: pages must split ties without losing or repeating one.
    store.insert_requests([make_row(f"id-{i:03}", created_at=NOW + (i * 7919) % 7, user_id="u" if i % 2 else "v")
                           for i in range(250)])
    pages: list[int] = []
    real_rows = store._rows  # type: ignore[attr-defined]

    def counting_rows(sql: str, params: Any = ()) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = real_rows(sql, params)
        if "FROM requests r" in sql and "request_scores" not in sql:     # pages, not their scores
            pages.append(len(found))
        return found

    store._rows = counting_rows  # type: ignore[attr-defined]
    got = list(store.iter_requests(project="default", page_size=40))
    assert [(r["created_at"], r["id"]) for r in got] == sorted((r["created_at"], r["id"]) for r in got)
    assert len({r["id"] for r in got}) == 250
    assert max(pages) == 40 and len(pages) == 7       # memory: one page at a time, never the table
    assert all(isinstance(r["streamed"], bool) and r["scores"] == {} for r in got)

    only_u = list(store.iter_requests(parse_filter({"request_response_rmt": {"user_id": {"equals": "u"}}}),
                                      page_size=30, limit=100, project="default"))
    assert len(only_u) == 100 and {r["user_id"] for r in only_u} == {"u"}
    with_bodies = next(store.iter_requests(project="default", with_bodies=True, limit=1))
    assert zlib.decompress(with_bodies["request_body"]) == b'{"model": "gpt-4o"}'
    assert "request_body" not in next(store.iter_requests(project="default", limit=1))


# -- erasure ---------------------------------------------------------------------------------------

def seed_users(store: Store) -> None:
    make_rollups(store)
    store.insert_requests([
        make_row("a1", user_id="alice", props={"team": "blue"}, session_id="s-alice",
                 request_body=body('{"messages": [{"content": "I am alice"}], "user": "alice"}'),
                 response_body=body('{"content": "hello alice"}')),
        make_row("a2", user_id="alice", created_at=NOW),
        # Bob's prompt mentions alice: that is Bob's record, and erasing Alice leaves it.
        make_row("b1", user_id="bob", request_body=body('{"messages": [{"content": "ask alice"}]}')),
        make_row("n1"),
    ])
    store.set_scores("a1", {"helpful": 1}, project="default")
    store.set_scores("b1", {"helpful": 0}, project="default")


def test_erasure_leaves_nothing_of_the_user_behind(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    seed_users(store)
    assert len(occurrences(store, "alice")) > 5
    with caplog.at_level(logging.INFO, logger="heliograph.audit"):
        erasure = store.erase_user("alice", project="default", actor="key:key_1", batch=1)
    expected = {"request_properties": 1, "request_scores": 1, "request_bodies": 2, "requests": 2,
                "rollup_test_users": 3}
    assert {table: erasure.deleted[table] for table in expected} == expected
    # Anything else removed can only be another feature's per-user or per-request rows.
    assert all(t in expected or t.startswith("rollup_") for t, n in erasure.deleted.items() if n)
    # Everything left that mentions her is Bob's prompt.
    assert occurrences(store, "alice") == [("request_bodies", "request", "b1")]
    assert sorted(store.request_ids()) == ["b1", "n1"]  # type: ignore[attr-defined]
    assert rows(store, "SELECT count(*) AS n FROM rollup_test_users WHERE user_id = 'bob'")[0]["n"] == 3
    assert rows(store, "SELECT count(*) AS n FROM rollup_test_models")[0]["n"] == 3
    bob = store.get_request("b1", project="default")
    assert bob is not None and bob["scores"] == {"helpful": 0}

    [entry] = store.audit_entries()
    assert entry["action"] == "erase_user" and entry["actor"] == "key:key_1"
    assert entry["subject"] == erasure.subject == store.audit_subject("alice")
    assert entry["details"] == {"project": "default", "deleted": erasure.deleted}
    assert "alice" not in orjson.dumps(entry).decode()
    [line] = [r for r in caplog.records if r.name == "heliograph.audit"]
    assert erasure.subject in line.getMessage() and "alice" not in line.getMessage()
    assert "key:key_1" in line.getMessage()


def test_erasing_an_unknown_user_is_audited_with_zero_counts(store: Store) -> None:
    seed_users(store)
    erasure = store.erase_user("nobody", project="default", actor="cli")
    assert sum(erasure.deleted.values()) == 0 and "requests" in erasure.deleted
    assert store.count_requests() == 4
    assert [e["actor"] for e in store.audit_entries()] == ["cli"]


def test_audit_subjects_are_keyed_per_database(store: Store, tmp_path: Path) -> None:
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    other.migrate()
    try:
        subject = store.audit_subject("alice")
        assert subject == store.audit_subject("alice") and subject.startswith("hmac-sha256:")
        assert subject != store.audit_subject("bob")
        # Not a plain hash of the id: a guess cannot be checked without this database's key.
        import hashlib
        assert hashlib.sha256(b"alice").hexdigest() not in subject
        assert other.audit_subject("alice") != subject
    finally:
        other.close()


def test_erasure_handles_rollups_without_rowid(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'norowid.db'}")
    store.migrate()
    execute(store, "CREATE TABLE rollup_test_compact (user_id TEXT NOT NULL, bucket BIGINT NOT NULL, n BIGINT, "
                   "PRIMARY KEY (user_id, bucket)) WITHOUT ROWID")
    for bucket in range(5):
        execute(store, "INSERT INTO rollup_test_compact VALUES (?, ?, 1)", ("carol", bucket))
    assert store.erase_user("carol", project="default", actor="cli", batch=2).deleted["rollup_test_compact"] == 5
    store.close()


def test_erasure_takes_the_user_out_of_every_rollup(store: Store) -> None:
    rows = [make_row(f"a{n}", user_id="alice", props={"email": "alice@example.com", "tier": "pro"},
                     request_name="checkout") for n in range(3)]
    rows += [make_row(f"b{n}", user_id="bob", props={"tier": "pro"}) for n in range(2)]
    store.insert_requests(rows)
    assert [v["value"] for v in store.property_values("email", project="default")] == ["alice@example.com"]
    store.erase_user("alice", project="default", actor="cli")
    assert store.property_values("email", project="default") == []
    tier = {v["value"]: v["requests"] for v in store.property_values("tier", project="default")}
    assert tier == {"pro": 2}
    for table in [t for t in _tables(store) if t.startswith("rollup_")]:
        text = orjson.dumps(rows_of(store, table)).decode()
        assert "alice" not in text and "checkout" not in text, table


def _tables(store: Store) -> list[str]:
    if store.dialect.name == "sqlite":  # type: ignore[attr-defined]
        return [r["name"] for r in rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [r["table_name"] for r in rows(store, "SELECT table_name FROM information_schema.tables "
                                                 "WHERE table_schema = current_schema()")]


def rows_of(store: Store, table: str) -> list[dict[str, Any]]:
    return rows(store, f'SELECT * FROM "{table}"')


def test_cli_erasure_is_one_projects(tmp_path: Path) -> None:
    import os

    from .conftest import run_cli
    url = f"sqlite:///{tmp_path / 'erase.db'}"
    store = open_store(url)
    store.migrate()
    store.create_project("proj_b", "team-b")
    store.insert_requests([make_row("a1", user_id="alice"), make_row("b1", user_id="alice", project_id="proj_b")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOGRAPH_")} | {"HELIOGRAPH_DB_URL": url}
    done = run_cli("users", "erase", "alice", "--project", "team-b", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["deleted"]["requests"] == 1
    assert store.get_request("b1", project="proj_b") is None and store.get_request("a1", project="default")
    assert run_cli("users", "erase", "alice", env=env).returncode == 0        # --project default
    assert store.count_requests() == 0
    unknown = run_cli("users", "erase", "alice", "--project", "nope", env=env)
    assert unknown.returncode == 1 and "no project 'nope'" in unknown.stderr
    store.close()
